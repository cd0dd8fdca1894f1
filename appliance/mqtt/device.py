"""The door's MQTT side: status, the audit outbox, and signed commands (topics: mqtt/topics.py).

Checks run in this order and a failure is an error reply that changes nothing: retained,
size and shape (mqtt/payload.py), signature, verb and target against the topic, age,
repeated request id. Until the signature has been checked the sender is nobody: such a
request is answered only on this door's own reply topic, whatever response topic it names.
"""

import base64
import datetime
import hashlib
import json
import logging
import queue
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from appliance import __version__, threads
from appliance.audit import AuditStore, Event
from appliance.config import Config
from appliance.errors import CommandError, FaceGateError, GalleryError
from appliance.gallery.enrol import Enroller
from appliance.gallery.store import GalleryStore, Person, Template
from appliance.mqtt import home_assistant, topics
from appliance.mqtt.ledger import Ledger
from appliance.mqtt.link import MqttLink
from appliance.mqtt.payload import decode_photo, parse_envelope, plain_text
from appliance.mqtt.signing import load_site_key, verify
from appliance.vision.embedder import normalise

log = logging.getLogger(__name__)

GALLERY_VERBS = ("enroll", "add_photos", "remove", "disable", "enable")
# what changes who may enter or the decision rule: each is an audit event with its origin
AUDITED_VERBS = GALLERY_VERBS + ("set_threshold",)
# answers that change nothing: not kept in the ledger (a repeat simply reads again)
READ_VERBS = ("ping", "status", "list", "get", "events", "snapshot")
HISTORY_PAGE = 200  # most events in one `events` reply


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def decision_summary(event: Event) -> Dict[str, Any]:
    return {"kind": event.kind, "person_id": event.person_id, "person_name": event.person_name,
            "time": event.time, "sequence": event.id}


