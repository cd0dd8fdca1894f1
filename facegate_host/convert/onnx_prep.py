"""The ONNX graph an NPU conversion starts from: fixed input size, BGR input, manifest output order.

Folding the colour order into the first convolution (swapping its input-channel weights) lets the
board feed OpenCV's BGR frames to every model without a per-frame conversion; fixing the size is
what an NPU needs; ordering the graph outputs as the manifest does makes every backend's outputs
line up.
"""

from pathlib import Path
from typing import Tuple

import numpy as np

from appliance.errors import ModelError
from appliance.models import ModelSpec


def prepare_for_npu(source: Path, target: Path, spec: ModelSpec, size: Tuple[int, int]) -> None:
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as err:
        raise ModelError("preparing %s for the NPU needs the onnx package (make rknn-env)" % source) from err
    model = onnx.load(str(source))
    graph = model.graph
    initialisers = {init.name: init for init in graph.initializer}
    graph_input = next(i for i in graph.input if i.name not in initialisers)
    if graph_input.name != spec.input.name:
        raise ModelError("%s has input %r, the manifest says %r" % (source, graph_input.name, spec.input.name))
    if spec.input.layout != "NCHW":
        raise ModelError("NPU conversion expects an NCHW model; %s is %s" % (spec.model_id, spec.input.layout))
    dims = graph_input.type.tensor_type.shape.dim
    for dim, value in zip(dims, (1, 3, size[0], size[1])):
        dim.ClearField("dim_param")
        dim.dim_value = value
    if spec.input.colour == "RGB":
        _fold_channel_swap(graph, graph_input.name, initialisers, numpy_helper, source)
    outputs = {output.name: output for output in graph.output}
    missing = [name for name in spec.outputs if name not in outputs]
    if missing:
        raise ModelError("%s lacks outputs %s named in the manifest" % (source, missing))
    ordered = [outputs[name] for name in spec.outputs]
    # Shapes follow from the fixed input; stale symbolic ones confuse the toolkit. They are read
    # off a run, because a graph exported with free sizes computes its reshapes at run time,
    # where ONNX's static inference gives up.
    for output, shape in zip(ordered, _output_shapes(model, spec, size)):
        output.type.tensor_type.ClearField("shape")
        for value in shape:
            output.type.tensor_type.shape.dim.add().dim_value = value
    del graph.output[:]
    graph.output.extend(ordered)
    model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    onnx.save(model, str(partial))
    partial.replace(target)


def _output_shapes(model, spec: ModelSpec, size: Tuple[int, int]):
    try:
        import onnxruntime
    except ImportError as err:
        raise ModelError("preparing %s for the NPU needs onnxruntime (make rknn-env)" % spec.model_id) from err
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    sample = np.zeros((1, 3, size[0], size[1]), dtype=np.float32)
    return [output.shape for output in session.run(spec.outputs, {spec.input.name: sample})]


def _fold_channel_swap(graph, input_name, initialisers, numpy_helper, source) -> None:
    """Make an RGB model take BGR by reversing the first convolutions' input channels."""
    consumers = [node for node in graph.node if input_name in node.input]
    if not consumers or any(node.op_type != "Conv" or node.input[0] != input_name for node in consumers):
        raise ModelError("cannot fold the colour order into %s: its input feeds %s, not only "
                         "convolutions" % (source, sorted({n.op_type for n in consumers})))
    for number, node in enumerate(consumers):
        weights = numpy_helper.to_array(initialisers[node.input[1]])
        swapped = numpy_helper.from_array(weights[:, ::-1].copy(), "%s_bgr_%d" % (node.input[1], number))
        graph.initializer.append(swapped)
        node.input[1] = swapped.name
