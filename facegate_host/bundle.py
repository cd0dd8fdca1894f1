"""`make bundle BOARD=...`: one tarball with everything a board needs, and its manifest.

Contents: the common root overlay with the board's own laid over it, the board's .rknn models
and the ONNX ones (the CPU fallback), the self-test's reference face, a wheelhouse (the
appliance wheel, without the host tools, and the pure-Python packages Buildroot does not provide), the board's .rknn
models with their recipes, the board's meta, install.sh, and MANIFEST.json with the sha256 of
every file. The image itself (python3, numpy, OpenCV, pyserial, paho-mqtt, the NPU runtime)
comes from Buildroot: board/<board>/buildroot/.
"""

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

from appliance import __version__
from appliance.config import Config, from_dict, set_in_text, tomllib
from appliance.errors import FaceGateError, ModelError
from appliance.inference.rknn_files import recipe_path, rknn_path
from appliance.models import sha256_of

# The pure-Python packages the image lacks, pinned in the repository (board/wheelhouse.txt)
WHEELHOUSE_PINS = Path("board") / "wheelhouse.txt"
# the oldest Python the appliance supports: every pinned wheel must install there
OLDEST_PYTHON = "3.9"


def read_meta(path: Path) -> Dict[str, str]:
    """A board's meta file: KEY="value" lines, as a shell would read them (no expansion)."""
    meta = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, equals, value = line.partition("=")
        if not equals or not key.isidentifier():
            raise FaceGateError("%s line %d is not KEY=\"value\": %r" % (path, number, line))
        meta[key] = value.strip().strip('"')
    return meta


CONFIG_IN_OVERLAY = Path("etc") / "facegate" / "config.toml"


def board_config_text(repo: Path, board: str) -> str:
    """The config a board boots with: the common one (rootfs_overlay/) with the board's facts
    from its meta written in, so a board's config can never disagree with its meta."""
    meta = read_meta(repo / "board" / board / "meta")
    data = meta["DATA_DIR"]
    facts = (("models.backend", meta["NPU_BACKEND"]), ("models.rknn_target", meta["NPU_TARGET"]),
             ("models.liveness_backend", meta["LIVENESS_BACKEND"]),
             ("models.rknn_detector_dtype", meta["DETECTOR_DTYPE"]), ("models.rknn_embedder_dtype", meta["EMBEDDER_DTYPE"]), ("detector.input_size", int(meta["DETECTOR_SIZE"])),
             ("camera.source", meta["CAMERA_SOURCE"]), ("relay.port", meta["RELAY_TTY"]),
             ("door.watchdog_device", meta["WATCHDOG_DEVICE"]), ("gallery.path", data + "/gallery.db"),
             ("audit.path", data + "/audit.db"), ("mqtt.state_path", data + "/mqtt-state.db"))
    text = (repo / "rootfs_overlay" / CONFIG_IN_OVERLAY).read_text()
    text = "# FaceGate on %s (generated from board/%s/meta by make bundle)\n%s" % (
        meta["BOARD_DESCRIPTION"], board, text)
    for name, value in facts:
        text = set_in_text(text, name, value, "rootfs_overlay/%s" % CONFIG_IN_OVERLAY)
    return text


def board_config(repo: Path, board: str) -> Config:
    return from_dict(tomllib.loads(board_config_text(repo, board)), "board %s" % board)


