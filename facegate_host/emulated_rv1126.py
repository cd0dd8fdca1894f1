"""`make test-emulated`, the RV1126 part: FaceGate up to the RKNPU1 runner in an emulated
Debian bookworm armhf root.

The first RV1126's NPU runtime is the C library librknn_api.so, which FaceGate calls through
ctypes (backend rknn_c). Neither that library nor an NPU exists here, and no RV1126 bundle can
be built without Rockchip's toolkit v1 (not on PyPI), so this part goes as far as the runner. In
a 32-bit ARM root (debootstrap, qemu-user-static; Debian's python3, numpy and OpenCV, as PyPI
has no armv7l wheels of them) it installs the RV1126's wheelhouse as a bundle would (the
appliance wheel, board/wheelhouse.txt, board/rv1126/wheelhouse.txt) and checks that

- `facegate selftest` with the RV1126's board config fails on the models with the runner's
  one-line "needs Rockchip's NPU runtime librknn_api.so" (no runtime, no NPU here);
- against tests/data/rknn_stub.c cross-compiled for armhf (rknn_api.h's ABI, 32-bit context
  handle), the runner's structs are the size the library expects, and pixels and outputs cross
  intact. The real library on a real board remains the only proof against Rockchip's runtime;
- libosdp, which PyPI has no armv7l wheel of, cross-built from its pinned source against this
  root (board/rv1126/source-wheels.txt) and installed with the wheelhouse, carries a card from
  the door's OSDP reader to libosdp's control panel over the secure channel (tools/osdp-roundtrip).
"""

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from facegate_host.bundle import board_config_text, build_wheelhouse, read_meta
from facegate_host.emulated import ROOT, Mounted, build_root, fresh_copy, in_root

# debootstrap does not resolve virtual packages: cryptography needs cffi's backend named; the
# Python headers are for cross-building board/rv1126/source-wheels.txt (libosdp) against this root
PACKAGES = ("python3", "python3-numpy", "python3-opencv", "python3-cryptography", "python3-cffi-backend", "python3-pip",
            "busybox", "libpython3.11-dev")
CROSS_CC = "arm-linux-gnueabihf-gcc"
CPU = "cortex-a7"  # the RV1126's cores
CPU_DETECTOR, CPU_EMBEDDER = "retinaface_mnet025", "mobilefacenet_128d"  # what Debian's OpenCV 4.6 runs

# Run inside the root with the root's python3: what the RKNPU1 runner does there.
CHECK = r'''
import ctypes, json
from pathlib import Path
import numpy as np
from appliance.errors import BackendError
from appliance.inference.rknn_c_runner import RknnCRunner, open_library
from appliance.inference.rknn_files import recipe_path
from appliance.models import get_spec

found = {"machine_bits": 8 * ctypes.sizeof(ctypes.c_void_p)}
try:
    open_library()
except BackendError as err:
    found["missing"] = str(err)
spec = get_spec("mobilefacenet_ms1m")
model = Path("/tmp/stub.rknn")
model.write_bytes(b"FGSTUB 112 112 1 128\n")
recipe_path(model).write_text(json.dumps({"source_sha256": spec.sha256, "input_size": [112, 112]}))
runner = RknnCRunner(spec, model, library="/tmp/stub/librknn_api.so")
image = np.zeros((1, 112, 112, 3), np.uint8)
image[..., 0], image[..., 1], image[..., 2] = 10, 20, 200
(out,) = runner.run(image)
found.update(context_bytes=ctypes.sizeof(runner._context_type), shape=list(out.shape), first=out[0, :3].tolist())
runner.close()
# signed commands on this root's own cryptography (Debian's): a door's key signs, the check opens it
from appliance.keys import PrivateKey, Trusted
from appliance.mqtt.signing import open_sealed, sign
key = PrivateKey.generate()
opened = open_sealed(sign(key, "ping", "door", {}), {key.key_id: Trusted("admin", "admin", key.public)}.get)
found["signed"] = json.loads(opened.signed)["verb"]
# the V4L2 reader's structs as 32-bit ARM lays them out
from appliance import v4l2
found["v4l2"] = v4l2.layout()
print(json.dumps(found))
'''


