"""Declared settings: every field has a default, bounds and a one-line description.

A config file is TOML with one table per section below. Unknown sections or keys are an error
that names the key and the file; the same declarations print the documented default file
(`facegate config --defaults`).
"""

import os
import sys
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from appliance.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # the board's Python may be 3.9 or 3.10
    import tomli as tomllib


def setting(default: Any, doc: str, minimum: Optional[float] = None,
            maximum: Optional[float] = None, choices: Optional[Tuple[Any, ...]] = None):
    return field(default=default, metadata={"doc": doc, "min": minimum, "max": maximum,
                                            "choices": choices})


@dataclass(frozen=True)
class ModelsConfig:
    dir: str = setting("", "directory holding installed models (empty: $FACEGATE_MODELS_DIR or ./models)")
    backend: str = setting("onnxruntime", "inference backend",
                           choices=("onnxruntime", "opencv", "rknnlite", "rknn_c", "rknn"))
    threads: int = setting(0, "CPU threads per model (0: the runtime's choice)", 0, 64)
    embedder_int8: bool = setting(True, "on backend onnxruntime, run the embedder's 8-bit copy where 'make "
                                        "models' made one (the default embedder): about twice as fast, same "
                                        "accuracy (README, Speed)")
    detector: str = setting("retinaface_mnet025_pytorch", "detector model id from the manifest")
    embedder: str = setting("mobilefacenet_ms1m", "embedder model id from the manifest")
    rknn_target: str = setting("rv1126", "NPU the .rknn files were converted for (rknn backends)",
                               choices=("rv1126", "rv1109", "rv1126b", "rk3566", "rk3568", "rk3588"))
    rknn_detector_dtype: str = setting("fp16", "quantisation of the detector's .rknn file (8 bits moves "
                                               "landmarks: see tools/convert-rknn --check)",
                                       choices=("i8", "i8-dfp", "i16", "w8a16", "fp16"))
    rknn_embedder_dtype: str = setting("fp16", "quantisation of the embedder's .rknn file (the "
                                               "RV1126's board config asks for i16: see tools/convert-rknn --check)",
                                       choices=("i8", "i8-dfp", "i16", "w8a16", "fp16"))
    liveness_backend: str = setting("", "backend of the liveness models (empty: models.backend, or onnxruntime "
                                        "when that is an NPU: their NPU conversion is not checked yet)",
                                    choices=("", "onnxruntime", "opencv", "rknnlite", "rknn_c", "rknn"))
    rknn_core_mask: str = setting("auto", "NPU cores for rknnlite (multi-core NPUs only)",
                                  choices=("auto", "0", "1", "2", "0_1", "0_1_2"))
    rknn_library: str = setting("", "backend rknn_c: the NPU runtime library (empty: librknn_api.so, the "
                                    "RV1126's RKNPU1, else librknnrt.so, RKNPU2)")
    rknn_device: str = setting("", "backend rknn: id of a board connected over USB (empty: the "
                                   "toolkit's simulator)")


@dataclass(frozen=True)
class DetectorConfig:
    input_size: int = setting(320, "detector input side in pixels", choices=(256, 320, 480, 640))
    keep_frame_aspect: bool = setting(False, "fit the input to the frame's aspect instead of a square")
    score_threshold: float = setting(0.6, "minimum face score", 0.05, 0.99)
    nms_threshold: float = setting(0.4, "IoU above which overlapping detections merge", 0.1, 0.9)
    flip_landmarks: bool = setting(False, "also detect on the mirrored image and average landmarks "
                                          "(steadier alignment, twice the detector time)")
    identify_input_size: int = setting(640, "detector input side for `facegate identify`, whose photos and "
                                             "streams hold smaller faces than the door's camera; it follows "
                                             "the frame's aspect (0: detect as the door does; NPU backends "
                                             "always do)", choices=(0, 320, 480, 640))
    refine_below_pixels: int = setting(64, "a face narrower than this in the detector's input is "
                                           "detected again on a crop around it, for sharper landmarks "
                                           "(0: never)", 0, 640)


@dataclass(frozen=True)
class EmbedderConfig:
    flip: bool = setting(True, "average the embeddings of the face and its mirror image")


@dataclass(frozen=True)
class QualityConfig:
    min_interocular: float = setting(24.0, "minimum distance between the eyes, in frame pixels", 0, 1000)
    max_yaw: float = setting(0.45, "maximum left-right turn (nose offset / eye distance)", 0, 2)
    max_pitch: float = setting(0.6, "maximum up-down tilt (deviation of the eye-nose-mouth ratio)", 0, 2)
    max_roll_degrees: float = setting(30.0, "maximum in-plane rotation of the eye line", 0, 90)
    min_sharpness: float = setting(40.0, "minimum variance of the Laplacian on the aligned face", 0, 10000)
    min_brightness: float = setting(40.0, "minimum mean grey level of the aligned face", 0, 255)
    max_brightness: float = setting(220.0, "maximum mean grey level of the aligned face", 0, 255)


