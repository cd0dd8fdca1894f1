"""Model manifest: what each model file is, its hash, and how to feed it.

Nothing about a model is guessed from its file name or tensor shapes; it is read from
manifest.json, which the repository keeps next to this module.
"""

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from appliance.errors import ModelError

MANIFEST_PATH = Path(__file__).with_name("manifest.json")
MODELS_DIR_ENV = "FACEGATE_MODELS_DIR"
DEFAULT_MODELS_DIR = "models"


@dataclass(frozen=True)
class InputSpec:
    name: str
    size: Tuple[int, int]  # (height, width)
    layout: str  # "NCHW" or "NHWC"
    colour: str  # "BGR" or "RGB"
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]


@dataclass(frozen=True)
class ModelSpec:
    model_id: str
    role: str
    file: str
    sha256: str
    input: InputSpec
    outputs: List[str]
    output_roles: List[str]
    prepare: Optional[str] = None
    commercial_use: bool = True
    licence: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def prepared_file(self) -> str:
        """The file a runner loads: the prepared ONNX copy when the model needs preparation."""
        if not self.prepare:
            return self.file
        stem = self.file.rpartition(".")[0]
        return "%s.%s.onnx" % (stem, self.prepare)

    @property
    def prepared_stamp(self) -> str:
        """What the stamp beside a prepared file says: the source's hash and the recipe's revision.

        A changed recipe (a new export option) bumps `prepare_revision` in the manifest, so
        installs made by the older recipe are prepared again instead of silently kept.
        """
        return "%s %s-r%d" % (self.sha256, self.prepare, int(self.extra.get("prepare_revision", 1)))

    def output_index(self, role: str) -> int:
        try:
            return self.output_roles.index(role)
        except ValueError:
            raise ModelError("model %s has no output with role %r" % (self.model_id, role)) from None


def load_manifest(path: Path = MANIFEST_PATH) -> Dict[str, ModelSpec]:
    with open(path, encoding="utf-8") as handle:
        raw = json.load(handle)
    specs = {}
    for model_id, entry in raw["models"].items():
        known = {"role", "file", "sha256", "input", "outputs", "output_roles", "prepare",
                 "commercial_use", "licence"}
        inp = entry["input"]
        specs[model_id] = ModelSpec(
            model_id=model_id,
            role=entry["role"],
            file=entry["file"],
            sha256=entry["sha256"],
            input=InputSpec(
                name=inp["name"],
                size=(int(inp["size"][0]), int(inp["size"][1])),
                layout=inp["layout"],
                colour=inp["colour"],
                mean=tuple(float(v) for v in inp["mean"]),
                std=tuple(float(v) for v in inp["std"]),
            ),
            outputs=list(entry["outputs"]),
            output_roles=list(entry["output_roles"]),
            prepare=entry.get("prepare"),
            commercial_use=bool(entry.get("commercial_use", True)),
            licence=entry.get("licence", ""),
            extra={k: v for k, v in entry.items() if k not in known},
        )
    return specs


def get_spec(model_id: str) -> ModelSpec:
    specs = load_manifest()
    if model_id not in specs:
        raise ModelError("unknown model %r; the manifest names: %s"
                         % (model_id, ", ".join(sorted(specs))))
    return specs[model_id]


def recorded_models_file() -> Path:
    """Where `facegate models install` records the folder it installed into: inside this Python
    environment (a venv's, or the board's), so its `facegate` finds the models from any folder."""
    import sys

    return Path(sys.prefix) / "share" / "facegate" / "models-dir"


def models_dir(configured: Optional[str] = None) -> Path:
    """Where installed models live: the config's setting, else $FACEGATE_MODELS_DIR, else the folder
    the last `facegate models install` in this environment recorded, else ./models."""
    chosen = configured or os.environ.get(MODELS_DIR_ENV)
    if chosen:
        return Path(chosen)
    try:
        recorded = recorded_models_file().read_text().strip()
    except OSError:
        recorded = ""
    return Path(recorded or DEFAULT_MODELS_DIR)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def installed_path(spec: ModelSpec, directory: Path) -> Path:
    """Path of the file a runner should load, checked to exist and to come from the right source."""
    source = directory / spec.file
    if spec.prepare and is_prepared(spec, directory):
        # the stamp records the source's sha256: a board's bundle carries the prepared file alone
        return directory / spec.prepared_file
    if not source.is_file():
        raise ModelError("model file %s is missing: install the models with 'facegate models install' ('make "
                         "models' in the repository), or point models.dir or $%s at the folder that has them"
                         % (source, MODELS_DIR_ENV))
    target = directory / spec.prepared_file
    if spec.prepare and not is_prepared(spec, directory):
        raise ModelError("prepared model %s is missing or stale: run 'facegate models install' ('make models' in "
                         "the repository)" % target)
    return target


