"""Board support on the host: the start script against a temporary root, the overlay's files,
the boards' facts against their configs, the systemd notification, the NPU graph preparation."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from facegate_host.bundle import read_meta
from facegate_host.emulator import RelayEmulator

ROOT = Path(__file__).resolve().parents[1]
OVERLAY = ROOT / "rootfs_overlay"
BOARDS = sorted(p.parent.name for p in (ROOT / "board").glob("*/meta"))
SCRIPTS = [OVERLAY / "etc" / "init.d" / "S95facegate", ROOT / "board" / "install.sh",
           ROOT / "board" / "rv1126" / "post-build.sh", ROOT / "tools" / "convert-rknn",
           ROOT / "board" / "rv1126" / "buildroot" / "merge.sh"]
FACEGATE = Path(sys.executable).parent / "facegate"


def test_shell_scripts_pass_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is missing: 'make system-deps' installs it")
    result = subprocess.run(["shellcheck", *map(str, SCRIPTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def board_config(board: str):
    from facegate_host.bundle import board_config as config_of

    return config_of(ROOT, board)


@pytest.mark.parametrize("board", BOARDS)
def test_each_boards_config_matches_its_facts(board):
    meta = read_meta(ROOT / "board" / board / "meta")
    config = board_config(board)
    assert config.models.backend == meta["NPU_BACKEND"] == {"rv1126": "rknn_c", "rv1126b": "rknnlite"}[board]
    assert config.models.rknn_target == meta["NPU_TARGET"]
    assert config.detector.input_size == int(meta["DETECTOR_SIZE"])
    assert config.models.rknn_detector_dtype == meta["DETECTOR_DTYPE"]
    assert config.models.rknn_embedder_dtype == meta["EMBEDDER_DTYPE"]
    assert config.camera.source == meta["CAMERA_SOURCE"] == "v4l2:rkisp_mainpath"  # no GStreamer needed
    assert config.relay.port == meta["RELAY_TTY"]
    assert config.door.watchdog_device == meta["WATCHDOG_DEVICE"]
    for path in (config.gallery.path, config.audit.path, config.mqtt.state_path):
        assert path.startswith(meta["DATA_DIR"] + "/"), path  # on the persistent partition
    rule = (OVERLAY / "etc" / "udev" / "rules.d" / "99-facegate-relay.rules").read_text()
    vendor, product = meta["RELAY_USB_ID"].split(":")
    assert 'ATTRS{idVendor}=="%s", ATTRS{idProduct}=="%s"' % (vendor, product) in rule
    assert 'SYMLINK+="%s"' % meta["RELAY_TTY"].rsplit("/", 1)[1] in rule


def test_the_systemd_unit_runs_commands_that_exist():
    from appliance.cli import build_parser

    parser = build_parser()
    unit = (OVERLAY / "etc" / "systemd" / "system" / "facegate.service").read_text()
    commands = [line.split("=", 1)[1].lstrip("-").split() for line in unit.splitlines()
                if line.startswith(("ExecStart=", "ExecStartPre=", "ExecStopPost="))]
    assert len(commands) == 2  # the service starts with `run`, which checks its config: the launcher counts it
    for command in commands:
        assert command[0] == "/usr/bin/facegate"
        parser.parse_args(command[1:])  # an unknown option or command exits with SystemExit
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "Restart=always" in unit
    assert "StartLimitIntervalSec=0" in unit  # an update on trial needs its fourth start


def test_systemd_reads_the_unit_without_a_complaint(tmp_path):
    """systemd cannot run in this container, but its own parser can read the unit: an unknown
    key or a bad value is a warning systemd would ignore on the board, so any output fails."""
    launcher = tmp_path / "facegate"
    launcher.write_text("#!/bin/sh\n")
    launcher.chmod(0o755)
    unit = (OVERLAY / "etc" / "systemd" / "system" / "facegate.service").read_text()
    (tmp_path / "facegate.service").write_text(unit.replace("/usr/bin/facegate", str(launcher)))
    checked = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "facegate.service")],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and not checked.stderr.strip(), checked.stderr
    (tmp_path / "typo.service").write_text(unit.replace("WatchdogSec=", "WatchdogSecs=").replace(
        "/usr/bin/facegate", str(launcher)))
    typo = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "typo.service")], capture_output=True, text=True)
    assert "Unknown key 'WatchdogSecs'" in typo.stderr  # the check would see a mistake


def test_the_watchdog_tells_systemd_ready_then_keeps_it_fed(tmp_path):
    from appliance.door.watchdog import Watchdog

    address = str(tmp_path / "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(2)
    watchdog = Watchdog("", interval=1.0, notify_socket=address)
    watchdog.feed(100.0)
    watchdog.feed(100.5)  # within the interval: nothing sent
    watchdog.feed(101.2)
    watchdog.close()
    messages = [listener.recv(64) for _ in range(3)]
    listener.close()
    assert messages == [b"READY=1\nWATCHDOG=1", b"WATCHDOG=1", b"STOPPING=1"]


def test_the_bundle_refuses_without_the_boards_npu_models(tmp_path):
    from facegate_host.bundle import build
    from appliance.errors import ModelError

    with pytest.raises(ModelError) as caught:
        build("rv1126", ROOT, tmp_path / "models", tmp_path / "bundle.tar.gz")
    message = str(caught.value)
    assert "retinaface_mnet025_pytorch-fp16-320.rknn" in message and "mobilefacenet_ms1m-i16.rknn" in message
    assert "tools/convert-rknn --target rv1126" in message and "toolkit v1" in message
    assert not (tmp_path / "bundle.tar.gz").exists()


# -- the start script against a temporary root --------------------------------------------------

def still_clip(path: Path) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for _ in range(20):
        writer.write(np.full((240, 320, 3), 90, np.uint8))
    writer.release()
    return path


def init_root(tmp_path: Path, relay: str, models_dir: Path, config_text: str = "") -> Path:
    root = tmp_path / "root"
    (root / "etc" / "init.d").mkdir(parents=True)
    (root / "etc" / "default").mkdir()
    (root / "etc" / "facegate").mkdir()
    for name in ("etc/init.d/S95facegate", "etc/default/facegate"):
        shutil.copy2(OVERLAY / name, root / name)
    data = root / "userdata" / "facegate"
    (root / "etc" / "facegate" / "config.toml").write_text(config_text or """