@dataclass(frozen=True)
class LivenessConfig:
    # on by default: a door must not open for a photo. The threshold and frames were chosen on
    # nuaa-dev split by subject (`facegate eval-liveness`; README, "Liveness")
    enabled: bool = setting(True, "refuse photos and screens: MiniFASNet liveness (V2 at 2.7x and V1SE at 4.0x) "
                                  "scored on the good frames that match someone and fused over the attempt")
    threshold: float = setting(0.2, "a grant needs the attempt's fused live probability at least this high", 0, 1)
    frames: int = setting(3, "live scores of the attempt's latest matching frames averaged; a grant waits for this many",
                          1, 30)


@dataclass(frozen=True)
class MatchingConfig:
    false_accept_target: float = setting(1e-3, "the risk a site accepts: the chance that a stranger's "
                                               "visit to the door (every attempt it allows, see "
                                               "verification.attempts_per_visit) ends in a grant as "
                                               "anybody. The threshold "
                                               "follows from it, the embedder's calibration and the "
                                               "gallery's size", 1e-7, 0.1)
    distance_threshold: float = setting(0.0, "an explicit threshold instead (accept when cosine distance "
                                             "<= this); 0: from false_accept_target", 0, 2)
    min_margin: float = setting(0.05, "and the next person is at least this much farther", 0, 2)
    allow_looser_than_target: bool = setting(False, "accept a distance_threshold looser than "
                                                    "false_accept_target allows (it lets more strangers in); "
                                                    "refused otherwise")


@dataclass(frozen=True)
class GalleryConfig:
    path: str = setting("gallery.db", "the gallery's SQLite file")
    max_templates: int = setting(10, "most templates (photos) kept per person", 1, 100)
    keep_crops: bool = setting(True, "keep each template's aligned 112x112 face for re-embedding")


# an enrolment photo is held to stricter limits than a frame at the door: it is compared for years
ENROLMENT_QUALITY = QualityConfig(min_interocular=40.0, max_yaw=0.3, max_pitch=0.4, max_roll_degrees=25.0,
                                  min_sharpness=40.0, min_brightness=50.0, max_brightness=210.0)


@dataclass(frozen=True)
class EnrolmentConfig:
    duplicate_distance: float = setting(0.45, "refuse a face this close to another person unless forced", 0, 2)
    # [enrolment.quality]: the quality gate's own settings, with the stricter defaults above
    quality: QualityConfig = field(default=ENROLMENT_QUALITY, metadata={"doc": "quality limits for enrolment photos"})


@dataclass(frozen=True)
class CameraConfig:
    source: str = setting("0", "V4L2 index or device (through OpenCV), v4l2:NAME or v4l2:/dev/videoN (FaceGate's "
                               "own V4L2 reader: an ISP's multi-planar NV12, UVC YUYV or MJPEG), RTSP URL, video file, "
                               "image folder or GStreamer pipeline")
    width: int = setting(640, "v4l2: frame width asked of the camera", 64, 8192)
    height: int = setting(480, "v4l2: frame height asked of the camera", 64, 8192)
    fps: float = setting(15.0, "v4l2: frame rate asked of the camera", 1, 240)
    folder_fps: float = setting(5.0, "frame rate at which an image folder is played", 0.1, 120)
    realtime: bool = setting(True, "play files and folders at their own frame rate, like a live camera")
    loop: bool = setting(False, "restart a file or folder at its end instead of stopping the service")
    every_frame: bool = setting(False, "files and folders: hand the door every frame in order, stamped with the "
                                       "file's own clock, however slowly it works (replays and emulation; a "
                                       "live camera always gives the newest)")
    reconnect_max_seconds: float = setting(10.0, "longest wait between attempts to reopen a lost camera", 0.1, 600)


@dataclass(frozen=True)
class VerificationConfig:
    choose: str = setting("largest", "which face is verified when several are in view",
                          choices=("largest", "central"))
    min_face_pixels: float = setting(80.0, "ignore faces whose box is narrower than this, frame pixels "
                                           "(smaller faces give unreliable embeddings)", 0, 4000)
    track_iou: float = setting(0.3, "box overlap that continues a track from one frame to the next", 0.05, 0.95)
    lost_after_seconds: float = setting(0.6, "a face unseen this long has left", 0.05, 10)
    grant_frames: int = setting(2, "consecutive good frames agreeing on one person before a grant", 1, 30)
    deny_frames: int = setting(8, "good frames without a match before a denial", 1, 100)
    fuse_frames: int = setting(5, "embeddings of the latest good frames averaged for the decision", 1, 30)
    identity_change_distance: float = setting(
        0.5, "a good frame this far (cosine distance) from its track's fused embedding is another person "
             "who took the place: the attempt ends and a new one starts", 0.05, 2)
    attempts_per_visit: int = setting(
        3, "attempts a face gets without a grant while it keeps coming back within visit_seconds; then it is "
           "locked out (denied without a search) until visit_seconds pass without it. The decision rule counts "
           "every one of them", 1, 20)
    visit_seconds: float = setting(60.0, "a face denied this recently is the same visit when it tries again", 1, 3600)
    idle_fps: float = setting(5.0, "detection rate with nobody in view and nothing moving", 0.2, 60)
    motion_threshold: float = setting(0.01, "fraction of changed pixels that wakes full-rate detection", 0, 1)


