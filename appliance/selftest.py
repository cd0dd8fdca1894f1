"""`facegate selftest`: can this device run its door? Checked the way `run` will use it.

1. every configured model loads on the configured backend (each is warmed up and its outputs
   checked for shape and finiteness as it loads);
2. one frame through detection, alignment and embedding: the recorded reference face (a photo
   and the outputs the host recorded for it, `reference.json`, in `<models.dir>/selftest`, put
   there by the board bundle) must be found where it was, and its embedding must point where
   it did, within what the backend's quantisation allows;
3. the relay port opens and is driven locked; the camera gives a frame, when it is a device.

Each check is a line; any failure makes the command fail with its reason, so an install that
ends with a self-test cannot report success for a door that cannot work.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np

from appliance.config import Config
from appliance.errors import FaceGateError

REFERENCE_FILE = "reference.json"
# the embedding of the reference face on this device against the host's (ONNX Runtime, fp32):
# fp16 NPU models measure about 0.999 and int8 about 0.98; a broken model lands near 0
MIN_COSINE = 0.9
MAX_LANDMARK_ERROR = 0.1  # of the face's width


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    warning: bool = False  # worth an installer's attention, but the door can run


def reference_dir(config: Config) -> Path:
    from appliance.models import models_dir

    return models_dir(config.models.dir or None) / "selftest"


def run_checks(config: Config, reference: Optional[Path] = None, relay: bool = True,
               camera: bool = True) -> List[Check]:
    checks: List[Check] = []
    loaded: list = []
    if _attempt(checks, "models", lambda: _load(config, loaded)):
        if loaded[0].int8_verdict is not None:
            checks.append(_int8(loaded[0].int8_verdict))
        try:
            _attempt(checks, "reference face", lambda: _reference(loaded[0], reference or reference_dir(config)))
        finally:
            loaded[0].close()
    if relay:
        _attempt(checks, "relay", lambda: _relay(config))
    if camera:
        _attempt(checks, "camera", lambda: _camera(config))
    if config.mqtt.enabled:
        _attempt(checks, "mqtt", lambda: _mqtt(config))
    if config.door.mode != "relay":
        _attempt(checks, "panel", lambda: _panel(config))
    checks.append(_clock())
    return checks


def _panel(config: Config) -> str:
    """What reader mode and card + face need, checked without opening anything: the running door
    holds the panel's line and the card reader's (its `panel` and `card_reader` faults say whether
    they answer)."""
    from appliance.config import panel_problems

    panel = config.panel
    problems = panel_problems(config)
    needs_osdp = (config.door.mode == "card_and_face" and panel.card_reader_protocol == "osdp") or \
        (config.door.mode != "card_and_face" and panel.protocol == "osdp")
    if needs_osdp:
        try:
            import osdp  # noqa: F401
        except ImportError:
            problems.append("OSDP needs libosdp: install the bundle's wheel (pip install 'facegate[panel]')")
    if config.door.mode == "card_and_face":
        wires = (panel.card_reader_data0, panel.card_reader_data1) if panel.card_reader_protocol == "wiegand" \
            else (panel.card_reader_port,)
        what = "card reader (%s) on %s" % (panel.card_reader_protocol, " and ".join(wires))
    elif panel.protocol == "osdp":
        wires, what = (panel.port,), "reader at OSDP address %d on %s, %d baud" % (panel.address, panel.port,
                                                                                 panel.baudrate)
    else:
        wires = ()
        what = "Wiegand %d on GPIO %d and %d" % (panel.wiegand_bits, panel.wiegand_data0, panel.wiegand_data1)
    for wire in filter(None, wires):
        missing = _missing_wire(wire)
        if missing:
            problems.append(missing)
    if problems:
        raise FaceGateError("; ".join(problems))
    return what


def _missing_wire(wire: str) -> str:
    """Why a serial port, a GPIO chip's line (gpiochip0:20) or a sysfs GPIO value file cannot be
    there, or "" (a sysfs line not yet exported is fine: the door exports it)."""
    from appliance.door.inputs import chip_line

    named = chip_line(wire)
    if named:
        if Path(named[0]).exists():
            return ""
        return "GPIO chip %s does not exist (check the setting: gpiodetect lists them)" % named[0]
    if wire.startswith("/sys/"):
        root = Path(wire).parent.parent
        return "" if root.exists() else "%s does not exist: this kernel has no sysfs GPIO there" % root
    return "" if Path(wire).exists() else "%s does not exist (check the cable and the setting)" % wire


def _mqtt(config: Config) -> str:
    """The files and keys `config --check` and `run` need for MQTT: the same list, not a second one."""
    from appliance.config import mqtt_problems

    problems = mqtt_problems(config.mqtt)
    if problems:
        raise FaceGateError("; ".join(problems))
    return "TLS %s, account %s, this door's key and the administrator's trusted" % (
        "on" if config.mqtt.tls else "OFF", config.mqtt.username or "none")


def _clock() -> Check:
    """A board may start in 1970: the door still runs (commands are judged against the newest
    signed time it has seen), but schedules, validity dates and certificates need the time."""
    from appliance.clock import synchronised

    state = synchronised()
    if state:
        return Check("clock", True, "synchronised (the kernel says an NTP daemon keeps it)")
    if state is None:
        return Check("clock", True, "this system cannot say whether its clock is synchronised", warning=True)
    return Check("clock", True, "NOT synchronised: schedules, validity dates and TLS need the time; set up NTP "
                                "(board/README.md); signed commands are judged against the newest signed time this "
                                "door has seen", warning=True)


def _attempt(checks: List[Check], name: str, step: Callable[[], str]) -> bool:
    """Run one check (`step` returns what it found); its FaceGateError, or any error, since this
    is a diagnosis, is its failure."""
    try:
        checks.append(Check(name, True, step()))
    except FaceGateError as err:
        checks.append(Check(name, False, str(err)))
    except Exception as err:  # a vendor runtime's own exception still names the check that failed
        checks.append(Check(name, False, "%s: %s" % (type(err).__name__, err)))
    return checks[-1].ok


def _int8(verdict: dict) -> Check:
    """The embedder's 8-bit copy as measured on this CPU: in use, or refused for the float model."""
    from appliance.vision.int8_check import describe

    if verdict["refused"]:
        return Check("8-bit embedder", True, "out of tolerance on this CPU (%s: %s; %s): the float model is used, "
                                             "slower but as calibrated" % (verdict["cpu"], verdict["refused"],
                                                                           describe(verdict["figures"])),
                     warning=True)
    return Check("8-bit embedder", True, "in use, on this CPU (%s) %s" % (verdict["cpu"], describe(verdict["figures"])))


