"""`facegate run`: the door's loop, and the wiring of camera, recognition, door, inputs and audit.

The main loop takes the newest frame, decides whether it needs a detection (idle saving:
full rate while a face is in view or something moves, `idle_fps` otherwise), feeds the
verifier and turns its outcome into door triggers. Startup locks the relay before anything
else; every exit path locks it again.
"""

import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import cv2
import numpy as np

from appliance.audit import AuditStore, Event
from appliance.camera import Frame, LatestFrameReader
from appliance.config import Config
from appliance.door.controller import DoorController
from appliance.door.inputs import InputWatcher
from appliance.door.relay import NoRelay, Relay
from appliance.door.states import Access
from appliance.recognition.attempt import attempt_event
from appliance.recognition.verification import DENY, GRANT, LOST, NOTHING, Outcome, Verifier
from appliance.door.watchdog import Watchdog
from appliance.gallery.index import GalleryIndex
from appliance.panel.cards import parse_card
from appliance.errors import ConfigError, FaceGateError, GalleryError
from appliance.gallery.store import GalleryStore

log = logging.getLogger(__name__)

_VERIFYING_STATES = (Access.idle, Access.detecting, Access.verifying)


@dataclass
class Counters:
    frames: int = 0
    detected: int = 0  # frames the detector ran on
    skipped: int = 0  # frames idle saving left alone
    decisions: Dict[str, int] = field(default_factory=lambda: {"grant": 0, "deny": 0})