def person_summary(person: Person) -> Dict[str, Any]:
    return {"person_id": person.id, "name": person.name, "enabled": person.enabled,
            "templates": person.templates, "valid_from": person.valid_from,
            "valid_until": person.valid_until, "note": person.note}


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
        self.base = topics.base(self.mqtt.site, self.mqtt.device)
        self.site_base = topics.base(self.mqtt.site, topics.ALL)
        # its own connection: gallery writes here never interleave with the door loop's reads
        self.store = GalleryStore(gallery_path, model_id=model_id,
                                  max_templates=config.gallery.max_templates)
        # photo (BGR) -> Template with this door's models and the enrolment quality limits
        self.template_maker = Enroller(config, pipeline, self.store).template_from_image if pipeline else None
        self.ledger = Ledger(self.mqtt.state_path, self.mqtt.change_max_age_hours * 3600 + 3600)
        # the broker publishes this when it loses us; it cannot know when, so `seen` keeps that
        will = (topics.status(self.mqtt.site, self.mqtt.device),
                json.dumps({"state": "offline", "device": self.mqtt.device, "reason": "connection lost"}).encode())
        self.link = link or MqttLink(self.mqtt, "facegate-%s-%s" % (self.mqtt.site, self.mqtt.device),
                                     will=will)
        self.link.subscriptions = [topics.commands(self.mqtt.site, self.mqtt.device),
                                   topics.commands(self.mqtt.site, topics.ALL)]
        self.link.on_message = self._received
        self.link.on_published = self._acknowledged
        self.link.on_connected.append(self._on_connect)
        self.link.on_disconnected.append(self._on_disconnect)
        self._commands: "queue.Queue" = queue.Queue()
        self._wake = threading.Condition()
        self._in_flight: Dict[int, int] = {}  # message id -> event id
        self._early_acks: Dict[int, float] = {}  # message id -> when its acknowledgement came
        self._published_up_to = 0
        self._next_status = self._next_sync = time.monotonic() + 60  # connecting does both at once
        self._status_lock = threading.Lock()
        self._published_state: Optional[tuple] = None
        self._online_since: Optional[str] = None
        newest = audit.events(limit=1, kinds=home_assistant.DECISION_KINDS, newest=True)
        self.last_decision: Optional[Dict[str, Any]] = decision_summary(newest[0]) if newest else None
        self._stop = threading.Event()
        self._on_died = on_died
        self._threads: List[threading.Thread] = []
        self._syncing = False  # applying a site's numbered changes (sync): missing people are no error
        self.handlers = {"ping": self._ping, "enroll": self._enroll, "add_photos": self._add_photos,
                         "remove": self._remove, "disable": self._disable, "enable": self._enable,
                         "list": self._list, "get": self._get, "set_threshold": self._set_threshold,
                         "unlock": self._unlock, "sync": self._sync, "status": self._status_command,
                         "events": self._events, "snapshot": self._snapshot}

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
        with self._wake:
            self._in_flight.clear()
            self._early_acks.clear()
            self._published_up_to = 0  # re-send everything unacknowledged, in order
            self._wake.notify_all()
        self._online_since = _utc_now()
        if self.mqtt.home_assistant:
            for topic, payload in home_assistant.discovery(self.mqtt.site, self.mqtt.device, __version__,
                                                           self.mqtt.home_assistant_prefix):
                self.link.publish(topic, payload, retain=True)
        self.publish_status()
        self._ask_for_changes(self.store.site_version)

    def _on_disconnect(self) -> None:
        with self._wake:
            self._in_flight.clear()
            self._published_up_to = 0

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

    def _state(self, status: Dict[str, Any]) -> tuple:
        """What, when it changes, is worth a new status at once: not the time, and not the access
        state's passage through detecting and verifying at camera speed."""
        access = status["access"] if status["access"] in ("granted", "fault") else "ready"
        return (status["door"], access, json.dumps(status["faults"], sort_keys=True),
                json.dumps(status["matching"], sort_keys=True), json.dumps(status["gallery"], sort_keys=True),
                json.dumps(status["last_decision"], sort_keys=True), status["unsent_events"])

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
        with self._wake:  # an acknowledgement is matched to its event within milliseconds
            for mid, when in list(self._early_acks.items()):
                if now - when > 30:
                    del self._early_acks[mid]
        self.publish_status(only_if_changed=now < self._next_status)
        if now >= self._next_sync:
            self._next_sync = now + 300
            self._ask_for_changes(self.store.site_version)

    def _outbox_loop(self) -> None:
        while not self._stop.is_set():
            self._periodic()
            with self._wake:
                room = self.mqtt.events_in_flight - len(self._in_flight)
                if not self.link.connected.is_set() or room <= 0:
                    self._wake.wait(1.0)
                    continue
                after = self._published_up_to
            events = self.audit.events(limit=room, unsent_only=True, since_id=after)
            if not events:
                with self._wake:
                    self._wake.wait(1.0)
                continue
            for event in events:
                if not self.link.connected.is_set():
                    break
                # publish outside our locks: paho calls _acknowledged holding its own lock
                mid = self.link.publish(topics.events(self.mqtt.site, self.mqtt.device), self._event_payload(event))
                with self._wake:
                    self._published_up_to = event.id
                    if mid in self._early_acks:  # acknowledged before we got to note it
                        del self._early_acks[mid]
                        acknowledged = True
                    else:
                        self._in_flight[mid] = event.id
                        acknowledged = False
                if acknowledged:
                    self.audit.mark_sent([event.id])

    def _event_payload(self, event: Event) -> bytes:
        body = event.summary()
        body.update(sequence=event.id, device=self.mqtt.device, site=self.mqtt.site)
        if event.snapshot is not None:
            body["snapshot_jpeg"] = base64.b64encode(event.snapshot).decode("ascii")
        return json.dumps(body, ensure_ascii=False).encode("utf-8")

    def _acknowledged(self, mid: int) -> None:
        with self._wake:
            event_id = self._in_flight.pop(mid, None)
            if event_id is None:  # a status or a reply, or an event not yet noted
                self._early_acks[mid] = time.monotonic()
            self._wake.notify_all()
        if event_id is not None:
            self.audit.mark_sent([event_id])

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
            self._check_topic(message.topic, envelope)
            self._check_age(envelope)
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

    def _check_topic(self, topic: str, envelope: Dict[str, Any]) -> None:
        prefix, _, verb = topic.rpartition("/cmd/")
        if verb != envelope["verb"]:
            raise CommandError("wrong_topic", "signed for verb %r, arrived on %s" % (envelope["verb"], topic))
        target = envelope["target"]
        if prefix == self.base and target == self.mqtt.device:
            return
        if prefix == self.site_base and target == "all":
            return
        raise CommandError("wrong_target", "signed for %r, arrived on %s" % (target, topic))

    def _check_age(self, envelope: Dict[str, Any]) -> None:
        age = time.time() - float(envelope["issued"])
        if age < -self.mqtt.clock_skew_seconds:
            raise CommandError("from_future", "issued %.0f s in the future: check the clocks" % -age)
        limit = (self.mqtt.unlock_max_age_seconds if envelope["verb"] == "unlock"
                 else self.mqtt.change_max_age_hours * 3600)
        if age > limit:
            raise CommandError("expired", "issued %.1f s ago, the limit for %s is %.0f s"
                               % (age, envelope["verb"], limit))

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

    def _templates(self, body) -> List[Template]:
        photos, embeddings = body.get("photos") or [], body.get("embeddings") or []
        if not isinstance(photos, list) or not isinstance(embeddings, list):
            raise CommandError("malformed", "photos and embeddings must be lists")
        if len(photos) + len(embeddings) > self.mqtt.max_photos:
            raise CommandError("too_large", "at most %d photos or embeddings in one command"
                               % self.mqtt.max_photos)
        if embeddings and body.get("model_id") == self.model_id:
            return [Template(self._vector(v), 1.0, "mqtt embedding") for v in embeddings]
        if not photos:
            raise CommandError("refused", "no photos, and no embeddings of this door's model %s" % self.model_id)
        if self.template_maker is None:
            raise CommandError("refused", "this door cannot embed photos (no models loaded)")
        images = [decode_photo(p, self.mqtt.max_image_side, self.mqtt.max_payload_kb * 1024) for p in photos]
        templates, reasons = [], []
        for number, image in enumerate(images, 1):
            try:
                templates.append(self.template_maker(image, "mqtt photo %d" % number))
            except FaceGateError as err:
                reasons.append("photo %d: %s" % (number, err))
        if not templates:
            raise CommandError("refused", "no usable photo: %s" % "; ".join(reasons))
        return templates

    def _vector(self, values) -> np.ndarray:
        vector = np.asarray(values, dtype=np.float32)
        if vector.ndim != 1 or vector.size < 32 or not np.all(np.isfinite(vector)):
            raise CommandError("malformed", "an embedding must be a list of finite numbers")
        if float(np.linalg.norm(vector)) < 1e-6:
            raise CommandError("malformed", "an embedding must not be all zeros")
        return normalise(vector[None, :])[0]

    @staticmethod
    def _text(body, key: str, required: bool = True) -> Optional[str]:
        value = body.get(key)
        if value is None and not required:
            return None
        if not plain_text(value) or not value.strip() or len(value) > 200:
            raise CommandError("malformed", "%s must be a non-empty string of at most 200 characters, "
                               "without control characters" % key)
        return value

    def _enroll(self, body) -> Dict[str, Any]:
        person_id, name = self._text(body, "person_id"), self._text(body, "name")
        note = body.get("note") or ""
        if not isinstance(note, str):
            raise CommandError("malformed", "note must be a string")
        valid_from, valid_until = self._text(body, "valid_from", False), self._text(body, "valid_until", False)
        templates = self._templates(body)
        # the site's version of this person replaces ours whole, or nothing changes
        person = self.store.replace(person_id, name, templates, self.model_id, note=note,
                                    valid_from=valid_from, valid_until=valid_until)
        return person_summary(person)

    def _find(self, body) -> Person:
        try:
            return self.store.find(self._text(body, "person_id"))
        except GalleryError as err:
            raise CommandError("not_found", str(err)) from err

    def _add_photos(self, body) -> Dict[str, Any]:
        person = self._find(body)
        return person_summary(self.store.add_templates(person.id, self._templates(body), self.model_id))

    def _remove(self, body) -> Dict[str, Any]:
        person_id = self._text(body, "person_id")
        try:
            person = self.store.find(person_id)  # an id, or a name as `admin remove NAME --door D` sends
        except GalleryError as err:
            if "change" in body or self._syncing:
                # a numbered site change: every door applies it, also one that never had the person
                return {"person_id": person_id, "removed": False, "note": "not enrolled here"}
            raise CommandError("not_found", str(err)) from err
        return dict(person_summary(self.store.remove(person.id)), removed=True)

    def _disable(self, body) -> Dict[str, Any]:
        return person_summary(self.store.set_enabled(self._find(body).id, False))

    def _enable(self, body) -> Dict[str, Any]:
        return person_summary(self.store.set_enabled(self._find(body).id, True))

    def _list(self, body) -> Dict[str, Any]:
        page, size = body.get("page", 1), body.get("page_size", 50)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (page, size)) or page < 1 \
                or not 1 <= size <= 500:
            raise CommandError("malformed", "page must be >= 1 and page_size 1 to 500")
        people = self.store.people()
        chosen = people[(page - 1) * size:page * size]
        return {"page": page, "page_size": size, "total": len(people),
                "people": [person_summary(p) for p in chosen]}

    def _get(self, body) -> Dict[str, Any]:
        return person_summary(self._find(body))

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
        if not self.controller.remote_unlock(self._text(body, "reason", False) or "remote", self._origin):
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

    def _events(self, body) -> Dict[str, Any]:
        """Past audit events in order, after a sequence number (or with `newest` the last `limit`):
        the trail kept on this door, without snapshots (`snapshot` fetches one)."""
        after, limit = body.get("after", 0), body.get("limit", 100)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (after, limit)) or after < 0 \
                or not 1 <= limit <= HISTORY_PAGE:
            raise CommandError("malformed", "after must be >= 0 and limit 1 to %d" % HISTORY_PAGE)
        kind, person = self._text(body, "kind", False), self._text(body, "person", False)
        bounds = []
        for key in ("since", "until"):
            text = self._text(body, key, False)
            try:
                moment = datetime.datetime.fromisoformat(text) if text else None
            except ValueError:
                raise CommandError("malformed", "%s must be an ISO time with its offset" % key) from None
            if moment is not None and moment.tzinfo is None:
                raise CommandError("malformed", "%s must carry its offset (a door's clock is UTC)" % key)
            bounds.append(moment)
        newest = body.get("newest", False)
        if not isinstance(newest, bool):
            raise CommandError("malformed", "newest must be true or false")
        events = self.audit.events(limit=limit, kind=kind, since_id=after, after=bounds[0], before=bounds[1],
                                   person=person, newest=newest)
        return {"events": [dict(e.summary(), sequence=e.id) for e in events],
                "more": len(events) == limit, "last": events[-1].id if events else after}

    def _snapshot(self, body) -> Dict[str, Any]:
        sequence = body.get("sequence")
        if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 1:
            raise CommandError("malformed", "sequence must be a positive integer")
        found = self.audit.events(limit=1, since_id=sequence - 1)
        if not found or found[0].id != sequence:
            raise CommandError("not_found", "no event %d on this door" % sequence)
        if found[0].snapshot is None:
            raise CommandError("not_found", "event %d has no snapshot (none taken, or pruned for space)" % sequence)
        return {"sequence": sequence, "jpeg": base64.b64encode(found[0].snapshot).decode("ascii")}
