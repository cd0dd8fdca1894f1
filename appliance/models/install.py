"""Install model files from a mirror directory, check their sha256, and prepare them.

Weights never live in git: `make models` calls this to copy what the manifest names from a
mirror (default ../shared/models, or $FACEGATE_MODEL_MIRROR) into the models directory.
"""

import os
import shutil
from pathlib import Path
from typing import Iterable, List, Optional

from appliance.errors import ModelError
from appliance.models import ModelSpec, is_prepared, load_manifest, sha256_of, stamp_path

MIRROR_ENV = "FACEGATE_MODEL_MIRROR"
DEFAULT_MIRROR = "../shared/models"


def mirror_dir(configured: Optional[str] = None) -> Path:
    return Path(configured or os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR)


def check_hash(path: Path, expected: str) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise ModelError("%s: sha256 mismatch, expected %s, actual %s; the mirror holds a different "
                         "file than the manifest names, replace it with the right one"
                         % (path, expected, actual))


def install_one(spec: ModelSpec, mirror: Path, target_dir: Path) -> str:
    """Copy one model (unless an identical copy is there), verify it, prepare it. Returns a status word."""
    target = target_dir / spec.file
    if target.is_file() and sha256_of(target) == spec.sha256:
        status = "present"
    else:
        source = mirror / spec.file
        if not source.is_file():
            raise ModelError("%s is not in the model mirror %s; put the file there or point %s at a "
                             "directory that has it" % (spec.file, mirror, MIRROR_ENV))
        check_hash(source, spec.sha256)
        partial = target.with_name(target.name + ".partial")
        shutil.copyfile(source, partial)
        check_hash(partial, spec.sha256)
        os.replace(partial, target)
        status = "copied"
    if spec.prepare:
        prepare(spec, target_dir)
    return status


def prepare(spec: ModelSpec, target_dir: Path) -> None:
    if is_prepared(spec, target_dir):
        return
    try:
        from facegate_host.prepare import PREPARERS
    except ImportError:  # a board: its bundle brings the models prepared
        raise ModelError("model %s must be prepared from %s on a host (facegate_host, with PyTorch): "
                         "install the board's models from its bundle instead" % (spec.model_id, spec.file)) from None

    if spec.prepare not in PREPARERS:
        raise ModelError("model %s asks for unknown preparation %r" % (spec.model_id, spec.prepare))
    PREPARERS[spec.prepare](target_dir / spec.file, target_dir / spec.prepared_file, spec)
    stamp_path(spec, target_dir).write_text(spec.prepared_stamp + "\n")


def install(model_ids: Iterable[str], mirror: Path, target_dir: Path) -> List[str]:
    specs = load_manifest()
    if not mirror.is_dir():
        raise ModelError("model mirror %s does not exist; set %s to a directory holding the files "
                         "named in appliance/models/manifest.json" % (mirror, MIRROR_ENV))
    target_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for model_id in model_ids:
        if model_id not in specs:
            raise ModelError("unknown model %r; the manifest names: %s"
                             % (model_id, ", ".join(sorted(specs))))
        status = install_one(specs[model_id], mirror, target_dir)
        lines.append("%-26s %s" % (model_id, status))
    return lines


def record(target_dir: Path) -> None:
    """Remember the folder for this environment's `facegate`, wherever it is run from."""
    from appliance.models import recorded_models_file

    record = recorded_models_file()
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text("%s\n" % target_dir.resolve())
    except OSError:  # a read-only environment: the config or $FACEGATE_MODELS_DIR still say where
        pass