def board_models(meta: Dict[str, str], config: Config, models: Path) -> List[Path]:
    """The .rknn files (and recipes) the board's config loads; a clear error when any is missing."""
    target = meta["NPU_TARGET"]
    wanted = [rknn_path(models, target, config.models.detector, meta["DETECTOR_DTYPE"], int(meta["DETECTOR_SIZE"])),
              rknn_path(models, target, config.models.embedder, meta["EMBEDDER_DTYPE"])]
    missing = [path for path in wanted if not path.is_file() or not recipe_path(path).is_file()]
    if missing:
        how = ("with Rockchip's rknn-toolkit v1 installed in .rknn-venv" if meta["NPU_TOOLKIT"] == "toolkit1"
               else "after 'make rknn-env'")
        raise ModelError("the bundle needs %s: run 'tools/convert-rknn --target %s --detector-dtypes %s "
                         "--embedder-dtypes %s' %s" % (", ".join(str(p) for p in missing), target,
                                                       meta["DETECTOR_DTYPE"], meta["EMBEDDER_DTYPE"], how))
    return [f for path in wanted for f in (path, recipe_path(path))]


def read_pins(path: Path) -> List[str]:
    """NAME==VERSION lines (comments and blanks skipped); anything looser is refused."""
    pins = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, equals, version = line.partition("==")
        if not equals or not name.strip() or not version.strip() or any(c in version for c in "<>=!~*,; "):
            raise FaceGateError("%s line %d must pin one exact version (NAME==VERSION): %r" % (path, number, line))
        pins.append(line)
    return pins


PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]


def build_appliance_wheel(repo: Path, folder: Path) -> Path:
    """The wheel of what runs on a board: the `appliance` package alone, never the host tools."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="facegate-source-") as source:
        # build from a copy: setuptools leaves build/ and egg-info behind in the tree it builds,
        # and a copy without facegate_host/ cannot package it
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(repo / name, Path(source) / name)
        shutil.copytree(repo / "appliance", Path(source) / "appliance",
                        ignore=shutil.ignore_patterns("__pycache__"))
        subprocess.run(PIP + ["wheel", "--no-deps", "--wheel-dir", str(folder), source], check=True)
    return next(folder.glob("facegate-*.whl"))


MACHINES = {"arm64": "aarch64", "armhf": "armv7l"}  # a board's ARCH -> the machine in wheel tags


def download_platform_wheels(pins_file: Path, meta: Dict[str, str], folder: Path) -> None:
    """A board's compiled packages, pinned in board/<board>/wheelhouse.txt, for its Python and
    platform (meta: PYTHON, WHEEL_PLATFORMS); a wheel for any other machine is refused."""
    python, platforms = meta.get("PYTHON"), meta.get("WHEEL_PLATFORMS", "").split()
    if not python or not platforms:
        raise FaceGateError("%s needs PYTHON and WHEEL_PLATFORMS in the board's meta" % pins_file)
    abi = "cp" + python.replace(".", "")
    before = set(folder.iterdir())
    subprocess.run(PIP + ["download", "--no-deps", "--only-binary=:all:", "--implementation", "cp",
                          "--python-version", python, "--abi", abi, "--abi", "abi3", "--abi", "none",
                          "--dest", str(folder)] + [a for p in platforms for a in ("--platform", p)]
                   + read_pins(pins_file), check=True)
    for wheel in set(folder.iterdir()) - before:
        check_wheel(wheel, meta)


def check_wheel(wheel: Path, meta: Dict[str, str]) -> None:
    """Refuse a wheel built for another machine or another Python than the board's."""
    machine, abi = MACHINES[meta["ARCH"]], "cp" + meta["PYTHON"].replace(".", "")
    tags = wheel.name[:-len(".whl")].split("-")[-3:]  # python, abi, platform
    if tags[2] != "any" and not all(tag.endswith("_" + machine) for tag in tags[2].split(".")):
        raise FaceGateError("%s is built for %s, not this board (%s)" % (wheel.name, tags[2], machine))
    if tags[1] not in ("none", "abi3", abi):
        raise FaceGateError("%s is built for Python ABI %s, the board has %s" % (wheel.name, tags[1], abi))


SOURCE_PINS = "source-wheels.txt"  # a board's compiled packages with no wheel for its machine