@dataclass(frozen=True)
class DoorConfig:
    unlock_seconds: float = setting(3.0, "how long a grant keeps the door unlocked", 0.2, 600)
    deny_seconds: float = setting(1.0, "how long a denial is shown before the next attempt", 0, 60)
    cooldown_seconds: float = setting(1.0, "pause after a grant or denial before verifying again", 0, 60)
    person_cooldown_seconds: float = setting(10.0, "one person is not granted again within this time, "
                                                   "nor while the door they opened is open", 0, 3600)
    held_open_seconds: float = setting(30.0, "alarm when the door stays open longer than this", 1, 3600)
    always_open: str = setting("", "door schedule: periods the door stays unlocked, "
                                   "e.g. \"mon-fri 08:00-09:00; sat 10:00-12:00\" (local time)")
    watchdog_device: str = setting("", "hardware watchdog to feed while healthy, e.g. /dev/watchdog (empty: off)")
    time_zone: str = setting("", "the site's time zone for always_open, schedules and access groups, e.g. "
                                 "Europe/Berlin (empty: this machine's)")
    mode: str = setting("relay", "what a grant does: relay (open the door), reader (send the person's card to the "
                                 "access panel, which opens it; the relay stays locked), relay_and_reader, or "
                                 "card_and_face (a card from panel.card_reader_port names the person, whose face is "
                                 "then checked 1:1; the relay opens)",
                        choices=("relay", "reader", "relay_and_reader", "card_and_face"))


@dataclass(frozen=True)
class PanelConfig:
    protocol: str = setting("", "the building's access panel this door reports to as a reader (door.mode): osdp, "
                                "wiegand, or empty for none", choices=("", "osdp", "wiegand"))
    port: str = setting("", "osdp: serial port of the RS-485 adapter, e.g. /dev/ttyUSB1")
    baudrate: int = setting(9600, "osdp: line speed, as the panel is set", 9600, 230400)
    address: int = setting(0, "osdp: this reader's address on the bus, as the panel is set", 0, 126)
    scbk_file: str = setting("", "osdp: file holding the secure channel key (32 hex digits), from the panel")
    wiegand_data0: int = setting(-1, "wiegand: the GPIO number (sysfs) wired to the panel's DATA0 (-1: none)", -1, 4095)
    wiegand_data1: int = setting(-1, "wiegand: the GPIO number (sysfs) wired to the panel's DATA1 (-1: none)", -1, 4095)
    wiegand_gpio_root: str = setting("/sys/class/gpio", "wiegand: where the kernel's sysfs GPIO files are")
    wiegand_bits: int = setting(26, "the card format reported: Wiegand 26 (8-bit facility, 16-bit number) or 34 "
                                    "(16 and 16)", choices=(26, 34))
    denial_card: str = setting("", "reader modes: a card (FACILITY:NUMBER) sent to the panel on a denial, for panels "
                                   "that log failed attempts; one nobody holds and the panel knows as refused "
                                   "(empty: a denial sends nothing)")
    card_reader_protocol: str = setting("serial", "card_and_face: serial (a reader that sends each card as a line, "
                                                  "FACILITY:NUMBER or NUMBER), hid (a USB reader that types the "
                                                  "card's number and Enter, as a keyboard), osdp (an OSDP reader, "
                                                  "this door its control panel) or wiegand (a reader's DATA0 and "
                                                  "DATA1 wires on two GPIO inputs)",
                                        choices=("serial", "hid", "osdp", "wiegand"))
    card_reader_port: str = setting("", "card_and_face: serial port of the card reader (osdp: its RS-485 adapter; "
                                        "hid: its input device, /dev/input/by-id/...-event-kbd)")
    card_reader_data0: str = setting("", "card_and_face, wiegand: the GPIO input wired to the reader's DATA0: a sysfs "
                                         "value file (/sys/class/gpio/gpio20/value) or chip:line (gpiochip0:20)")
    card_reader_data1: str = setting("", "card_and_face, wiegand: the GPIO input wired to the reader's DATA1, named "
                                         "the same way")
    card_reader_led: int = setting(-1, "card_and_face, wiegand: the GPIO number (sysfs) wired to the reader's LED "
                                       "input, held low 2 s on a grant (-1: none)", -1, 4095)
    card_reader_beeper: int = setting(-1, "card_and_face, wiegand: the GPIO number (sysfs) wired to the reader's "
                                          "beeper input: one beep on a grant, three on a denial (-1: none)", -1, 4095)
    card_reader_address: int = setting(1, "card_and_face, osdp: the card reader's OSDP address", 0, 126)
    card_reader_scbk_file: str = setting("", "card_and_face, osdp: file holding the reader's secure channel key "
                                             "(32 hex digits)")
    card_reader_baudrate: int = setting(9600, "card_and_face: the card reader's line speed", 1200, 921600)
    card_seconds: float = setting(10.0, "card_and_face: how long after a card the door waits for its holder's face",
                                  1, 120)