class MotionGate:
    """Cheap change detection on a 64x48 grey thumbnail, to wake full-rate detection at once."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._previous: Optional[np.ndarray] = None

    def moved(self, image: np.ndarray) -> bool:
        small = cv2.cvtColor(cv2.resize(image, (64, 48), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
        previous, self._previous = self._previous, small
        if previous is None:
            return True
        changed = np.count_nonzero(cv2.absdiff(small, previous) > 12)
        return changed > self.threshold * small.size


class LostThreads:
    """Where the door's worker threads report their death: each is a fault (the door locks at
    once) and ends the service loop, which then stops feeding the watchdog."""

    def __init__(self, controller: DoorController) -> None:
        self.controller = controller
        self.messages: List[str] = []
        self.any = threading.Event()

    def __call__(self, name: str, err: BaseException) -> None:
        message = "the %s thread stopped: %s: %s" % (name, type(err).__name__, err)
        self.messages.append(message)
        self.controller.report_fault("thread", message)
        self.any.set()


class Service:
    def __init__(self, config: Config, verifier: Verifier, controller: DoorController,
                 reader: LatestFrameReader, inputs: Optional[InputWatcher] = None,
                 watchdog: Optional[Watchdog] = None, lost_threads: Optional[LostThreads] = None) -> None:
        self.config = config
        self.verifier = verifier
        self.controller = controller
        self.reader = reader
        self.inputs = inputs
        self.watchdog = watchdog
        self.counters = Counters()
        self.lost_threads = lost_threads or LostThreads(controller)
        self.failure: Optional[str] = None  # why the service stopped on its own, if it did
        self.owned = []  # audit, gallery, pipeline: closed after the door is locked
        self.panel = None  # the access panel a reader reports grants to (door.mode)
        self.card_reader = None  # card + face: the reader whose cards name the person
        self.agent = None  # the MQTT side, when enabled
        self.live = None  # what the web page shows and asks (web/live.py), when the page is on
        self.version = ""  # the installed version's name, as `update --status` shows it
        self.stop_event = threading.Event()
        # (seconds, callback): called once the door loop has run that long (an update's proof)
        self.on_proven: Optional[tuple] = None
        self._motion = MotionGate(config.verification.motion_threshold)
        self._last_detection = -1e9
        self._next_refresh = 0.0
        self._reported_status: Optional[tuple] = None  # (tamper, power lost) as the panel last heard it
        self.denial_card: Optional[tuple] = None  # (facility, number) sent to the panel on a denial

    def stop(self) -> None:
        self.stop_event.set()

    def _needs_detection(self, frame: Frame) -> bool:
        moved = self._motion.moved(frame.image)  # every frame, so the next comparison is fresh
        if self.verifier.busy or self.controller.access is not Access.idle:
            return True
        return moved or frame.captured - self._last_detection >= 1.0 / self.config.verification.idle_fps

    def run(self) -> Counters:
        """Run until the source ends, `stop()` or a worker thread dies (then `failure` says
        which); the relay is locked on every way out."""
        started = time.monotonic()
        try:
            while not self.stop_event.is_set():
                frame = self.reader.latest(timeout=0.2)
                if self.lost_threads.any.is_set():
                    # never feed the watchdog for a door that lost a part of itself
                    self.failure = "; ".join(self.lost_threads.messages)
                    break
                now = time.monotonic()
                self.controller.tick(now)
                self._take_cards(now)
                if self.watchdog is not None:
                    self.watchdog.feed(now)
                if self.on_proven is not None and now - started >= self.on_proven[0]:
                    callback, self.on_proven = self.on_proven[1], None
                    callback()
                if now >= self._next_refresh:
                    self._next_refresh = now + 1.0
                    self._refresh_gallery()
                    self._check_panel()
                if frame is None:
                    if self.live is not None:
                        self.live.offer(None)
                    if self.reader.ended:
                        break
                    continue
                self.counters.frames += 1
                if not self._needs_detection(frame):
                    self.counters.skipped += 1
                    if self.live is not None:
                        self.live.offer(frame.image)
                    continue
                outcome = self.process(frame)
                if self.live is not None:
                    self.live.offer(frame.image, outcome, self.verifier.too_small,
                                    self.config.verification.min_face_pixels)
        finally:
            self.close()
        return self.counters

    def _refresh_gallery(self) -> None:
        """Enrolments and removals apply without a restart. A gallery that cannot be read (corrupt
        on disk, its disk failing) is a fault that locks the door, cleared once it reads again."""
        try:
            self.verifier.refresh()
        except (sqlite3.Error, GalleryError) as err:
            self.controller.report_fault("gallery", "cannot read the gallery %s: %s (restore it: 'facegate gallery "
                                                    "import BACKUP', or re-enrol)" % (self.config.gallery.path, err))
            return
        self.controller.clear_fault("gallery")

    def process(self, frame: Frame) -> Outcome:
        self._last_detection = frame.captured
        self.counters.detected += 1
        access = self.controller.access
        outcome = self.verifier.step(frame.image, frame.captured, frame.number,
                                     verify=access in _VERIFYING_STATES)
        self._apply(outcome, frame)
        return outcome

    def _apply(self, outcome: Outcome, frame: Frame) -> None:
        controller = self.controller
        if outcome.kind == NOTHING:
            return
        if outcome.kind == LOST:
            if controller.may_face_lost():
                controller.face_lost()
            return
        if controller.access is Access.idle:
            controller.face_appeared()
        if outcome.decision is not None and controller.access is Access.detecting:
            controller.face_tracked()  # the first good frame: evidence is being gathered
        if outcome.kind == GRANT:
            self._grant(outcome, frame)
        elif outcome.kind == DENY:
            self._deny(outcome, frame)

    def _event(self, kind: str, outcome: Outcome, frame: Frame) -> Event:
        audit = self.config.audit
        return attempt_event(kind, outcome, frame.image, self.verifier.model_id,
                             audit.snapshot_max_side if audit.snapshots else 0)

    def _grant(self, outcome: Outcome, frame: Frame) -> None:
        event = self._event("grant", outcome, frame)
        person = outcome.decision.match.person
        if person.card:
            event.detail["card"] = "%d:%d" % person.card
        if self.panel is not None:  # recorded before it is sent
            event.detail["panel"] = ("card %d:%d" % person.card if person.card
                                     else "nothing sent: %s has no card ('facegate people card')" % person.name)
        if self.controller.grant_person(event, outcome.track.first_captured):
            self.counters.decisions["grant"] += 1
            if self.panel is not None and person.card:
                self._tell_panel(*person.card)
            self._answer_at_card_reader(True)

    def _tell_panel(self, facility: int, number: int) -> None:
        """A reader's grant: the card goes to the access panel. A panel that cannot be told is a
        fault (the door it drives stays locked), cleared once its secure channel is up again."""
        try:
            log.info("panel: sent %s", self.panel.send(facility, number))
        except FaceGateError as err:
            self.controller.report_fault("panel", str(err))

    def _take_cards(self, now: float) -> None:
        """Card + face: a card names the person whose face the next attempt is checked against; an
        unknown card, and a card whose holder's face does not come in time, are denials."""
        if self.card_reader is None:
            return
        expired = self.verifier.card_expired(now)
        if expired is not None:
            person, card, _ = expired
            self._card_denial(card, "card %s (%s): no face within %g s" % (card, person.name,
                                                                          self.config.panel.card_seconds), person)
        card = self.card_reader.take()
        if card is None:
            return
        text = "%d:%d" % card
        person = self.verifier.index.holder_of(card)
        if person is None:
            self._card_denial(text, "unknown card %s: nobody in the gallery holds it" % text)
            return
        log.info("card %s is %s's: their face is checked", text, person.name)
        self.verifier.expect_card(person, text, now + self.config.panel.card_seconds)

    def _card_denial(self, card: str, reason: str, person=None) -> None:
        detail = {"reason": reason, "card": card}
        if person is not None:
            detail["nearest"] = {"id": person.id, "name": person.name}
        self.controller.emit(Event("deny", detail=detail))
        self.counters.decisions["deny"] += 1
        self._answer_at_card_reader(False)

    def _answer_at_card_reader(self, granted: bool) -> None:
        """Card + face: the answer where the card was shown (the reader's LED and beeper, where it
        has them and this door drives them)."""
        if self.card_reader is None:
            return
        try:
            self.card_reader.indicate(granted)
        except (FaceGateError, OSError) as err:  # the answer is a courtesy: the decision stands
            log.warning("card reader: could not show the answer: %s", err)

    def _check_panel(self) -> None:
        if self.panel is None:
            return
        self._report_local_status()
        if self.panel.secure:
            self.controller.clear_fault("panel")
        elif "panel" not in self.controller.faults:
            self.controller.report_fault("panel", "the access panel has no secure channel with this reader (check "
                                                  "panel.port, its address, baud rate and SCBK)")

    def _report_local_status(self) -> None:
        """Tamper and power to a panel that takes them (OSDP): at start, whenever either changes,
        and again whenever the secure channel comes back (a restarted panel knows nothing)."""
        if not hasattr(self.panel, "report_status"):
            return
        if not self.panel.secure:
            self._reported_status = None
            return
        states = self.inputs.states() if self.inputs is not None else {}
        status = (bool(states.get("tamper")), bool(states.get("power_fail")))
        if status != self._reported_status:
            self.panel.report_status(*status)
            self._reported_status = status
            log.info("panel: told tamper %s, power %s", "OPEN" if status[0] else "closed",
                     "LOST" if status[1] else "ok")

    def _deny(self, outcome: Outcome, frame: Frame) -> None:
        event = self._event("deny", outcome, frame)
        holder = outcome.decision.match.person
        if self.card_reader is not None and holder is not None and holder.card:
            event.detail["card"] = "%d:%d" % holder.card  # the card shown with the wrong face
        event.latency_ms = round((time.monotonic() - outcome.track.first_captured) * 1000, 1)
        denial_card = self._denial_card()
        if denial_card is not None:  # recorded before it is sent
            event.detail["panel"] = "denial card %d:%d" % denial_card
        self.controller.deny_face(event)
        self.counters.decisions["deny"] += 1
        if denial_card is not None:
            self._tell_panel(*denial_card)
        if "card" in event.detail:
            self._answer_at_card_reader(False)

    def _denial_card(self) -> Optional[tuple]:
        """The card a reader sends the panel on a denial (panel.denial_card), unless somebody holds
        it now: the panel would open the door for them."""
        card = self.denial_card
        if self.panel is None or card is None:
            return None
        holder = self.verifier.index.holder_of(card)
        if holder is not None:
            log.error("panel: denial card %d:%d is %s's card now: denials are not sent (choose another "
                      "panel.denial_card)", card[0], card[1], holder.name)
            return None
        return card

    def status(self) -> dict:
        """The door as its web page shows it (written by the live feed's thread: plain reads)."""
        controller = self.controller
        return {"running": True, "time": time.time(), "pid": os.getpid(),
                "access": controller.access.name, "door": controller.door.name, "faults": dict(controller.faults),
                "relay": "connected" if controller.relay.connected else "not connected",
                "decision": self.verifier.threshold.describe(), "mode": self.config.door.mode,
                "liveness": self.config.liveness.enabled, "frames": self.counters.frames,
                "decisions": dict(self.counters.decisions), "version": self.version,
                "inputs": self.inputs.states() if self.inputs is not None else {},
                # what the access panel told this reader to show and sound: its answer in reader mode
                "panel": self.panel.indication.state() if hasattr(self.panel, "indication") else None}

    def web_request(self, request: dict) -> dict:
        """The web page's requests (web/live.py), carried out here so that only the door moves its
        relay and changes its rule; each is audited with the page user's origin."""
        origin = request.get("origin") or {}
        verb = request.get("verb")
        if verb == "relay_test":
            opened = self.controller.remote_unlock("relay test from the web page", origin, source="web")
            return {"ok": opened, "error": None if opened else "the door is busy or in a fault: not opened"}
        if verb == "set_threshold":
            previous = self.verifier.threshold.value
            self.verifier.set_matching(float(request["distance_threshold"]), self.config.matching.min_margin,
                                       force=bool(request.get("force")))
            self.controller.emit(Event("change", detail={"action": "set_threshold", "origin": origin,
                                                         "distance_threshold": request["distance_threshold"],
                                                         "previous_threshold": previous}))
            return {"ok": True, "decision": self.verifier.threshold.describe()}
        return {"ok": False, "error": "unknown request %r" % verb}

    def close(self) -> None:
        """Lock first, then release everything else."""
        self.controller.shutdown()
        if self.watchdog is not None and self.failure:
            self.watchdog.close(deliberate=False)  # the board resets unless a restart feeds it
        for part in [self.inputs, self.reader, self.watchdog, self.agent, self.live] + self.owned:
            if part is not None:
                try:
                    part.stop() if part is self.agent else part.close()
                except Exception as err:  # closing must go on: the door is already locked
                    log.error("closing %s: %s", type(part).__name__, err)