[models]
dir = "%s"
[camera]
source = "%s"
loop = true
[gallery]
path = "%s/gallery.db"
[audit]
path = "%s/audit.db"
[relay]
port = "%s"
""" % (models_dir, still_clip(tmp_path / "doorway.mp4"), data, data, relay))
    return root


def service(root: Path, action: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, FACEGATE_ROOT=str(root), FACEGATE_BIN=str(FACEGATE),
               PATH="%s:/usr/sbin:/sbin" % os.environ.get("PATH", "/usr/bin:/bin"))
    return subprocess.run(["sh", str(root / "etc" / "init.d" / "S95facegate"), action], env=env,
                           capture_output=True, text=True, timeout=60)


def test_the_start_script_starts_and_stops_the_door_service(tmp_path, models_dir):
    if shutil.which("start-stop-daemon", path="/usr/sbin:/sbin:/usr/bin:/bin") is None:
        pytest.fail("start-stop-daemon is missing (Debian's dpkg provides it; BusyBox on the board)")
    emulator = RelayEmulator(link=str(tmp_path / "relay"))
    root = init_root(tmp_path, emulator.path, models_dir)
    pid = None
    try:
        started = service(root, "start")
        assert started.returncode == 0 and "OK" in started.stdout, started.stdout + started.stderr
        pid = int((root / "var" / "run" / "facegate.pid").read_text())
        # the service drives the relay locked as it starts, then its loop rewrites that state every
        # second: proof that it really runs (and has set up its own orderly stop)
        assert emulator.wait_for(lambda e: len(e.events) >= 2, timeout=60), "the service never ran"
        assert not emulator.is_on()
        assert (root / "userdata" / "facegate").stat().st_mode & 0o777 == 0o700
        status = service(root, "status")
        assert status.returncode == 0 and str(pid) in status.stdout
        assert "already running" in service(root, "start").stdout

        stop_at = time.monotonic()
        stopped = service(root, "stop")
        assert stopped.returncode == 0 and "OK" in stopped.stdout, stopped.stdout
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        pid = None
        assert not (root / "var" / "run" / "facegate.pid").exists()
        assert emulator.wait_for(lambda e: any(event.at >= stop_at and not event.on for event in e.events),
                                 timeout=2), "no lock frame as the service stopped"
        assert not emulator.is_on()
        assert service(root, "status").returncode == 3
        assert "not running" in service(root, "stop").stdout
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        emulator.close()


def test_the_start_script_refuses_a_bad_config_with_its_reason(tmp_path, models_dir):
    root = init_root(tmp_path, "/dev/null", models_dir, config_text="[door]\nunlock_secs = 3\n")
    started = service(root, "start")
    assert started.returncode == 1
    assert "FAIL" in started.stdout and "unknown key 'unlock_secs'" in started.stdout
    assert not (root / "var" / "run" / "facegate.pid").exists()


# -- the graph an NPU conversion starts from ------------------------------------------------------

def test_the_npu_graph_takes_bgr_at_a_fixed_size_and_gives_the_same_embedding(tmp_path, models_dir):
    import onnxruntime

    from facegate_host.convert.onnx_prep import prepare_for_npu
    from appliance.inference.base import to_float_tensor
    from appliance.models import get_spec

    spec = get_spec("mobilefacenet_128d")
    target = tmp_path / "npu.onnx"
    prepare_for_npu(models_dir / spec.file, target, spec, (112, 112))
    crop = np.random.default_rng(1).integers(0, 256, (1, 112, 112, 3), dtype=np.uint8)  # BGR
    original = onnxruntime.InferenceSession(str(models_dir / spec.file), providers=["CPUExecutionProvider"])
    expected = original.run(None, {spec.input.name: to_float_tensor(crop, spec.input)})[0]
    folded = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    assert folded.get_inputs()[0].shape == [1, 3, 112, 112]
    # the folded graph is fed BGR with the mean/std applied, no channel swap
    bgr = (crop.astype(np.float32) - 127.5) / 127.5
    got = folded.run(None, {spec.input.name: bgr.transpose(0, 3, 1, 2)})[0]
    assert np.allclose(got, expected, atol=1e-4)
    swapped = folded.run(None, {spec.input.name: bgr[..., ::-1].transpose(0, 3, 1, 2).copy()})[0]
    assert not np.allclose(swapped, expected, atol=1e-2)  # the order really changed


def test_the_npu_detector_graph_lists_outputs_in_the_manifests_order(tmp_path, models_dir):
    import onnx

    from facegate_host.convert.onnx_prep import prepare_for_npu
    from appliance.models import get_spec, installed_path

    spec = get_spec("retinaface_mnet025")
    target = tmp_path / "detector.onnx"
    prepare_for_npu(installed_path(spec, models_dir), target, spec, (320, 320))
    model = onnx.load(str(target))
    assert [o.name for o in model.graph.output] == spec.outputs
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 320, 320]


def test_dtype_names_map_to_each_toolkits_own_and_unknown_ones_are_refused():
    from appliance.errors import ModelError
    from appliance.inference.rknn_files import rknn_path, toolkit_dtype

    assert toolkit_dtype("rv1126", "i8") == "asymmetric_quantized-u8"
    assert toolkit_dtype("rv1126", "i16") == "dynamic_fixed_point-i16"
    assert toolkit_dtype("rk3588", "i16") == "w16a16i_dfp"
    with pytest.raises(ModelError, match="i8-dfp.*not offered for rk3568"):
        toolkit_dtype("rk3568", "i8-dfp")
    with pytest.raises(ModelError, match="unknown RKNN target"):
        toolkit_dtype("rv9999", "i8")
    assert rknn_path(Path("m"), "rv1126", "retinaface_mnet025", "fp16", 320) == \
        Path("m/rknn/rv1126/retinaface_mnet025-fp16-320.rknn")


def test_an_npu_backend_without_its_converted_model_says_how_to_make_it(tmp_path, models_dir):
    from appliance.config import from_dict
    from appliance.errors import ConfigError, ModelError
    from appliance.vision.pipeline import FacePipeline

    config = from_dict({"models": {"dir": str(tmp_path), "backend": "rknnlite", "rknn_target": "rv1126b"}})
    with pytest.raises(ModelError, match="convert it with 'tools/convert-rknn --target rv1126b'"):
        FacePipeline.from_config(config)
    aspect = from_dict({"models": {"backend": "rknn"}, "detector": {"keep_frame_aspect": True}})
    with pytest.raises(ConfigError, match="keep_frame_aspect"):
        FacePipeline.from_config(aspect)


def test_the_wheelhouse_is_pinned_in_the_repository(tmp_path):
    from facegate_host.bundle import WHEELHOUSE_PINS, read_pins
    from appliance.errors import FaceGateError

    from appliance.config import tomllib

    pins = dict(line.split("==") for line in read_pins(ROOT / WHEELHOUSE_PINS))
    # every package the appliance declares, beyond the compiled ones (numpy, OpenCV, cryptography:
    # per board) and pyserial and paho-mqtt, is pinned (and transitions' six)
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=;! ]", line, 1)[0] for line in declared}
    compiled = {"numpy", "opencv-python-headless", "cryptography"}
    assert names - compiled - {"pyserial", "paho-mqtt"} | {"six"} <= set(pins)
    # the RV1126B's bundle carries them; the RV1126's image has them from Debian (emulated_rv1126)
    board_pins = dict(line.split("==") for line in read_pins(ROOT / "board" / "rv1126b" / "wheelhouse.txt"))
    assert compiled <= set(board_pins)
    from facegate_host.emulated_rv1126 import PACKAGES

    assert {"python3-numpy", "python3-opencv", "python3-cryptography"} <= set(PACKAGES)
    loose = tmp_path / "wheelhouse.txt"
    loose.write_text("transitions==0.9.2\ntomli>=1.1\n")
    with pytest.raises(FaceGateError, match="line 2 must pin one exact version"):
        read_pins(loose)


# what only a host runs: none of it may reach a board, and nothing a board runs may need it
HOST_ONLY = ("facegate_host/", "appliance/convert/", "appliance/eval/", "bundle.py", "emulator.py", "prepare.py",
             "networks/", "rknn_toolkit_runner.py")


def test_the_boards_wheel_holds_the_appliance_and_no_host_tool(tmp_path):
    import ast
    import zipfile

    from facegate_host.bundle import build_appliance_wheel

    wheel = build_appliance_wheel(ROOT, tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        sources = {name: archive.read(name).decode("utf-8") for name in names if name.endswith(".py")}
    assert "appliance/service.py" in names and "appliance/models/manifest.json" in names
    assert not [n for n in names if any(part in n for part in HOST_ONLY)]
    imported = {}
    for name, text in sources.items():
        for node in ast.walk(ast.parse(text)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for module in modules:
                imported.setdefault(module.split(".")[0], set()).add(name)
    # one guarded door: preparing a model from a checkpoint needs the host (a board's come prepared)
    assert imported.get("facegate_host", set()) <= {"appliance/models/install.py"}
    for heavy in ("torch", "onnx", "rknn"):  # the runtime's own NPU module is rknnlite
        assert heavy not in imported, (heavy, imported.get(heavy))


def test_the_start_script_reports_a_service_that_dies_while_starting(tmp_path, models_dir):
    emulator = RelayEmulator(link=str(tmp_path / "relay"))
    root = init_root(tmp_path, emulator.path, models_dir)
    gallery = root / "userdata" / "facegate" / "gallery.db"
    gallery.parent.mkdir(parents=True)
    gallery.write_bytes(b"this is no database" * 100)  # passes `config --check`, fails as the door opens it
    try:
        started = service(root, "start")
        assert started.returncode == 1, started.stdout + started.stderr
        assert "FAIL: " in started.stdout and "not a FaceGate gallery" in started.stdout, started.stdout
        assert not (root / "var" / "run" / "facegate.pid").exists()
        assert service(root, "status").returncode == 3
    finally:
        emulator.close()


def test_selftest_checks_models_reference_face_relay_and_says_what_failed(tmp_path, pipeline):
    import json

    from appliance.selftest import REFERENCE_FILE, record_reference
    from conftest import SEED, run_cli

    reference = tmp_path / "selftest"
    record_reference(pipeline, SEED / "probes" / "obama.jpg", reference)
    emulator = RelayEmulator()
    try:
        result = run_cli("selftest", "--reference", reference, "--relay-port", emulator.path, "--no-camera")
        assert result.returncode == 0, result.stdout + result.stderr
        assert re.search(r"reference face +ok: found where the host found it .* cosine 1\.000", result.stdout)
        assert re.search(r"relay +ok: .* driven locked", result.stdout) and not emulator.is_on()
    finally:
        emulator.close()
    # a broken embedder (here: a reference that no longer matches) and an unplugged relay
    record = json.loads((reference / REFERENCE_FILE).read_text())
    record["embedding"] = list(reversed(record["embedding"]))
    (reference / REFERENCE_FILE).write_text(json.dumps(record))
    result = run_cli("selftest", "--reference", reference, "--relay-port", tmp_path / "ttyUSB9", "--no-camera")
    assert result.returncode == 1
    assert re.search(r"reference face +FAIL: the reference face's embedding differs from the host's", result.stdout)
    assert re.search(r"relay +FAIL: cannot open relay port .*ttyUSB9", result.stdout)
    assert "selftest failed: reference face, relay" in result.stdout


def test_a_boards_compiled_packages_are_pinned_for_its_python_and_machine():
    from facegate_host.bundle import MACHINES, read_pins

    pins = read_pins(ROOT / "board" / "rv1126b" / "wheelhouse.txt")
    names = {pin.split("==")[0] for pin in pins}
    # what the door imports on the RV1126B, and the CPU fallback
    assert {"numpy", "opencv-python-headless", "paho-mqtt", "pyserial", "rknn-toolkit-lite2", "onnxruntime"} <= names
    assert [pin for pin in pins if pin.startswith("paho-mqtt==2.")]  # the link's callback API is paho 2's
    meta = read_meta(ROOT / "board" / "rv1126b" / "meta")
    assert meta["PYTHON"] == "3.11" and meta["ARCH"] in MACHINES
    assert all(platform.endswith("_" + MACHINES[meta["ARCH"]]) for platform in meta["WHEEL_PLATFORMS"].split())


def test_a_package_with_no_wheel_for_the_board_needs_the_boards_root_to_be_cross_built(tmp_path):
    """The RV1126's libosdp is cross-built from source against its root (make test-emulated builds,
    installs and runs it there); without a root, or with one lacking Python's headers, the bundle
    says what to give before building anything, and a wheel for another machine is refused."""
    from appliance.errors import FaceGateError
    from facegate_host.bundle import SOURCE_PINS, build_wheelhouse, check_wheel, read_pins
    from facegate_host.source_wheels import target_sysconfig

    board = ROOT / "board" / "rv1126"
    meta = read_meta(board / "meta")
    assert [pin.split("==")[0] for pin in read_pins(board / SOURCE_PINS)] == ["libosdp"]
    with pytest.raises(FaceGateError, match=r"builds libosdp==[0-9.]+ from source: give --sysroot"):
        build_wheelhouse(ROOT, tmp_path / "wheelhouse", board, meta)
    assert not (tmp_path / "wheelhouse").exists()
    library = tmp_path / "root" / "usr" / "lib" / "python3.11"
    library.mkdir(parents=True)
    (library / "_sysconfigdata__linux_arm-linux-gnueabihf.py").write_text(
        "build_time_vars = {'INCLUDEPY': '/usr/include/python3.11', 'CFLAGS': '-O2'}\n")
    with pytest.raises(FaceGateError, match="no Python.h: install the board's Python headers"):
        target_sysconfig(tmp_path / "root", "3.11", tmp_path)
    (tmp_path / "root" / "usr" / "include" / "python3.11").mkdir(parents=True)
    (tmp_path / "root" / "usr" / "include" / "python3.11" / "Python.h").write_text("")
    assert target_sysconfig(tmp_path / "root", "3.11", tmp_path) == "_sysconfigdata__linux_arm-linux-gnueabihf"
    moved = (tmp_path / "_sysconfigdata__linux_arm-linux-gnueabihf.py").read_text()
    assert repr(str(tmp_path / "root" / "usr" / "include" / "python3.11")) in moved  # the root's headers
    check_wheel(Path("libosdp-3.2.9-cp311-cp311-linux_armv7l.whl"), meta)
    with pytest.raises(FaceGateError, match="built for linux_x86_64, not this board"):
        check_wheel(Path("libosdp-3.2.9-cp311-cp311-linux_x86_64.whl"), meta)
    with pytest.raises(FaceGateError, match="Python ABI cp312"):
        check_wheel(Path("libosdp-3.2.9-cp312-cp312-linux_armv7l.whl"), meta)
    # a library compiled for this host under the board's name is refused by its machine code
    import zipfile

    from facegate_host.source_wheels import check_machine_code

    disguised = tmp_path / "libosdp-3.2.9-cp311-cp311-linux_armv7l.whl"
    with zipfile.ZipFile(disguised, "w") as archive:
        archive.write(Path(sys.executable).resolve(), "osdp_sys.cpython-311-arm-linux-gnueabihf.so")
    with pytest.raises(FaceGateError, match="is not armhf machine code \\(ELF machine 62\\)"):
        check_machine_code(disguised, "armhf")
    assert not disguised.exists()


def test_the_buildroot_merge_appends_to_the_sdks_overlay_and_scripts(tmp_path):
    """The SDK's own overlay and post-build scripts stay; FaceGate's are added once. (A config
    file shaped like the SDK's: no SDK tree runs here, so merge_config.sh is skipped.)"""
    config = tmp_path / ".config"
    config.write_text('BR2_ARCH="arm"\nBR2_ROOTFS_OVERLAY="board/rockchip/rv1126_rv1109/fs-overlay"\n'
                      'BR2_ROOTFS_POST_BUILD_SCRIPT="board/rockchip/common/post-build.sh"\n')
    merge = ROOT / "board" / "rv1126" / "buildroot" / "merge.sh"
    for _ in range(2):  # twice: nothing added twice
        result = subprocess.run(["sh", str(merge), str(config)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    text = config.read_text()
    assert 'BR2_ROOTFS_OVERLAY="board/rockchip/rv1126_rv1109/fs-overlay %s"' % (ROOT / "rootfs_overlay") in text
    assert ('BR2_ROOTFS_POST_BUILD_SCRIPT="board/rockchip/common/post-build.sh %s"'
            % (ROOT / "board" / "rv1126" / "post-build.sh")) in text
    assert text.count("BR2_ROOTFS_OVERLAY=") == 1 and 'BR2_ARCH="arm"' in text
    fragment = (ROOT / "board" / "rv1126" / "buildroot" / "facegate.fragment").read_text()
    assert not [line for line in fragment.splitlines() if line.startswith(("BR2_ROOTFS_OVERLAY",
                                                                          "BR2_ROOTFS_POST_BUILD_SCRIPT"))]
    # every element of the board's camera pipeline, and time
    pipeline = read_meta(ROOT / "board" / "rv1126" / "meta")["CAMERA_PIPELINE"]
    if "videoconvert" in pipeline:
        assert "BR2_PACKAGE_GST1_PLUGINS_BASE_PLUGIN_VIDEOCONVERT=y" in fragment
    if "appsink" in pipeline:
        assert "BR2_PACKAGE_GST1_PLUGINS_BASE_PLUGIN_APP=y" in fragment
    assert "BR2_PACKAGE_CHRONY=y" in fragment and "BR2_PACKAGE_PYTHON_CRYPTOGRAPHY=y" in fragment