@dataclass(frozen=True)
class RelayConfig:
    port: str = setting("", "serial port of the relay, e.g. /dev/ttyUSB0 (empty: no relay, dry run)")
    protocol: str = setting("lcus", "relay protocol", choices=("lcus", "generic"))
    channel: int = setting(1, "relay channel (LCUS boards have 1 to 8)", 1, 8)
    baudrate: int = setting(9600, "serial speed", 1200, 921600)
    on_hex: str = setting("", "generic protocol: bytes that switch the relay on, as hex")
    off_hex: str = setting("", "generic protocol: bytes that switch the relay off, as hex")
    wiring: str = setting("normally_open", "normally_open: the relay is on to unlock; normally_closed: "
                                            "on to lock (a crash or power cut then unlocks)",
                          choices=("normally_open", "normally_closed"))
    refresh_seconds: float = setting(1.0, "rewrite the current state this often (finds an unplugged relay)",
                                     0.1, 60)


@dataclass(frozen=True)
class InputsConfig:
    door_contact: str = setting("", "door contact: a sysfs GPIO value file or chip:line (empty: none)")
    door_contact_active_low: bool = setting(False, "the contact reads 0 when the door is open")
    exit_button: str = setting("", "request-to-exit button: a sysfs GPIO value file or chip:line (empty: none)")
    exit_button_active_low: bool = setting(True, "the button reads 0 when pressed")
    tamper: str = setting("", "the case's tamper switch: a sysfs GPIO value file or chip:line (empty: none); an "
                              "alarm, and reported to an OSDP panel")
    tamper_active_low: bool = setting(False, "the switch reads 0 when the case is opened")
    power_fail: str = setting("", "the supply monitor's line, active while mains power is lost (empty: none); an "
                                  "alarm, and reported to an OSDP panel")
    power_fail_active_low: bool = setting(True, "the monitor reads 0 while power is lost")
    debounce_ms: float = setting(50.0, "a level must hold this long to count", 0, 5000)
    poll_ms: float = setting(20.0, "how often the inputs are read", 1, 1000)


@dataclass(frozen=True)
class AuditConfig:
    path: str = setting("audit.db", "the audit trail's SQLite file")
    snapshots: bool = setting(True, "keep a small JPEG of the face with each decision")
    snapshot_max_side: int = setting(160, "longest side of a snapshot, pixels", 32, 1024)
    snapshots_max_mb: float = setting(50.0, "oldest snapshots are dropped beyond this total", 0, 100000)
    max_events: int = setting(200000, "oldest events are dropped beyond this count (an alarm at 90%)",
                              100, 100000000)
    max_age_days: float = setting(365.0, "events sent to the site and older than this are dropped", 1, 36500)


@dataclass(frozen=True)
class MqttConfig:
    enabled: bool = setting(False, "connect to the site's MQTT broker")
    host: str = setting("localhost", "broker host name or address")
    port: int = setting(8883, "broker port (8883 is MQTT over TLS, 1883 plain)", 1, 65535)
    site: str = setting("site", "site name: the second level of every topic")
    device: str = setting("door", "this door's name: the third level of its topics")
    protocol: str = setting("auto", "MQTT version: auto tries 5 and falls back to 3.1.1",
                            choices=("auto", "5", "3.1.1"))
    tls: bool = setting(True, "use TLS (then ca_file is required)")
    ca_file: str = setting("", "CA certificate that signed the broker's certificate")
    cert_file: str = setting("", "this door's client certificate (optional)")
    key_file: str = setting("", "the client certificate's private key (owner-only permissions)")
    username: str = setting("", "broker user name (empty: none)")
    password_file: str = setting("", "file holding the broker password (owner-only permissions)")
    signing_key_file: str = setting("", "this machine's own Ed25519 private key, PEM (owner-only permissions): "
                                         "a door's signs its replies, the administrator's signs commands")
    trusted_keys_file: str = setting("", "the public keys this machine trusts, 'ROLE NAME KEY' per line: a door "
                                         "trusts the administrator's, the administrator the doors'")
    keepalive: int = setting(30, "seconds between keep-alive pings", 5, 3600)
    session_expiry_hours: float = setting(168.0, "how long the broker keeps this door's session and "
                                                  "queued commands while it is offline", 0, 8760)
    state_path: str = setting("mqtt-state.db", "applied request ids and replies (replay protection)")
    change_max_age_hours: float = setting(720.0, "gallery changes older than this are refused", 1, 87600)
    unlock_max_age_seconds: float = setting(5.0, "a remote unlock older than this is refused", 0.5, 300)
    read_max_age_seconds: float = setting(60.0, "a read (status, events, ...) older than this is refused", 1, 3600)
    queue_max_commands: int = setting(16, "signed commands waiting to be carried out; more are answered busy",
                                      1, 1000)
    queue_max_kb: int = setting(16384, "kilobytes of signed commands waiting to be carried out", 64, 1048576)
    clock_skew_seconds: float = setting(30.0, "how far in the future a command may be dated", 0, 3600)
    max_payload_kb: int = setting(2048, "largest command accepted, kilobytes", 1, 65536)
    max_photos: int = setting(5, "most photos in one enrolment command", 1, 50)
    max_image_side: int = setting(4096, "largest photo width or height, pixels", 64, 20000)
    events_in_flight: int = setting(20, "audit events published but not yet acknowledged", 1, 1000)
    status_seconds: float = setting(60.0, "republish the status at least this often (it is also "
                                          "published within a second of any change)", 5, 3600)
    home_assistant: bool = setting(False, "publish Home Assistant discovery: the door as a device with "
                                          "read-only sensors and a decision event")
    home_assistant_prefix: str = setting("homeassistant", "Home Assistant's discovery prefix")
    home_assistant_area: str = setting("", "the area Home Assistant suggests for this door (empty: the door's name)")
    home_assistant_snapshots: bool = setting(False, "also show the last decision's picture (a face) as an image "
                                                    "entity: opt-in")


