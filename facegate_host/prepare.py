"""Model preparation steps run at install time (hosts only: they need `onnx`, or `torch`)."""

from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from appliance.errors import ModelError
from appliance.models import ModelSpec


def symbolic_hw(source: Path, target: Path, spec: ModelSpec) -> None:
    """Mark the input's height and width (and the outputs' anchor count) symbolic.

    The RetinaFace graph already reshapes with -1, so only the declared shapes pin it to 640x640;
    freeing them lets one file run at 320, 480, 640 or a frame's own aspect.
    """
    try:
        import onnx
    except ImportError as err:
        raise ModelError("preparing %s needs the onnx package: pip install onnx" % source) from err
    model = onnx.load(str(source))
    graph_inputs = [i for i in model.graph.input
                    if i.name not in {init.name for init in model.graph.initializer}]
    dims = graph_inputs[0].type.tensor_type.shape.dim
    dims[2].dim_param = "height"
    dims[3].dim_param = "width"
    for output in model.graph.output:
        out_dims = output.type.tensor_type.shape.dim
        if len(out_dims) >= 3:
            out_dims[len(out_dims) - 2].dim_param = "anchors"
    partial = target.with_name(target.name + ".partial")
    onnx.save(model, str(partial))
    partial.replace(target)


def _import_torch(source: Path):
    try:
        import torch
    except ImportError as err:
        raise ModelError("preparing %s needs PyTorch (pip install torch==2.13.0, the CPU build)" % source) from err
    return torch


def _load_checkpoint(network, source: Path, torch, key: Optional[str] = None) -> None:
    """Load a state dict strictly: a missing or extra tensor means the file is not this model."""
    try:
        checkpoint = torch.load(str(source), map_location="cpu", weights_only=False)
        network.load_state_dict(checkpoint.get(key, checkpoint) if key else checkpoint, strict=True)
    except (RuntimeError, KeyError, AttributeError) as err:
        raise ModelError("%s is not the %s checkpoint the manifest describes: %s"
                         % (source, type(network).__name__, err)) from err
    network.eval()


def _export_checked(network, torch, target: Path, spec: ModelSpec, samples: List[Tuple[int, ...]],
                    dynamic_axes: Dict[str, Dict[int, str]]) -> None:
    """Export to ONNX, then check ONNX Runtime against PyTorch on every sample shape.

    The first sample is the one traced; the others exercise the dynamic axes, so a graph that
    only works at its traced size is refused at install time, not found at the door.
    """
    import onnxruntime

    rng = np.random.default_rng(0)
    inputs = [torch.from_numpy(rng.standard_normal(shape, dtype=np.float32)) for shape in samples]
    partial = target.with_name(target.name + ".partial")
    torch.onnx.export(network, inputs[0], str(partial), input_names=[spec.input.name], output_names=spec.outputs,
                      dynamic_axes=dynamic_axes, opset_version=13, dynamo=False)
    session = onnxruntime.InferenceSession(str(partial), providers=["CPUExecutionProvider"])
    for sample in inputs:
        with torch.no_grad():
            expected = network(sample)
        expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
        got = session.run(spec.outputs, {spec.input.name: sample.numpy()})
        worst = max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected))
        if worst > 1e-3:
            partial.unlink()
            raise ModelError("the ONNX export of %s differs from PyTorch by %.2g at input %s; not installed"
                             % (spec.file, worst, tuple(sample.shape)))
    partial.replace(target)


def mobilefacenet_export(source: Path, target: Path, spec: ModelSpec) -> None:
    """Export a MobileFaceNet checkpoint to ONNX with a free batch size (flip runs as a batch of 2)."""
    torch = _import_torch(source)
    from facegate_host.networks.mobilefacenet import MobileFaceNet

    height, width = spec.input.size
    network = MobileFaceNet(height, width, spec.extra["embedding_size"])
    _load_checkpoint(network, source, torch, key="net_state_dict")
    batch = {0: "batch"}
    _export_checked(network, torch, target, spec, [(1, 3, height, width), (2, 3, height, width)],
                    {spec.input.name: batch, **{name: batch for name in spec.outputs}})


def mobilefacenet_ms1m_export(source: Path, target: Path, spec: ModelSpec) -> None:
    """Export the MS1M MobileFaceNet state dict to ONNX with a free batch size."""
    torch = _import_torch(source)
    from facegate_host.networks.mobilefacenet_ms1m import MobileFaceNetMS1M

    height, width = spec.input.size
    network = MobileFaceNetMS1M(spec.extra["embedding_size"])
    _load_checkpoint(network, source, torch)
    batch = {0: "batch"}
    _export_checked(network, torch, target, spec, [(1, 3, height, width), (2, 3, height, width)],
                    {spec.input.name: batch, **{name: batch for name in spec.outputs}})


def retinaface_export(source: Path, target: Path, spec: ModelSpec) -> None:
    """Export a RetinaFace MobileNet-0.25 checkpoint to ONNX with a free input height and width."""
    torch = _import_torch(source)
    from facegate_host.networks.retinaface import RetinaFace

    network = RetinaFace()
    _load_checkpoint(network, source, torch)
    _export_checked(network, torch, target, spec, [(1, 3, 320, 320), (1, 3, 256, 448), (1, 3, 640, 480)],
                    {spec.input.name: {2: "height", 3: "width"},
                     **{name: {1: "anchors"} for name in spec.outputs}})


PREPARERS = {"symbolic_hw": symbolic_hw, "mobilefacenet_export": mobilefacenet_export,
             "mobilefacenet_ms1m_export": mobilefacenet_ms1m_export, "retinaface_export": retinaface_export}
