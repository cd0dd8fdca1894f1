"""The door's MQTT side: the wiring of its status, the audit outbox (mqtt/outbox.py) and its
signed commands: checked here, then dispatched to the gallery's verbs (mqtt/gallery_verbs.py) or
the door's own (below). Topics: mqtt/topics.py.

Checks run in this order and a failure is an error reply that changes nothing: retained,
size and shape (mqtt/payload.py), signature, verb and target against the topic, age,
repeated request id. Until the signature has been checked the sender is nobody: such a
request is answered only on this door's own reply topic, whatever response topic it names.
"""

import datetime
import hashlib
import json
import logging
import queue
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from appliance import __version__, threads
from appliance.audit import AuditStore, Event
from appliance.config import Config
from appliance.errors import CommandError, GalleryError
from appliance.gallery.enrol import Enroller
from appliance.gallery.store import GalleryStore
from appliance.mqtt import home_assistant, topics
from appliance.mqtt.gallery_verbs import GalleryVerbs
from appliance.mqtt.ledger import Ledger
from appliance.mqtt.link import MqttLink
from appliance.mqtt.outbox import Outbox
from appliance.mqtt.history_verbs import HistoryVerbs
from appliance.mqtt.payload import check_age, check_topic, parse_envelope, plain_text, text_field
from appliance.mqtt.signing import load_site_key, verify

log = logging.getLogger(__name__)

GALLERY_VERBS = ("enroll", "add_photos", "remove", "disable", "enable")
# what changes who may enter or the decision rule: each is an audit event with its origin
AUDITED_VERBS = GALLERY_VERBS + ("set_threshold",)
# answers that change nothing: not kept in the ledger (a repeat simply reads again)
READ_VERBS = ("ping", "status", "list", "get", "events", "snapshot")


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def decision_summary(event: Event) -> Dict[str, Any]:
    return {"kind": event.kind, "person_id": event.person_id, "person_name": event.person_name,
            "time": event.time, "sequence": event.id}