def _busybox_service(work: Path) -> str:
    """The door service as the RV1126's image runs it: S95facegate under BusyBox's sh and its
    start-stop-daemon (not Debian's), the launcher bundles install, a door on the CPU (OpenCV's
    DNN: no NPU, and PyPI has no ONNX Runtime for armv7l) on a video, the relay on a pty."""
    import cv2
    import numpy as np

    from appliance.config import set_in_text
    from facegate_host.emulator import RelayEmulator

    from appliance.models import get_spec, stamp_path
    from appliance.vision.pipeline import LIVENESS_MODELS

    # Debian 12's OpenCV 4.6 cannot run the default detector's and embedder's exports (their
    # Clip and Resize nodes); it runs the original RetinaFace and MobileFaceNet files, and the
    # liveness pair, which is what the RV1126 runs on the CPU (board/rv1126/meta)
    models = ROOT / "models"
    (work / "tmp" / "models").mkdir(parents=True, exist_ok=True)
    for model_id in (CPU_DETECTOR, CPU_EMBEDDER) + LIVENESS_MODELS:
        spec = get_spec(model_id)
        files = [models / spec.prepared_file, stamp_path(spec, models)] if spec.prepare else [models / spec.file]
        for path in files:
            shutil.copy2(path, work / "tmp" / "models" / path.name)
    writer = cv2.VideoWriter(str(work / "tmp" / "doorway.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for _ in range(20):
        writer.write(np.full((240, 320, 3), 90, np.uint8))
    writer.release()
    for name in ("etc/init.d/S95facegate", "etc/default/facegate"):
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / "rootfs_overlay" / name, work / name)
    shutil.copy2(ROOT / "board" / "launcher", work / "usr" / "bin" / "facegate")  # over pip's entry point
    (work / "usr" / "bin" / "facegate").chmod(0o755)
    emulator = RelayEmulator()
    text = board_config_text(ROOT, "rv1126")
    for name, value in (("models.backend", "opencv"), ("models.dir", "/tmp/models"),
                        ("models.detector", CPU_DETECTOR), ("models.embedder", CPU_EMBEDDER),
                        ("matching.distance_threshold", 0.4),  # that embedder has no calibration
                        ("camera.source", "/tmp/doorway.mp4"), ("camera.loop", True), ("relay.port", emulator.path),
                        ("mqtt.enabled", False), ("door.watchdog_device", "")):
        text = set_in_text(text, name, value)
    (work / "etc" / "facegate" / "config.toml").write_text(text)
    # BusyBox's applets first on the PATH, and its shell running the script
    (work / "tmp" / "busybox").mkdir(exist_ok=True)
    in_root(work, ["busybox", "--install", "-s", "/tmp/busybox"], cpu=CPU)
    script = ["env", "PATH=/tmp/busybox:/usr/bin:/bin:/usr/sbin:/sbin", "busybox", "sh", "/etc/init.d/S95facegate"]
    try:
        started = in_root(work, script + ["start"], cpu=CPU, timeout=600, check=False)
        assert started.returncode == 0 and "Starting facegate: OK" in started.stdout, started.stdout + started.stderr
        assert emulator.wait_for(lambda e: len(e.events) >= 1, timeout=60), "the door never drove the relay"
        status = in_root(work, script + ["status"], cpu=CPU)
        assert status.stdout.startswith("facegate is running"), status.stdout
        stopped = in_root(work, script + ["stop"], cpu=CPU, check=False)
        assert stopped.returncode == 0 and "Stopping facegate: OK" in stopped.stdout, stopped.stdout + stopped.stderr
        assert not emulator.is_on()
        assert in_root(work, script + ["status"], cpu=CPU, check=False).returncode == 3
    finally:
        in_root(work, script + ["stop"], cpu=CPU, check=False)
        emulator.close()
    return "BusyBox init script: %s; %s; %s" % (started.stdout.strip(), status.stdout.strip(), stopped.stdout.strip())


def main() -> int:
    started = time.monotonic()
    cache = ROOT / ".emulated"
    work = fresh_copy(build_root(cache, "armhf", PACKAGES), cache / "work-armhf")
    (work / "tmp" / "stub").mkdir(parents=True)
    subprocess.run([CROSS_CC, "-shared", "-fPIC", "-O1", "-o", str(work / "tmp" / "stub" / "librknn_api.so"),
                    str(ROOT / "tests" / "data" / "rknn_stub.c")], check=True)
    subprocess.run([CROSS_CC, "-O1", "-o", str(work / "tmp" / "v4l2_layout"),
                    str(ROOT / "tests" / "data" / "v4l2_layout.c")], check=True)
    board = ROOT / "board" / "rv1126"
    with tempfile.TemporaryDirectory(prefix="facegate-wheels-") as folder:
        build_wheelhouse(ROOT, Path(folder) / "wheelhouse", board, read_meta(board / "meta"), sysroot=work)
        shutil.copytree(Path(folder) / "wheelhouse", work / "tmp" / "wheelhouse")
    wheels = sorted("/tmp/wheelhouse/" + p.name for p in (work / "tmp" / "wheelhouse").iterdir())
    config = work / "etc" / "facegate" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(board_config_text(ROOT, "rv1126"))
    (work / "tmp" / "check.py").write_text(CHECK)
    with Mounted(work, cpuinfo=False):
        in_root(work, ["python3", "-m", "pip", "install", "--quiet", "--no-deps", "--break-system-packages"] + wheels,
                cpu=CPU)
        selftest = in_root(work, ["facegate", "selftest", "--config", "/etc/facegate/config.toml", "--no-relay",
                                  "--no-camera"], cpu=CPU, check=False)
        result = in_root(work, ["python3", "/tmp/check.py"], cpu=CPU)
        header = in_root(work, ["/tmp/v4l2_layout"], cpu=CPU)
        # libosdp, cross-built from source for this root: the door's OSDP reader and a control panel on a pty
        shutil.copy2(ROOT / "tools" / "osdp-roundtrip", work / "tmp" / "osdp-roundtrip")
        osdp = in_root(work, ["python3", "/tmp/osdp-roundtrip"], cpu=CPU, timeout=600, check=False)
    print(selftest.stdout.strip())
    assert selftest.returncode == 1 and "FAIL: backend 'rknn_c' needs Rockchip's NPU runtime librknn_api.so" \
        in selftest.stdout, selftest.stdout + selftest.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    print("armhf root: %s" % found)
    assert found["machine_bits"] == 32 and found["context_bytes"] == 4, found
    assert "needs Rockchip's NPU runtime librknn_api.so or librknnrt.so" in found.get("missing", ""), found
    assert found["shape"] == [1, 128] and found["first"] == [10.0, 20.0, 200.0], found
    assert found["signed"] == "ping", found  # Ed25519 on the root's own cryptography
    print("armhf root, OSDP: %s" % osdp.stdout.strip().replace("\n", "; "))
    assert osdp.returncode == 0 and "panel received card (7, 12345) over the secure channel" in osdp.stdout, \
        osdp.stdout + osdp.stderr[-3000:]
    kernel = [list(map(int, line.split())) for line in header.stdout.strip().splitlines()]
    assert found["v4l2"] == kernel, (found["v4l2"], kernel)  # the V4L2 reader's structs on armhf
    with Mounted(work, cpuinfo=False):
        service = _busybox_service(work)
    print(service)
    print("test-emulated (RV1126, armhf): the RKNPU1 runner and the BusyBox init script passed in %.0f s"
          % (time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