def build_wheelhouse(repo: Path, folder: Path, board_dir: Optional[Path] = None,
                     meta: Optional[Dict[str, str]] = None, sysroot: Optional[Path] = None) -> None:
    source_pins = read_pins(board_dir / SOURCE_PINS) if board_dir and (board_dir / SOURCE_PINS).is_file() else []
    if source_pins and sysroot is None:
        raise FaceGateError("%s's bundle builds %s from source: give --sysroot (make bundle SYSROOT=...), the board's "
                            "root filesystem with its Python headers (a Debian root with libpython%s-dev, or "
                            "Buildroot's staging directory)" % (board_dir.name, ", ".join(source_pins),
                                                                (meta or {}).get("PYTHON", "3")))
    folder.mkdir(parents=True)
    build_appliance_wheel(repo, folder)
    if board_dir is not None and (board_dir / "wheelhouse.txt").is_file():
        download_platform_wheels(board_dir / "wheelhouse.txt", meta or {}, folder)
    if source_pins:
        from facegate_host.source_wheels import build_source_wheels

        for wheel in build_source_wheels(source_pins, meta or {}, sysroot, folder):
            check_wheel(wheel, meta or {})
    pinned = read_pins(repo / WHEELHOUSE_PINS)
    before = set(folder.iterdir())
    # for platform "any" and the oldest Python, never the host's: only pure wheels can match, and
    # a pin that needs a newer Python fails here rather than on a board
    subprocess.run(PIP + ["download", "--no-deps", "--only-binary=:all:", "--platform", "any",
                          "--implementation", "py", "--abi", "none", "--python-version", OLDEST_PYTHON,
                          "--dest", str(folder)] + pinned, check=True)
    for wheel in set(folder.iterdir()) - before:
        if not wheel.name.endswith("-none-any.whl"):
            raise FaceGateError("%s is not a pure-Python wheel; the board cannot use it" % wheel.name)


def onnx_models(config: Config, models: Path) -> List[Path]:
    """The ONNX files of the board's detector and embedder (and the embedder's 8-bit copy, where
    made): the CPU fallback (`--backend onnxruntime`) for a board whose NPU runtime is missing or
    broken; and the liveness models, which the boards run on the CPU."""
    from appliance.models import (get_spec, installed_int8_path, installed_path, int8_check_set, int8_path, int8_stamp,
                                  is_prepared, stamp_path)

    from appliance.vision.pipeline import LIVENESS_MODELS

    wanted = []
    liveness = list(LIVENESS_MODELS) if config.liveness.enabled else []  # they run on the CPU on every board
    for model_id in [config.models.detector, config.models.embedder] + liveness:
        spec = get_spec(model_id)
        if spec.prepare and not is_prepared(spec, models):
            raise ModelError("the bundle needs %s prepared in %s: run 'make models'" % (model_id, models))
        # a prepared model travels with its stamp, never with the checkpoint it was made from
        wanted += [models / spec.prepared_file, stamp_path(spec, models)] if spec.prepare else [models / spec.file]
        if model_id == config.models.embedder:
            source = installed_path(spec, models)
            if installed_int8_path(source) is not None:  # so the fallback embeds as the host's door does
                # with its check set: the board measures the copy on its own CPU (vision/int8_check.py)
                wanted += [int8_path(source), int8_stamp(source), int8_check_set(source)]
    missing = [str(path) for path in wanted if not path.is_file()]
    if missing:
        raise ModelError("the bundle needs %s: run 'make models'" % ", ".join(missing))
    return wanted


def record_selftest(config: Config, models: Path, photo: Path, folder: Path) -> None:
    """The reference face the board's self-test compares with, recorded here on ONNX Runtime."""
    from dataclasses import replace

    from appliance.selftest import record_reference
    from appliance.vision.pipeline import FacePipeline

    host = replace(config, models=replace(config.models, backend="onnxruntime", dir=str(models)))
    pipeline = FacePipeline.from_config(host)
    try:
        record_reference(pipeline, photo, folder)
    finally:
        pipeline.close()