class DeviceAgent:
    def __init__(self, config: Config, controller, audit: AuditStore, gallery_path: str,
                 model_id: str, pipeline=None,
                 set_matching: Optional[Callable[[float, float], None]] = None,
                 link: Optional[MqttLink] = None, on_died: Optional[threads.DeathCallback] = None,
                 matching_state: Optional[Callable[[], Dict[str, Any]]] = None) -> None:
        self.config = config
        self.mqtt = config.mqtt
        self.controller = controller
        self.audit = audit
        self.model_id = model_id
        self.set_matching = set_matching
        self.matching_state = matching_state  # the decision rule as the door applies it now
        self.key = load_site_key(self.mqtt.signing_key_file)
        self.key_id = hashlib.sha256(self.key).hexdigest()[:12]  # names the key in audit events, never reveals it
        self._origin: Dict[str, Any] = {}
        # its own connection: gallery writes here never interleave with the door loop's reads
        self.store = GalleryStore(gallery_path, model_id=model_id,
                                  max_templates=config.gallery.max_templates)
        # photo (BGR) -> Template with this door's models and the enrolment quality limits
        template_maker = Enroller(config, pipeline, self.store).template_from_image if pipeline else None
        self.gallery = GalleryVerbs(self.store, model_id, self.mqtt, template_maker)
        self.ledger = Ledger(self.mqtt.state_path, self.mqtt.change_max_age_hours * 3600 + 3600)
        # the broker publishes this when it loses us; it cannot know when, so `seen` keeps that
        will = (topics.status(self.mqtt.site, self.mqtt.device),
                json.dumps({"state": "offline", "device": self.mqtt.device, "reason": "connection lost"}).encode())
        self.link = link or MqttLink(self.mqtt, "facegate-%s-%s" % (self.mqtt.site, self.mqtt.device),
                                     will=will)
        self.link.subscriptions = [topics.commands(self.mqtt.site, self.mqtt.device),
                                   topics.commands(self.mqtt.site, topics.ALL)]
        self.outbox = Outbox(self.link, audit, self.mqtt.site, self.mqtt.device, self.mqtt.events_in_flight)
        self.link.on_message = self._received
        self.link.on_published = self.outbox.acknowledged
        self.link.on_connected.append(self._on_connect)
        self.link.on_disconnected.append(self._on_disconnect)
        self._commands: "queue.Queue" = queue.Queue()
        self._wake = self.outbox.lock  # an acknowledgement, an event or a stop wakes the outbox loop
        self._next_status = self._next_sync = time.monotonic() + 60  # connecting does both at once
        self._status_lock = threading.Lock()
        self._published_state: Optional[Dict[str, Any]] = None
        self._online_since: Optional[str] = None
        newest = audit.events(limit=1, kinds=home_assistant.DECISION_KINDS, newest=True)
        self.last_decision: Optional[Dict[str, Any]] = decision_summary(newest[0]) if newest else None
        self._stop = threading.Event()
        self._on_died = on_died
        self._threads: List[threading.Thread] = []
        self._syncing = False  # applying a site's numbered changes (sync): missing people are no error
        # a numbered site change is applied by every door, also one that never held the person
        self.handlers = self.gallery.handlers(missing_ok=lambda body: "change" in body or self._syncing)
        self.handlers.update({"ping": self._ping, "set_threshold": self._set_threshold, "unlock": self._unlock,
                              "sync": self._sync, "status": self._status_command})
        self.handlers.update(HistoryVerbs(audit).handlers())

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._threads = [threads.start("mqtt-commands", self._command_loop, self._on_died),
                         threads.start("mqtt-outbox", self._outbox_loop, self._on_died)]
        self.controller.listeners.append(self._on_event)
        self.link.start()

    def stop(self) -> None:
        self._stop.set()
        self.wake()
        self._commands.put(None)
        for thread in self._threads:
            thread.join(timeout=5)
        offline = {"state": "offline", "device": self.mqtt.device, "reason": "stopped", "since": _utc_now()}
        with self._status_lock:  # the last status published is this one, never an "online" after it
            self.link.stop(final=(topics.status(self.mqtt.site, self.mqtt.device), json.dumps(offline).encode()))
        self.store.close()
        self.ledger.close()

    def wake(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def _on_event(self, event: Event) -> None:
        if event.kind in home_assistant.DECISION_KINDS:
            self.last_decision = decision_summary(event)
            if self.mqtt.home_assistant and self.link.connected.is_set():
                self.link.publish(topics.decision(self.mqtt.site, self.mqtt.device),
                                  home_assistant.decision_payload(event))
        self.wake()

    def _on_connect(self) -> None:
        self.outbox.restart()  # re-send everything unacknowledged, in order
        self._online_since = _utc_now()
        if self.mqtt.home_assistant:
            for topic, payload in home_assistant.discovery(self.mqtt.site, self.mqtt.device, __version__,
                                                           self.mqtt.home_assistant_prefix):
                self.link.publish(topic, payload, retain=True)
        self.publish_status()
        self._ask_for_changes(self.store.site_version)

    def _on_disconnect(self) -> None:
        self.outbox.restart()

    # -- status ----------------------------------------------------------------------------

    def status(self) -> Dict[str, Any]:
        counts = self.store.counts()
        return {"state": "online", "device": self.mqtt.device, "site": self.mqtt.site,
                "version": __version__, "models": {"detector": self.config.models.detector,
                                                   "embedder": self.model_id},
                "gallery": {"version": counts["version"], "site_version": counts["site_version"],
                            "people": counts["people"], "templates": counts["templates"]},
                "door": self.controller.door.value, "access": self.controller.access.value,
                "matching": self.matching_state() if self.matching_state else None,
                "faults": dict(self.controller.faults), "unsent_events": self.audit.unsent_count(),
                "last_decision": self.last_decision, "since": self._online_since, "time": _utc_now()}

    @staticmethod
    def _state(status: Dict[str, Any]) -> Dict[str, Any]:
        """What, when it changes, is worth a new status at once: not the time, and not the access
        state's passage through detecting and verifying at camera speed."""
        return dict(status, time=None,
                    access=status["access"] if status["access"] in ("granted", "fault") else "ready")

    def publish_status(self, only_if_changed: bool = False) -> None:
        if not self.link.connected.is_set():
            return
        with self._status_lock:
            if self._stop.is_set():
                return
            status = self.status()
            state = self._state(status)
            if only_if_changed and state == self._published_state:
                return
            self._published_state = state
            self._next_status = time.monotonic() + self.mqtt.status_seconds
            site, device = self.mqtt.site, self.mqtt.device
            self.link.publish(topics.status(site, device), json.dumps(status).encode(), retain=True)
            self.link.publish(topics.seen(site, device),
                              json.dumps({"device": device, "time": status["time"]}).encode(), retain=True)

    # -- the audit outbox ------------------------------------------------------------------

    def _periodic(self) -> None:
        """Status when something changed (this runs at least every second) and every
        `status_seconds`; ask for missed site changes every few minutes, in case a request or
        its answer was lost."""
        now = time.monotonic()
        if not self.link.connected.is_set():
            return
        self.publish_status(only_if_changed=now < self._next_status)
        if now >= self._next_sync:
            self._next_sync = now + 300
            self._ask_for_changes(self.store.site_version)

    def _outbox_loop(self) -> None:
        while not self._stop.is_set():
            self._periodic()
            if not self.outbox.publish_some():
                with self._wake:
                    self._wake.wait(1.0)

    # -- commands --------------------------------------------------------------------------

    def _received(self, message) -> None:
        # the network thread only queues; enrolment runs the models and must not stall it
        self._commands.put(message)

    def _command_loop(self) -> None:
        while not self._stop.is_set():
            message = self._commands.get()
            if message is None:
                return
            try:
                self.handle(message)
            except Exception:  # one bad command must not end command handling
                log.exception("command on %r failed", message.topic)

    def handle(self, message) -> Optional[Dict[str, Any]]:
        envelope: Dict[str, Any] = {}
        signed = False  # until the signature checks out, the sender is nobody
        try:
            envelope = parse_envelope(message.payload, self.mqtt.max_payload_kb * 1024)
            if message.retain:
                raise CommandError("retained", "retained commands are ignored: publish commands without retain")
            verify(self.key, envelope)
            signed = True
            check_topic(message.topic, envelope, self.mqtt.site, self.mqtt.device)
            check_age(envelope, self.mqtt, time.time())
            previous = self.ledger.reply_for(envelope["request_id"])
            if previous is not None:
                reply = dict(previous, duplicate=True)  # answered again, not applied again
            else:
                reply = self._apply(envelope)
        except CommandError as err:
            reply = {"ok": False, "code": err.code, "message": err.message}
            if signed and err.code in ("failed", "not_found", "refused"):
                self.ledger.record(envelope["request_id"], envelope["verb"], reply)
        except Exception as err:  # a bug still gets an answer, and the log says what it was
            log.exception("command %r on %r failed", envelope.get("request_id"), message.topic)
            reply = {"ok": False, "code": "internal", "message": "%s: %s" % (type(err).__name__, err)}
        if not reply.get("ok") and reply.get("code") != "internal":  # that one is logged with its traceback
            log.warning("refused a command on %r (request %r): %s: %s", message.topic,
                        envelope.get("request_id"), reply.get("code"), reply.get("message"))
        reply.setdefault("request_id", envelope.get("request_id"))
        reply.setdefault("verb", envelope.get("verb"))
        reply["device"] = self.mqtt.device
        self._reply(message, envelope, reply, signed)
        if reply.get("ok") and not reply.get("duplicate"):
            self.publish_status()
        return reply

    def _apply(self, envelope: Dict[str, Any]) -> Dict[str, Any]:
        handler = self.handlers.get(envelope["verb"])
        if handler is None:
            raise CommandError("unknown_verb", "unknown command %r; known: %s"
                               % (envelope["verb"], ", ".join(sorted(self.handlers))))
        body = envelope["body"]
        change = body.get("change")
        if envelope["verb"] in GALLERY_VERBS and change is not None:
            if not isinstance(change, int) or isinstance(change, bool) or change < 1:
                raise CommandError("malformed", "change must be a positive integer")
            applied = self.store.site_version
            if change <= applied:
                return {"ok": True, "result": {"change": change, "already_applied": True}}
            if change > applied + 1:
                self._ask_for_changes(applied)
                raise CommandError("out_of_order", "change %d arrived after %d; asked for the missing ones"
                                   % (change, applied))
        self._origin = self._origin_of(envelope)
        try:
            result = handler(body)
        except (GalleryError, ValueError, TypeError, KeyError) as err:
            raise CommandError("failed", str(err)) from err
        if envelope["verb"] in GALLERY_VERBS and change is not None:
            self.store.set_site_version(change)
        if envelope["verb"] in AUDITED_VERBS:
            self._record_change(envelope["verb"], result, self._origin)
        reply = {"ok": True, "result": result}
        if envelope["verb"] not in READ_VERBS:
            self.ledger.record(envelope["request_id"], envelope["verb"], reply)
        return reply

    def _origin_of(self, envelope: Dict[str, Any]) -> Dict[str, Any]:
        """Who asked: the signing key (by fingerprint), the operator the administrator's tool names in
        the signed body, the request id."""
        operator = envelope["body"].get("operator")
        if not (plain_text(operator) and 0 < len(operator) <= 64):
            operator = None
        return {"via": "mqtt", "key": self.key_id, "operator": operator, "request_id": envelope["request_id"]}

    def _record_change(self, verb: str, result: Any, origin: Dict[str, Any]) -> None:
        """Every change to who may enter and to the decision rule goes into the audit trail."""
        result = result if isinstance(result, dict) else {}
        detail = {"action": verb, "origin": origin}
        for key in ("templates", "removed", "enabled", "distance_threshold", "min_margin", "applied", "failed"):
            if key in result:
                detail[key] = result[key]
        self.audit.record(Event("change", person_id=result.get("person_id"), person_name=result.get("name"),
                                detail=detail))
        self.wake()

    def _ask_for_changes(self, after: int) -> None:
        self.link.publish(topics.sync_request(self.mqtt.site, self.mqtt.device),
                          json.dumps({"after": after, "device": self.mqtt.device}).encode())

    def _reply(self, message, envelope: Dict[str, Any], reply: Dict[str, Any], signed: bool) -> None:
        # ensure_ascii: whatever text a reply echoes, the payload is plain ASCII JSON
        payload = json.dumps(reply).encode("ascii")
        properties = getattr(message, "properties", None)
        response_topic = getattr(properties, "ResponseTopic", None) if properties else None
        correlation = getattr(properties, "CorrelationData", None) if properties else None
        if not (signed and topics.response_topic_allowed(self.mqtt.site, response_topic)):
            # nobody unauthenticated chooses where this door publishes
            response_topic = topics.reply(self.mqtt.site, self.mqtt.device, envelope.get("request_id"))
        if not isinstance(correlation, bytes) or len(correlation) > 256:
            correlation = None
        self.link.publish(response_topic, payload, correlation=correlation)

    # -- handlers: each takes the body and returns the result ------------------------------

    def _ping(self, body) -> Dict[str, Any]:
        return {"pong": True, "time": time.time()}

    def _status_command(self, body) -> Dict[str, Any]:
        return self.status()

    def _set_threshold(self, body) -> Dict[str, Any]:
        threshold, margin = body.get("distance_threshold"), body.get("min_margin", self.config.matching.min_margin)
        for name, value in (("distance_threshold", threshold), ("min_margin", margin)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 2:
                raise CommandError("malformed", "%s must be a number from 0 to 2" % name)
        if self.set_matching is None:
            raise CommandError("refused", "this door cannot change its threshold")
        self.set_matching(float(threshold), float(margin))  # 0 returns to the false-accept target
        return dict(self.matching_state() if self.matching_state else {"distance_threshold": threshold},
                    min_margin=margin, persisted=False,
                    note="applies until this door restarts; 'facegate tune apply' on its config keeps it")

    def _unlock(self, body) -> Dict[str, Any]:
        # the age, signature and request-id checks have passed; the door itself decides the rest
        if not self.controller.remote_unlock(text_field(body, "reason", False) or "remote", self._origin):
            raise CommandError("refused", "the door cannot unlock now (state %s)" % self.controller.access.value)
        return {"unlocked": True}

    def _sync(self, body) -> Dict[str, Any]:
        changes = body.get("changes")
        if not isinstance(changes, list):
            raise CommandError("malformed", "sync needs a list of changes")
        applied, failed = [], []
        self._syncing = True
        try:
            return self._apply_changes(changes, applied, failed)
        finally:
            self._syncing = False

    def _apply_changes(self, changes, applied: List[int], failed: List[Dict[str, Any]]) -> Dict[str, Any]:
        for change in sorted(changes, key=lambda c: c.get("change", 0) if isinstance(c, dict) else 0):
            if not isinstance(change, dict) or change.get("verb") not in GALLERY_VERBS \
                    or not isinstance(change.get("body"), dict) or not isinstance(change.get("change"), int):
                raise CommandError("malformed", "each change needs change, verb and body")
            number = change["change"]
            if number <= self.store.site_version:
                continue
            if number != self.store.site_version + 1:
                raise CommandError("out_of_order", "sync skips from %d to %d" % (self.store.site_version, number))
            try:
                result = self.handlers[change["verb"]](change["body"])
                self._record_change(change["verb"], result, dict(self._origin, via="mqtt sync", change=number))
            except (CommandError, GalleryError, ValueError, TypeError, KeyError) as err:
                failed.append({"change": number, "error": str(err)})  # recorded, not retried forever
            self.store.set_site_version(number)
            applied.append(number)
        if applied:
            log.info("applied site changes %d-%d (%d failed); now at site change %d", applied[0], applied[-1],
                     len(failed), self.store.site_version)
            self._ask_for_changes(self.store.site_version)  # a long backlog comes in several parts
        return {"applied": applied, "failed": failed, "site_version": self.store.site_version}
