"""Model preparation steps run at install time (hosts only: they need `onnx`, or `torch`)."""

from pathlib import Path

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


def mobilefacenet_export(source: Path, target: Path, spec: ModelSpec) -> None:
    """Export a MobileFaceNet PyTorch checkpoint to ONNX, checked against PyTorch's own output."""
    try:
        import torch
    except ImportError as err:
        raise ModelError("preparing %s needs PyTorch (pip install torch==2.13.0, the CPU build)" % source) from err
    import onnxruntime

    from appliance.models.mobilefacenet import MobileFaceNet

    height, width = spec.input.size
    network = MobileFaceNet(height, width, spec.extra["embedding_size"])
    try:
        checkpoint = torch.load(str(source), map_location="cpu", weights_only=False)
        network.load_state_dict(checkpoint.get("net_state_dict", checkpoint), strict=True)
    except (RuntimeError, KeyError, AttributeError) as err:
        raise ModelError("%s is not the MobileFaceNet checkpoint the manifest describes: %s" % (source, err)) from err
    network.eval()
    sample = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, height, width), dtype=np.float32))
    partial = target.with_name(target.name + ".partial")
    torch.onnx.export(network, sample, str(partial), input_names=[spec.input.name], output_names=spec.outputs,
                      opset_version=13, dynamo=False)
    with torch.no_grad():
        expected = network(sample).numpy()
    session = onnxruntime.InferenceSession(str(partial), providers=["CPUExecutionProvider"])
    got = session.run(None, {spec.input.name: sample.numpy()})[0]
    if not np.allclose(got, expected, atol=1e-4):
        partial.unlink()
        raise ModelError("the ONNX export of %s differs from PyTorch (max %.2g); not installed"
                         % (source, float(np.abs(got - expected).max())))
    partial.replace(target)


PREPARERS = {"symbolic_hw": symbolic_hw, "mobilefacenet_export": mobilefacenet_export}
