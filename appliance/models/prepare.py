"""Model preparation steps run at install time (they need the `onnx` package, hosts only)."""

from pathlib import Path

from appliance.errors import ModelError


def symbolic_hw(source: Path, target: Path) -> None:
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


PREPARERS = {"symbolic_hw": symbolic_hw}