# How the 8-bit copy is made (facegate_host/convert/onnx_int8.py); a copy made another way is
# remade by `make models`. r3: 8-bit weights again, after 7-bit ones (r2) lost a hard face of the
# seed's group photos on every CPU.
INT8_RECIPE = "qdq-u8s8-8bit-r3"
CALIBRATION_FOLDER = Path(__file__).with_name("calibration")


def int8_path(float_file: Path) -> Path:
    """The embedder's 8-bit copy for ONNX Runtime on a CPU, beside its float file."""
    return float_file.with_name(float_file.stem + ".int8.onnx")


def int8_stamp(float_file: Path) -> Path:
    """Beside the 8-bit copy: the sha256 of the float file it was quantised from, and the recipe."""
    copy = int8_path(float_file)
    return copy.with_name(copy.name + ".source-sha256")


def int8_check_set(float_file: Path) -> Path:
    """Beside the 8-bit copy: aligned faces and the float model's embeddings of them, which the
    copy is measured against on the CPU that runs it (vision/int8_check.py)."""
    return float_file.with_name(float_file.stem + ".int8.check.npz")


def int8_verdict(float_file: Path) -> Path:
    """Beside the 8-bit copy: its last measurement against the check set, with the CPU it ran on."""
    return float_file.with_name(float_file.stem + ".int8.check.json")


def int8_stamp_text(float_file: Path) -> str:
    return "%s %s" % (sha256_of(float_file), INT8_RECIPE)


def int8_is_current(float_file: Path) -> bool:
    """Whether the 8-bit copy exists and was quantised from this float file by this recipe."""
    target, stamp = int8_path(float_file), int8_stamp(float_file)
    return target.is_file() and stamp.is_file() and stamp.read_text().strip() == int8_stamp_text(float_file)


def int8_tolerance(model_id: str) -> Dict[str, float]:
    """How far the 8-bit copy may stray from the float model before the door refuses it: written
    beside the embedder's calibration, which was measured on an 8-bit copy within it."""
    path = CALIBRATION_FOLDER / ("%s.json" % model_id)
    try:
        tolerance = json.loads(path.read_text()).get("int8_tolerance")
    except (OSError, ValueError) as err:
        raise ModelError("cannot read the calibration %s: %s" % (path, err)) from err
    if not isinstance(tolerance, dict):
        raise ModelError("the calibration %s names no int8_tolerance: the embedder's 8-bit copy cannot be "
                         "checked; set models.embedder_int8 = false" % path)
    return {str(key): float(value) for key, value in tolerance.items()}


def installed_int8_path(source: Path) -> Optional[Path]:
    """The 8-bit copy of the installed float file `source` that `models.embedder_int8` loads;
    None where there is none (`make models` makes one for the default embedder; the float file
    serves). A copy made from another float file is refused."""
    target = int8_path(source)
    if not target.is_file():
        return None
    if not int8_is_current(source):
        raise ModelError("the embedder's 8-bit copy %s was made from another %s or by an older recipe: remake "
                         "it with 'make models' "
                         "(facegate quantise-embedder), or set models.embedder_int8 = false" % (target, source.name))
    return target


def stamp_path(spec: ModelSpec, directory: Path) -> Path:
    """The file beside a prepared model recording what it was made from (`prepared_stamp`)."""
    return directory / (spec.prepared_file + ".source-sha256")


def is_prepared(spec: ModelSpec, directory: Path) -> bool:
    """Whether the prepared file exists and was made from this source by this recipe."""
    stamp = stamp_path(spec, directory)
    return ((directory / spec.prepared_file).is_file() and stamp.is_file()
            and stamp.read_text().strip() == spec.prepared_stamp)