@dataclass(frozen=True)
class UpdateConfig:
    confirm_seconds: float = setting(30.0, "a new version's door must run this long before the update is kept "
                                           "(until then, a failure goes back to the previous version)", 1, 3600)
    download_max_mb: float = setting(200.0, "largest bundle a fleet update may download", 1, 4096)


@dataclass(frozen=True)
class WebConfig:
    enabled: bool = setting(False, "serve the door's web page (a separate process: its crash never stops the door)")
    address: str = setting("0.0.0.0", "address the page listens on (127.0.0.1: this machine only)")
    port: int = setting(8443, "the page's TCP port", 1, 65535)
    https: bool = setting(True, "serve over HTTPS (off only behind a proxy that does TLS: passwords cross the wire)")
    cert_file: str = setting("web-cert.pem", "the page's TLS certificate, PEM (made at first start when missing; "
                                             "replace it with the site's own)")
    key_file: str = setting("web-key.pem", "the certificate's private key, PEM (owner-only permissions)")
    users_file: str = setting("web-users.json", "the page's users and their scrypt password hashes")
    live_dir: str = setting("web-live", "where the door leaves its live frame and status for the page, and the "
                                        "page its requests to the door (on the board: tmpfs)")
    live_fps: float = setting(3.0, "frames per second the live view gets, while someone watches", 0.5, 15)
    session_minutes: float = setting(30.0, "a login ends after this long without a request", 1, 1440)
    login_attempts: int = setting(5, "wrong passwords in a row (per user, and per address) before a lockout", 1, 100)
    lockout_minutes: float = setting(15.0, "how long a lockout lasts", 1, 1440)
    max_upload_mb: float = setting(12.0, "largest request (photo uploads), megabytes", 1, 100)
    max_connections: int = setting(12, "browsers served at once; more wait (a slow one cannot hold them all long)",
                                   2, 100)