def _load(config: Config, loaded: list) -> str:
    from appliance.vision.pipeline import FacePipeline

    pipeline = FacePipeline.from_config(config)
    loaded.append(pipeline)  # the next check runs a frame through it
    names = [config.models.detector, config.models.embedder] + (["liveness"] if pipeline.liveness else [])
    return "%s loaded on %s" % (", ".join(names), config.models.backend)


def _reference(pipeline, folder: Path) -> str:
    from appliance.vision.align import align_face
    from appliance.vision.images import read

    record_path = folder / REFERENCE_FILE
    if not record_path.is_file():
        # still a frame through every model, but nothing recorded to compare with
        frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
        pipeline.detect(frame)
        vector = pipeline.embedder.embed(frame[:112, :112].copy())
        if not np.all(np.isfinite(vector)):
            raise FaceGateError("the embedder gives non-finite values")
        return "no recorded reference face in %s: ran a synthetic frame only" % folder
    record = json.loads(record_path.read_text())
    if record["embedder"] != pipeline.embedder.model_id:
        raise FaceGateError("the reference in %s was recorded for embedder %s, this device runs %s: "
                            "install the bundle's models and reference together"
                            % (folder, record["embedder"], pipeline.embedder.model_id))
    image = read(str(folder / record["image"]))
    faces = pipeline.detect(image)
    if not faces:
        raise FaceGateError("no face found in the reference photo %s (the host found one): the detector "
                            "model or its backend is broken" % record["image"])
    expected = np.asarray(record["landmarks"], np.float32)
    face = min(faces, key=lambda f: float(np.abs(f.landmarks - expected).max()))
    width = float(face.box[2] - face.box[0])
    error = float(np.abs(face.landmarks - expected).max()) / max(width, 1.0)
    if error > MAX_LANDMARK_ERROR:
        raise FaceGateError("the reference face's landmarks are %.0f%% of its width from where the host found "
                            "them: the detector model or its backend is broken" % (100 * error))
    vector = pipeline.embedder.embed(align_face(image, face.landmarks))
    cosine = float(np.dot(vector, np.asarray(record["embedding"], np.float32)))
    if not cosine >= MIN_COSINE:
        raise FaceGateError("the reference face's embedding differs from the host's (cosine %.3f, need %.2f): "
                            "the embedder model or its backend is broken" % (cosine, MIN_COSINE))
    return "found where the host found it (landmarks within %.1f%% of its width), embedding cosine %.3f" % (
        100 * error, cosine)


