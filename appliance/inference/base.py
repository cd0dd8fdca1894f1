"""The runner interface every backend implements, and the shared float preprocessing."""

from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

from appliance.errors import ModelError
from appliance.models import InputSpec, ModelSpec


def to_float_tensor(images_bgr: np.ndarray, spec: InputSpec) -> np.ndarray:
    """uint8 NHWC BGR batch -> float32 tensor in the model's colour order, mean/std and layout.

    Two passes over the pixels instead of five: the channel swap and the layout change are views
    of the uint8 batch, and the subtraction writes the float tensor in its final layout (this
    runs on every frame; on the board the NPU folds it into the model instead)."""
    batch = images_bgr[..., ::-1] if spec.colour == "RGB" else images_bgr
    shape = (1, 1, 1, 3)
    if spec.layout == "NCHW":
        batch = batch.transpose(0, 3, 1, 2)
        shape = (1, 3, 1, 1)
    mean = np.asarray(spec.mean, dtype=np.float32).reshape(shape)
    std = np.asarray(spec.std, dtype=np.float32).reshape(shape)
    tensor = np.empty(batch.shape, dtype=np.float32)
    np.subtract(batch, mean, out=tensor)
    if np.any(std != 1):
        np.divide(tensor, std, out=tensor)
    return tensor


class Runner:
    """Load a model described by its manifest entry, run it, close it.

    `run` takes a uint8 NHWC batch of BGR images (what OpenCV gives) and returns the outputs in
    the manifest's order. Colour order, mean/std and layout are the backend's job because NPU
    backends fold them into the model and want the uint8 pixels as they are.
    """

    backend = "abstract"
    # whether the runtime takes a batch larger than the one it was built for (NPU files: no)
    runs_batches = False

    def __init__(self, spec: ModelSpec, path: Path, threads: int = 0) -> None:
        self.spec = spec
        self.path = path
        self.threads = threads

    @property
    def input_spec(self) -> InputSpec:
        return self.spec.input

    def run(self, images_bgr: np.ndarray) -> List[np.ndarray]:
        raise NotImplementedError

    def run_batch(self, images_bgr: np.ndarray) -> List[np.ndarray]:
        """Outputs for several images: one call where the runtime and the model file take a batch
        (the manifest's `dynamic_batch`), else one call per image, stacked."""
        if self.runs_batches and self.spec.extra.get("dynamic_batch"):
            return self.run(images_bgr)
        each = [self.run(image[None]) for image in images_bgr]
        return [np.concatenate(parts) for parts in zip(*each)]

    def close(self) -> None:
        """Release the runtime's resources; safe to call twice."""

    def warm_up(self, size: Tuple[int, int]) -> None:
        """Run once on a mid-grey image so the first real frame is not slow, and check outputs."""
        height, width = size
        outputs = self.run(np.full((1, height, width, 3), 128, dtype=np.uint8))
        check_outputs(self.spec, outputs)

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def check_outputs(spec: ModelSpec, outputs: Sequence[np.ndarray]) -> None:
    count = len(spec.outputs)
    if len(outputs) != count:
        raise ModelError("model %s gave %d outputs, the manifest names %d; the file does not match "
                         "its manifest entry" % (spec.model_id, len(outputs), count))
    for name, value in zip(spec.outputs, outputs):
        if not np.all(np.isfinite(value)):
            raise ModelError("model %s output %s is not finite at warm-up; the file is corrupt or "
                             "the backend cannot run it" % (spec.model_id, name))