@dataclass(frozen=True)
class Config:
    models: ModelsConfig = field(default_factory=ModelsConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    embedder: EmbedderConfig = field(default_factory=EmbedderConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    liveness: LivenessConfig = field(default_factory=LivenessConfig)
    matching: MatchingConfig = field(default_factory=MatchingConfig)
    gallery: GalleryConfig = field(default_factory=GalleryConfig)
    enrolment: EnrolmentConfig = field(default_factory=EnrolmentConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    verification: VerificationConfig = field(default_factory=VerificationConfig)
    door: DoorConfig = field(default_factory=DoorConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    panel: PanelConfig = field(default_factory=PanelConfig)
    inputs: InputsConfig = field(default_factory=InputsConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    update: UpdateConfig = field(default_factory=UpdateConfig)
    web: WebConfig = field(default_factory=WebConfig)


# Command-line options that stand for a setting, the same in every command that takes them:
# the option's argparse name -> the setting it overrides.
FLAGS = {"backend": "models.backend", "models_dir": "models.dir", "rknn_target": "models.rknn_target",
         "camera": "camera.source", "relay_port": "relay.port", "gallery": "gallery.path", "audit": "audit.path"}


def with_flags(config: "Config", options: Any) -> "Config":
    """`config` with every option of FLAGS that `options` (argparse's namespace) gives."""
    raw: Dict[str, Dict[str, Any]] = {}
    for option, name in FLAGS.items():
        value = getattr(options, option, None)
        if value not in (None, ""):
            section, _, key = name.partition(".")
            raw.setdefault(section, {})[key] = value
    return from_dict(raw, "command line", config) if raw else config


def _check_value(section: str, spec, value: Any, source: str) -> Any:
    name = "%s.%s" % (section, spec.name)
    expected = spec.type if isinstance(spec.type, type) else type(spec.default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError("%s: %s must be %s, got %r" % (source, name, expected.__name__, value))
    meta = spec.metadata
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError("%s: %s must be one of %s, got %r"
                          % (source, name, ", ".join(map(str, meta["choices"])), value))
    if meta.get("min") is not None and value < meta["min"]:
        raise ConfigError("%s: %s must be >= %s, got %r" % (source, name, meta["min"], value))
    if meta.get("max") is not None and value > meta["max"]:
        raise ConfigError("%s: %s must be <= %s, got %r" % (source, name, meta["max"], value))
    return value


def from_dict(raw: Dict[str, Any], source: str = "<config>", base: Optional[Config] = None) -> Config:
    problems: list = []
    merged = _merged(base or Config(), raw, source, "", problems)
    if problems:  # every mistake of the file at once, not one per try
        raise ConfigError("; ".join(problems) if len(problems) == 1 else
                          "%s: %d problems: %s" % (source, len(problems),
                                                   "; ".join(p.replace(source + ": ", "", 1) for p in problems)))
    return merged


def _merged(current: Any, values: Dict[str, Any], source: str, prefix: str, problems: list) -> Any:
    """`current` (a config dataclass) with `values` (a TOML table) applied, each checked against
    its declaration; a nested dataclass is a sub-table ([enrolment.quality]). Each mistake goes
    into `problems`."""
    declared = {f.name: f for f in fields(current)}
    updates = {}
    for key, value in values.items():
        name = prefix + key
        if key not in declared:
            if not prefix:
                problems.append("%s: unknown section [%s]; known sections: %s" % (source, key, ", ".join(declared)))
            else:
                problems.append("%s: unknown key '%s' in [%s]; known keys: %s%s"
                                % (source, key, prefix.rstrip("."), ", ".join(declared), _moved(prefix, key)))
            continue
        if is_dataclass(getattr(current, key)):
            if not isinstance(value, dict):
                problems.append("%s: [%s] must be a table" % (source, name))
                continue
            updates[key] = _merged(getattr(current, key), value, source, name + ".", problems)
        else:
            try:
                updates[key] = _check_value(prefix.rstrip("."), declared[key], value, source)
            except ConfigError as err:
                problems.append(str(err))
    return replace(current, **updates)


def _moved(prefix: str, key: str) -> str:
    if prefix == "enrolment." and key in {f.name for f in fields(QualityConfig)}:
        return " (enrolment photo limits moved to [enrolment.quality]: put %s there)" % key
    return ""


def load(path: Optional[Path] = None) -> Config:
    if path is None:
        return Config()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config file %s does not exist" % path) from None
    return from_dict(_parsed(text, path), str(path))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"%s"' % value.replace("\\", "\\\\").replace('"', '\\"')
    return repr(value)


def defaults_toml() -> str:
    """The documented default config file, generated from the declarations."""
    lines: list = []
    for section in fields(Config):
        _table_lines(section.name, section.default_factory(), lines)
    return "\n".join(lines)


def _table_lines(name: str, table: Any, lines: list) -> None:
    lines.append("[%s]" % name)
    nested = []
    for spec in fields(table):
        value = getattr(table, spec.name)
        if is_dataclass(value):
            nested.append((spec.name, value))
            continue
        lines.append("# %s" % spec.metadata["doc"])
        lines.append("%s = %s" % (spec.name, _toml_value(value)))
    lines.append("")
    for key, value in nested:
        _table_lines("%s.%s" % (name, key), value, lines)


def set_in_file(path: Path, name: str, value: Any) -> str:
    """The text of config file `path` with setting `name` ("matching.distance_threshold") set to
    `value`, everything else kept as written, comments included (see set_in_text)."""
    return set_in_text(Path(path).read_text(encoding="utf-8"), name, value, str(path))


def set_in_text(text: str, name: str, value: Any, path: str = "<config>") -> str:
    """`text` (a config file's) with one setting changed and everything else kept as written. The
    value is checked against its declaration, and the new text must load with that one setting
    changed and nothing else."""
    section, _, key = name.rpartition(".")
    table: Any = Config()
    for part in section.split("."):
        table = getattr(table, part, None)
        if not is_dataclass(table):
            raise ConfigError("no config section [%s]" % section)
    declared = {f.name: f for f in fields(table)}
    if key not in declared or is_dataclass(getattr(table, key)):
        raise ConfigError("no setting %s; [%s] has %s" % (name, section, ", ".join(declared)))
    value = _check_value(section, declared[key], value, "the new value")
    before = _parsed(text, path)
    line = "%s = %s\n" % (key, _toml_value(value))
    lines = text.splitlines(keepends=True)
    current, header, done = None, None, False
    for number, raw in enumerate(lines):
        stripped = raw.split("#", 1)[0].strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            current = stripped.strip("[]").strip()
            header = number if current == section else header
        elif current == section and stripped.partition("=")[0].strip() == key and "=" in stripped:
            lines[number], done = line, True
            break
    if not done and header is not None:
        lines.insert(header + 1, line)
    elif not done:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines.append(("\n" if text.strip() else "") + "[%s]\n" % section + line)
    updated = "".join(lines)
    expected = _with(before, section.split(".") + [key], value)
    if _parsed(updated, path) != expected:
        raise ConfigError("%s: could not change %s alone (an unusual layout?); edit the file by hand" % (path, name))
    return updated


def _parsed(text: str, path) -> Dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError("%s is not valid TOML: %s" % (path, err)) from err


def _with(raw: Dict[str, Any], keys: list, value: Any) -> Dict[str, Any]:
    copy = dict(raw)
    if len(keys) == 1:
        copy[keys[0]] = value
    else:
        copy[keys[0]] = _with(copy.get(keys[0], {}), keys[1:], value)
    return copy


def validate(config: Config, source: str = "<config>", relay: bool = True) -> None:
    """Every rule across settings and files that `facegate run` would otherwise meet later, so
    `config --check` and `run` agree: ConfigError listing each problem, one per line. `relay`
    False: run --no-relay, which opens none."""
    from appliance.door.relay import protocol_from_config
    from appliance.door.schedule import parse_schedule
    from appliance.recognition.calibration import path_for
    from appliance.models import load_manifest

    problems = []

    def check(rule) -> None:
        try:
            rule()
        except ConfigError as err:
            problems.append(str(err))

    check(lambda: parse_schedule(config.door.always_open))
    if config.door.time_zone:
        from appliance.door.access_rules import zone

        check(lambda: zone(config.door.time_zone))
    check(lambda: protocol_from_config(config.relay))
    manifest = load_manifest()
    for key, model_id in (("models.detector", config.models.detector), ("models.embedder", config.models.embedder)):
        if model_id not in manifest:
            problems.append("%s %r is not in the manifest; known: %s" % (key, model_id, ", ".join(sorted(manifest))))
    if (config.models.embedder in manifest and config.matching.distance_threshold <= 0
            and not path_for(config.models.embedder).is_file()):
        problems.append("embedder %s has no calibration, so no threshold follows from matching.false_accept_target: "
                        "set matching.distance_threshold" % config.models.embedder)
    if relay and config.relay.port and not Path(config.relay.port).exists():
        problems.append("cannot open relay port %s: it does not exist (check the cable and relay.port, or "
                        "run with --no-relay)" % config.relay.port)
    if config.door.watchdog_device and not Path(config.door.watchdog_device).exists():
        problems.append("door.watchdog_device %s does not exist (empty turns the watchdog off)"
                        % config.door.watchdog_device)
    if all(model_id in manifest for model_id in (config.models.detector, config.models.embedder)):
        problems.extend(_missing_models(config))  # an unknown model is said once, above
        check(lambda: _refuse_loose_threshold(config))
    from appliance.camera import source_kind

    if config.camera.source and source_kind(config.camera.source) == "file" and not Path(config.camera.source).exists():
        problems.append("camera.source %s does not exist (a video file; a camera is /dev/videoN, a stream "
                        "rtsp://...)" % config.camera.source)
    problems.extend(mqtt_problems(config.mqtt))
    problems.extend(panel_problems(config))
    if problems:
        raise ConfigError("%s: %s" % (source, "; ".join(problems)))


def panel_problems(config: Config) -> List[str]:
    """A reader with nowhere to report to, or a panel without its secure channel key."""
    panel, problems = config.panel, []
    if config.door.mode == "card_and_face":
        if panel.card_reader_protocol == "wiegand":
            if not panel.card_reader_data0 or not panel.card_reader_data1 \
                    or panel.card_reader_data0 == panel.card_reader_data1:
                problems.append("panel.card_reader_protocol wiegand needs panel.card_reader_data0 and "
                                "card_reader_data1, the two GPIO inputs wired to the reader's DATA0 and DATA1 "
                                "(different lines)")
        elif not panel.card_reader_port:
            problems.append("door.mode card_and_face needs panel.card_reader_port, the card reader's serial port or "
                            "input device")
        if panel.card_reader_protocol == "osdp":
            if not panel.card_reader_scbk_file:
                problems.append("panel.card_reader_protocol osdp needs panel.card_reader_scbk_file, the reader's secure "
                                "channel key (a card read in the clear can be replayed by anyone on the wire)")
            elif not Path(os.path.expanduser(panel.card_reader_scbk_file)).is_file():
                problems.append("panel.card_reader_scbk_file %s does not exist" % panel.card_reader_scbk_file)
        return problems
    if panel.denial_card:
        from appliance.errors import FaceGateError
        from appliance.panel.cards import parse_card
        from appliance.panel.wiegand import FORMATS

        try:
            facility, number = parse_card(panel.denial_card)
            facility_bits, card_bits = FORMATS[panel.wiegand_bits]
            if facility >= 1 << facility_bits or number >= 1 << card_bits:
                problems.append("panel.denial_card %s does not fit Wiegand %d" % (panel.denial_card,
                                                                                  panel.wiegand_bits))
        except FaceGateError as err:
            problems.append("panel.denial_card: %s" % err)
    if config.door.mode != "relay" and not panel.protocol:
        problems.append("door.mode %s sends a granted person's card to an access panel: set panel.protocol "
                        "(osdp and its port, or wiegand and its lines)" % config.door.mode)
    if panel.protocol == "wiegand":
        if panel.wiegand_data0 < 0 or panel.wiegand_data1 < 0 or panel.wiegand_data0 == panel.wiegand_data1:
            problems.append("panel.protocol wiegand needs panel.wiegand_data0 and wiegand_data1, the two GPIO lines "
                            "wired to the panel's DATA0 and DATA1 (different numbers)")
    if panel.protocol == "osdp":
        if not panel.port:
            problems.append("panel.protocol osdp needs panel.port, the RS-485 adapter (e.g. /dev/ttyUSB1)")
        if not panel.scbk_file:
            problems.append("panel.protocol osdp needs panel.scbk_file, the panel's secure channel key (a card read "
                            "sent in the clear can be replayed by anyone on the wire)")
        elif not Path(os.path.expanduser(panel.scbk_file)).is_file():
            problems.append("panel.scbk_file %s does not exist" % panel.scbk_file)
    return problems


def mqtt_problems(mqtt: "MqttConfig") -> list:
    """What a door with MQTT on needs and lacks: its TLS files, account, keys (`config --check`,
    `run` and `selftest` all ask this)."""
    problems: list = []
    if not mqtt.enabled:
        return problems
    if mqtt.tls and not mqtt.ca_file:
        problems.append("mqtt.tls is on but mqtt.ca_file is empty: give the CA certificate that signed the "
                        "broker's certificate (or set mqtt.tls = false on a trusted network)")
    if not mqtt.signing_key_file:
        problems.append("mqtt.signing_key_file is empty: make this door's own key with 'facegate keys init'")
    if not mqtt.trusted_keys_file:
        problems.append("mqtt.trusted_keys_file is empty: give the file with the administrator's public key "
                        "('facegate admin keygen' writes it)")
    prefix = mqtt.home_assistant_prefix
    if mqtt.home_assistant and (not prefix or prefix.startswith("/") or prefix.endswith("/")
                                or any(c in prefix for c in "+#\0")):
        problems.append("mqtt.home_assistant_prefix %r is not a topic prefix: give Home Assistant's "
                        "discovery prefix (usually homeassistant)" % prefix)
    for key in ("ca_file", "cert_file", "key_file", "password_file", "signing_key_file", "trusted_keys_file"):
        named = getattr(mqtt, key)
        if named and not Path(named).is_file():
            problems.append("mqtt.%s %s does not exist" % (key, named))
    problems.extend(_key_problems(mqtt))
    return problems


def _refuse_loose_threshold(config: Config) -> None:
    """A hand-set threshold that admits more strangers than the target allows, for the gallery
    as it is now (one person when there is none yet), is refused unless the site says so."""
    matching = config.matching
    if matching.distance_threshold <= 0 or matching.allow_looser_than_target:
        return
    from appliance.recognition.decision import looseness

    danger = looseness(config, config.models.embedder, gallery_template_counts(config.gallery.path),
                       matching.distance_threshold)
    if danger:
        raise ConfigError("matching.distance_threshold: %s; lower it (or 0 for the target's), or set "
                          "matching.allow_looser_than_target = true to accept that" % danger)


def gallery_template_counts(path: str) -> list:
    """Templates per person in the gallery at `path`, read without creating it; [1] if absent."""
    import sqlite3

    if not Path(path).is_file():
        return [1]
    try:
        connection = sqlite3.connect("file:%s?mode=ro" % Path(path).resolve(), uri=True)
        try:
            rows = connection.execute("SELECT COUNT(*) FROM templates GROUP BY person_id").fetchall()
        finally:
            connection.close()
    except sqlite3.Error:
        return [1]  # not a gallery we can read: the run itself says why
    return [row[0] for row in rows] or [1]


def _key_problems(mqtt: "MqttConfig") -> list:
    """What `run` would refuse in a door's keys: an old shared site key, loose permissions, a
    trusted keys file without the administrator's."""
    from appliance.keys import TrustedKeys, load_private

    problems = []
    if mqtt.signing_key_file and Path(mqtt.signing_key_file).is_file():
        try:
            load_private(mqtt.signing_key_file)
        except ConfigError as err:
            problems.append(str(err))
    if mqtt.trusted_keys_file and Path(mqtt.trusted_keys_file).is_file():
        try:
            if not TrustedKeys.load(mqtt.trusted_keys_file).of_role("admin"):
                problems.append("mqtt.trusted_keys_file %s names no administrator key ('admin NAME KEY', from "
                                "'facegate admin keygen'): no command could be accepted" % mqtt.trusted_keys_file)
        except ConfigError as err:
            problems.append(str(err))
    return problems


def _missing_models(config: Config) -> list:
    from appliance.errors import FaceGateError
    from appliance.inference import NPU_BACKENDS
    from appliance.vision.pipeline import model_files

    try:
        files = model_files(config)
    except FaceGateError as err:
        return [str(err)]
    missing = ["%s (%s)" % (path, model_id) for model_id, path in files if not path.is_file()]
    if not missing:
        return []
    how = ("install the board bundle's models" if config.models.backend in NPU_BACKENDS
           else "run 'facegate models install' (or give models.dir)")
    return ["model files missing for backend %s: %s: %s" % (config.models.backend, ", ".join(missing), how)]


def notes(config: Config) -> list:
    """What is missing now but need not stop the door: it starts with a fault that clears when
    the part appears (the camera)."""
    source = config.camera.source
    device = source if source.startswith("/dev/") else source.partition("device=")[2].split(" ")[0]
    if device.startswith("/dev/") and not Path(device).exists():
        return ["camera %s is not there now: the door starts locked with a camera fault and waits for it" % device]
    return []