def _relay(config: Config) -> str:
    from appliance.door.relay import Relay

    if not config.relay.port:
        return "none configured (relay.port is empty: a dry run)"
    relay = Relay.from_config(config.relay)  # opening it drives it locked
    try:
        if not relay.connected:
            raise FaceGateError("relay port %s did not open (unplugged?)" % config.relay.port)
    finally:
        relay.close()
    return "%s opened and driven locked" % config.relay.port


def _camera(config: Config) -> str:
    from appliance.camera import LatestFrameReader

    source = config.camera.source
    if source.startswith("v4l2:"):
        return _v4l2_camera(config)
    if not (source.startswith("/dev/") or "device=/dev/" in source):
        return "not a device (%s): not opened" % source[:60]
    reader = LatestFrameReader(source, realtime=True)
    try:
        frame = reader.latest(timeout=10)
        if frame is None:
            raise FaceGateError("camera %s gave no frame within 10 s" % source[:60])
        return "a %dx%d frame" % (frame.image.shape[1], frame.image.shape[0])
    finally:
        reader.close()


MIN_BRIGHTNESS = 12  # mean grey level: below it the picture is black (no light, or an ISP without 3A)


def _v4l2_camera(config: Config) -> str:
    """Format, size, frame rate and a picture that is not black, each said when it fails."""
    from appliance import v4l2

    camera = config.camera
    capture = v4l2.V4l2Capture(camera.source, camera.width, camera.height, camera.fps)
    try:
        rate, images = v4l2.measured_fps(capture, frames=10)
        problems = []
        if (capture.width, capture.height) != (camera.width, camera.height):
            problems.append("size %dx%d, not the %dx%d asked (camera.width, camera.height)"
                            % (capture.width, capture.height, camera.width, camera.height))
        if not images:
            problems.append("no frame within 5 s")
        elif rate < camera.fps / 2:
            problems.append("%.1f frames/s, under half the %.0f asked" % (rate, camera.fps))
        brightness = float(np.mean([image.mean() for image in images])) if images else 0.0
        if images and brightness < MIN_BRIGHTNESS:
            running = v4l2.isp_3a_running()
            problems.append("the picture is black (mean level %.0f)%s" % (
                brightness, ": the ISP's 3A (rkaiq_3A_server) is not running" if running is False and
                "rkisp" in capture.card + camera.source else ": cover off? light?"))
        if problems:
            raise FaceGateError("camera %s: %s" % (capture.describe(), "; ".join(problems)))
        return "%s, %.1f frames/s, mean level %.0f" % (capture.describe(), rate, brightness)
    finally:
        capture.release()


def record_reference(pipeline, image_path: Path, folder: Path) -> Path:
    """Record what this pipeline (the host's, ONNX Runtime) finds in a photo of one face, for
    devices to compare with (the bundle carries it)."""
    import shutil

    from appliance.vision.align import align_face
    from appliance.vision.detector import central_face
    from appliance.vision.images import read

    image = read(str(image_path))
    face = central_face(pipeline.detect(image), image.shape)
    if face is None:
        raise FaceGateError("no face in %s to record as the self-test's reference" % image_path)
    folder.mkdir(parents=True, exist_ok=True)
    name = "face" + Path(image_path).suffix.lower()
    shutil.copyfile(image_path, folder / name)
    record = {"image": name, "detector": pipeline.config.models.detector, "embedder": pipeline.embedder.model_id,
              "landmarks": face.landmarks.round(2).tolist(),
              "embedding": pipeline.embedder.embed(align_face(image, face.landmarks)).round(6).tolist()}
    path = folder / REFERENCE_FILE
    path.write_text(json.dumps(record) + "\n")
    return path