def copy_installer(repo: Path, root: Path) -> None:
    """install.sh, and the launcher it puts at /usr/bin/facegate (outside every version)."""
    for name in ("install.sh", "launcher"):
        shutil.copy2(repo / "board" / name, root / name)


def finish(root: Path, board: str, out: Path) -> None:
    """MANIFEST.json with every file's sha256 (the version, and its hash, name the version on a
    device), SHA256SUMS for install.sh's `sha256sum -c`, and the tarball, renamed into place whole."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p not in (root / "MANIFEST.json", root / "SHA256SUMS"))
    version = __version__
    wheel = next(root.glob("wheelhouse/facegate-*.whl"), None)
    if wheel is not None:  # the version of the code the bundle carries, which may not be this checkout's
        version = wheel.name.split("-")[1]
    manifest = {"board": board, "version": version,
                "files": {str(p.relative_to(root)): sha256_of(p) for p in files}}
    meta = root / "meta"
    if meta.is_file():
        manifest["npu_target"] = read_meta(meta).get("NPU_TARGET", "")
    (root / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (root / "SHA256SUMS").write_text("".join("%s  %s\n" % (digest, name)
                                             for name, digest in manifest["files"].items()))
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with tarfile.open(partial, "w:gz") as tar:
        tar.add(root, arcname=root.name)
    partial.replace(out)


def build(board: str, repo: Path, models: Path, out: Path, reference_photo: Optional[Path] = None,
          sysroot: Optional[Path] = None) -> Path:
    board_dir = repo / "board" / board
    if not (board_dir / "meta").is_file():
        boards = sorted(p.name for p in (repo / "board").iterdir() if (p / "meta").is_file())
        raise FaceGateError("no board %r: board/<name>/meta exists for %s" % (board, ", ".join(boards)))
    meta = read_meta(board_dir / "meta")
    config = board_config(repo, board)
    model_files = board_models(meta, config, models) + onnx_models(config, models)
    name = "facegate-%s-%s" % (board, __version__)
    with tempfile.TemporaryDirectory(prefix="facegate-bundle-") as temporary:
        root = Path(temporary) / name
        shutil.copytree(repo / "rootfs_overlay", root / "overlay", ignore=shutil.ignore_patterns("README.md"))
        if (board_dir / "overlay").is_dir():
            shutil.copytree(board_dir / "overlay", root / "overlay", dirs_exist_ok=True)
        (root / "overlay" / CONFIG_IN_OVERLAY).write_text(board_config_text(repo, board))
        shutil.copy2(board_dir / "meta", root / "meta")
        copy_installer(repo, root)
        build_wheelhouse(repo, root / "wheelhouse", board_dir, meta, sysroot)
        for path in model_files:
            target = root / "models" / path.relative_to(models)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        if reference_photo is not None:
            record_selftest(config, models, reference_photo, root / "models" / "selftest")
        finish(root, board, out)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="make-bundle", description=__doc__.splitlines()[0])
    parser.add_argument("--board", required=True)
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--out", type=Path, help="tarball path (default dist/facegate-BOARD-VERSION.tar.gz)")
    parser.add_argument("--reference-photo", type=Path,
                        help="a photo of one face: the board's self-test checks its models against it")
    parser.add_argument("--sysroot", type=Path,
                        help="the board's root filesystem, with its Python headers: for a board whose "
                             "source-wheels.txt names packages to cross-build (the RV1126's libosdp)")
    args = parser.parse_args(argv)
    repo = Path(__file__).resolve().parent.parent
    out = args.out or repo / "dist" / ("facegate-%s-%s.tar.gz" % (args.board, __version__))
    try:
        print(build(args.board, repo, args.models, out, args.reference_photo, args.sysroot))
    except (FaceGateError, subprocess.CalledProcessError) as err:
        print("make-bundle: %s" % err, file=sys.stderr)
        return 2
    return 0