def build_service(config: Config, pipeline=None, use_relay: bool = True) -> Service:
    """Build the service from a config; the relay is opened and locked first, and locked again on
    any error while the rest starts."""
    from appliance.vision.pipeline import FacePipeline

    # a reader's grant goes to the access panel, which drives the lock: the relay is not this door's
    relay = Relay.from_config(config.relay) if use_relay and config.door.mode != "reader" else NoRelay()
    parts = []
    reader = None
    try:
        audit = AuditStore(config.audit.path, config.audit.max_events,
                           int(config.audit.snapshots_max_mb * (1 << 20)), config.audit.max_age_days)
        parts.append(audit)
        controller = DoorController(config.door, relay, audit, config.relay.refresh_seconds,
                                    config.camera.reconnect_max_seconds)
        lost_threads = LostThreads(controller)
        if pipeline is None:
            pipeline = FacePipeline.from_config(config)
            parts.append(pipeline)
        store = GalleryStore(config.gallery.path, model_id=pipeline.embedder.model_id,
                             max_templates=config.gallery.max_templates)
        parts.append(store)
        index = GalleryIndex(store)
        if not len(index):
            log.warning("the gallery %s is empty: nobody will be granted", config.gallery.path)
        if not config.liveness.enabled:
            log.warning("liveness is OFF (liveness.enabled = false): a photo or a screen showing an enrolled "
                        "person will be let in")
        camera = config.camera
        reader = LatestFrameReader(camera.source, camera.realtime, camera.loop, camera.folder_fps,
                                   camera.reconnect_max_seconds,
                                   on_lost=lambda message: controller.report_fault("camera", message),
                                   on_back=lambda: controller.clear_fault("camera"),
                                   on_died=lost_threads, every_frame=camera.every_frame,
                                   size=(camera.width, camera.height), fps=camera.fps)
        inputs = InputWatcher.from_config(config.inputs, lambda name, active: _on_input(controller, name, active),
                                          lambda message: controller.report_fault("inputs", message),
                                          lambda: controller.clear_fault("inputs"))
        inputs.on_died = lost_threads
        if inputs.states().get("door_contact"):
            controller.contact_changed(door_open=True)  # open at start while locked: reported
        notify_socket = os.environ.get("NOTIFY_SOCKET")  # set by systemd for Type=notify units
        watchdog = Watchdog(config.door.watchdog_device, notify_socket=notify_socket) \
            if config.door.watchdog_device or notify_socket else None
        verifier = Verifier(config, pipeline, index)
        verifier.threshold  # noqa: B018 - computed and logged now: without a calibration, refused at start
        panel = card_reader = denial_card = None
        if config.door.mode != "relay":
            from appliance.config import panel_problems

            if panel_problems(config):
                raise ConfigError("; ".join(panel_problems(config)))
        if config.door.mode in ("reader", "relay_and_reader"):
            from appliance.panel import from_config as panel_from_config

            denial_card = parse_card(config.panel.denial_card) if config.panel.denial_card else None
            holder = index.holder_of(denial_card) if denial_card else None
            if holder is not None:
                raise ConfigError("panel.denial_card %s is %s's card: a denial would open the door for them; choose a "
                                  "card nobody holds" % (config.panel.denial_card, holder.name))
            panel = panel_from_config(config.panel)
            parts.append(panel)
        if config.door.mode == "card_and_face":
            from appliance.panel.card_reader import card_reader_from_config

            card_reader = card_reader_from_config(config.panel,
                                                  lambda message: controller.report_fault("card_reader", message),
                                                  lambda: controller.clear_fault("card_reader"), lost_threads)
            parts.append(card_reader)
        agent = None
        if config.mqtt.enabled:
            from appliance.mqtt.device import DeviceAgent

            agent = DeviceAgent(config, controller, audit, config.gallery.path, pipeline.embedder.model_id,
                                pipeline, set_matching=verifier.set_matching, on_died=lost_threads,
                                matching_state=lambda: verifier.threshold.as_dict())
    except BaseException:
        relay.close()
        for part in [reader] + list(reversed(parts)):
            if part is not None:
                part.close()
        raise
    service = Service(config, verifier, controller, reader, inputs, watchdog, lost_threads)
    service.owned = list(reversed(parts))  # a pipeline passed in belongs to the caller
    service.agent = agent
    service.panel = panel
    service.denial_card = denial_card
    service.card_reader = card_reader
    if config.web.enabled:
        from appliance.web.live import LiveFeed

        service.live = LiveFeed(config.web.live_dir, config.web.live_fps, service.status, service.web_request)
    inputs.start()
    if agent is not None:
        agent.start()
    return service


def _on_input(controller: DoorController, name: str, active: bool) -> None:
    if name == "exit_button":
        if active:
            controller.exit_pressed()
    elif name == "door_contact":
        controller.contact_changed(door_open=active)
    elif name in ("tamper", "power_fail"):
        # an alarm, not a fault: the door goes on deciding (a panel, when there is one, hears it too)
        what = {"tamper": ("the case was opened", "the case was closed"),
                "power_fail": ("mains power lost", "mains power back")}[name]
        controller.emit(Event("alarm", detail={"alarm": name, "active": active, "message": what[0 if active else 1]}))
