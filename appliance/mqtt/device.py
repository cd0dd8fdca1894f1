"""The door's MQTT side: the wiring of its status, the audit outbox (mqtt/outbox.py) and its
signed commands: checked here, then dispatched to the gallery's verbs (mqtt/gallery_verbs.py) or
the door's own (below). Topics: mqtt/topics.py.

On the network thread: size, and the administrator's signature over the raw bytes
(mqtt/signing.py), before anything is parsed; a stranger's message stops there, is never
queued, and draws at most a few replies a second. A signed command waits in a bounded inbox
for the command thread: shape (mqtt/payload.py), the retain flag (refused, by its request id),
verb and target against the topic, age, request id (mqtt/ledger.py: recorded before it is
carried out). Replies are signed with this
door's own key and go where the signed command said, else to this door's own reply topic.
"""

import datetime
import json
import logging
import sqlite3
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from appliance import __version__, threads
from appliance.audit import AuditStore, Event
from appliance.clock import TrustedTime
from appliance.config import Config
from appliance.errors import AuditError, CommandError, ConfigError, GalleryError, StorageError
from appliance.gallery.commands import ACCESS_VERBS
from appliance.gallery.enrol import Enroller
from appliance.gallery.store import GalleryStore
from appliance.keys import TrustedKeys, load_private
from appliance.mqtt import home_assistant, topics
from appliance.mqtt.gallery_verbs import GalleryVerbs
from appliance.mqtt.history_verbs import HistoryVerbs
from appliance.mqtt.inbox import Inbox
from appliance.mqtt.ledger import Ledger
from appliance.mqtt.link import MqttLink
from appliance.mqtt.outbox import Outbox
from appliance.mqtt.payload import (READ_VERBS, check_age, check_size, check_topic, parse_envelope, plain_text,
                                    text_field)
from appliance.mqtt.signing import Opened, open_sealed, sign
from appliance.throttle import Budget, Throttle

log = logging.getLogger(__name__)

GALLERY_VERBS = ("enroll", "add_photos", "remove", "disable", "enable") + ACCESS_VERBS
# what changes who may enter or the decision rule: each is an audit event with its origin
AUDITED_VERBS = GALLERY_VERBS + ("set_threshold", "update")
READ_REPLY = {"ok": True, "result": "a read: its answer is not kept"}


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
        self.key = load_private(self.mqtt.signing_key_file)  # this door's own: signs what it sends
        self.trusted = TrustedKeys.load(self.mqtt.trusted_keys_file)
        if not self.trusted.of_role("admin"):
            raise ConfigError("%s names no administrator key ('admin NAME KEY'): no command could be "
                              "accepted" % self.mqtt.trusted_keys_file)
        self.key_id = self.key.key_id
        self._origin: Dict[str, Any] = {}
        # its own connection: gallery writes here never interleave with the door loop's reads
        self.store = GalleryStore(gallery_path, model_id=model_id,
                                  max_templates=config.gallery.max_templates)
        # photo (BGR) -> Template with this door's models and the enrolment quality limits
        template_maker = Enroller(config, pipeline, self.store).template_from_image if pipeline else None
        self.gallery = GalleryVerbs(self.store, model_id, self.mqtt, template_maker)
        self.ledger = Ledger(self.mqtt.state_path, self.mqtt.change_max_age_hours * 3600 + 3600)
        self.clock = TrustedTime(lambda: self.ledger.newest_issued)
        # the broker publishes this when it loses us; it cannot know when, so `seen` keeps that
        will = (topics.status(self.mqtt.site, self.mqtt.device),
                json.dumps({"state": "offline", "device": self.mqtt.device, "reason": "connection lost"}).encode())
        self.link = link or MqttLink(self.mqtt, "facegate-%s-%s" % (self.mqtt.site, self.mqtt.device),
                                     will=will)
        self.link.subscriptions = [topics.commands(self.mqtt.site, self.mqtt.device),
                                   topics.commands(self.mqtt.site, topics.ALL)]
        self.outbox = Outbox(self.link, audit, self.mqtt.site, self.mqtt.device, self.mqtt.events_in_flight,
                             on_storage_error=controller.storage_failed)
        self.link.on_message = self._received
        self.link.on_published = self.outbox.acknowledged
        self.link.on_connected.append(self._on_connect)
        self.link.on_disconnected.append(self._on_disconnect)
        self._inbox = Inbox(self.mqtt.queue_max_commands, self.mqtt.queue_max_kb * 1024)
        self._stranger_replies = Budget(rate=2.0, burst=10)  # what a flood of forgeries can draw
        self._throttle = Throttle(log)
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
        self._inbox.close()
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
                if self.mqtt.home_assistant_snapshots and event.snapshot:
                    self.link.publish(home_assistant.snapshot_topic(self.mqtt.site, self.mqtt.device), event.snapshot,
                                      retain=True)
        self.wake()

    def _on_connect(self) -> None:
        self.outbox.restart()  # re-send everything unacknowledged, in order
        self._online_since = _utc_now()
        if self.mqtt.home_assistant:
            for topic, payload in home_assistant.discovery(self.mqtt.site, self.mqtt.device, __version__,
                                                           self.mqtt.home_assistant_prefix,
                                                           self.mqtt.home_assistant_area,
                                                           self.mqtt.home_assistant_snapshots):
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
                            "door_only_changes": counts["door_only_changes"],
                            "people": counts["people"], "templates": counts["templates"]},
                "door": self.controller.door.value, "access": self.controller.access.value,
                "matching": self.matching_state() if self.matching_state else None,
                "faults": dict(self.controller.faults), "unsent_events": self.audit.unsent_count(),
                "clock": {"synchronised": self.clock.synchronised()}, "update": self._update_state(),
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
            # `within`: the next status comes within this many seconds, or the broker notices the
            # door is gone (1.5 keep-alives): an offline door was lost before time + within
            within = round(self.mqtt.status_seconds + 1.5 * self.mqtt.keepalive)
            self.link.publish(topics.seen(site, device),
                              json.dumps({"device": device, "time": status["time"], "within": within}).encode(),
                              retain=True)

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
        """On the network thread: authenticate before anything else, queue only what is signed."""
        try:
            check_size(message.payload, self.mqtt.max_payload_kb * 1024)
            opened = open_sealed(message.payload, lambda key_id: self.trusted.find(key_id, "admin"))
        except CommandError as err:
            self._refuse_stranger(message, err)
            return
        if not self._inbox.put((message, opened), len(message.payload)):
            self._throttle.warning("busy", "command inbox full: answered a signed command on %r busy", message.topic)
            try:  # the administrator signed it: worth a parse to answer it by its request id
                envelope = parse_envelope(opened.signed)
            except CommandError:
                envelope = {}
            self._reply(message, envelope, {"ok": False, "code": "busy", "request_id": envelope.get("request_id"),
                                            "verb": envelope.get("verb"), "device": self.mqtt.device,
                                            "message": "this door has too many commands waiting: send it again "
                                                       "shortly"})

    def _refuse_stranger(self, message, err: CommandError) -> None:
        """A message nobody we trust signed: logged and answered sparingly, never parsed or queued."""
        self._throttle.warning("refused:" + err.code, "refused a message on %r: %s: %s", message.topic,
                               err.code, err.message)
        if self._stranger_replies.take():
            self._reply(message, {}, {"ok": False, "code": err.code, "message": err.message, "request_id": None,
                                      "verb": None, "device": self.mqtt.device})

    def _command_loop(self) -> None:
        while not self._stop.is_set():
            item = self._inbox.get()
            if item is None:
                return
            try:
                self.handle(*item)
            except Exception:  # one bad command must not end command handling
                log.exception("command on %r failed", item[0].topic)

    def handle(self, message, opened: Opened) -> Dict[str, Any]:
        envelope: Dict[str, Any] = {}
        try:
            envelope = parse_envelope(opened.signed)
            if message.retain:  # checked here so that the refusal names the request
                raise CommandError("retained", "retained commands are ignored: publish commands without retain")
            check_topic(message.topic, envelope, self.mqtt.site, self.mqtt.device)
            check_age(envelope, self.mqtt, self.clock.now(), self.ledger.newest_issued,
                      synchronised=self.clock.synchronised() is not False)
            previous = self.ledger.reply_for(envelope["request_id"])
            if previous is None:
                reply = self._apply(envelope, opened)
            elif envelope["verb"] in READ_VERBS:
                raise CommandError("replayed", "this read was answered before: a read is answered once")
            else:
                reply = dict(previous, duplicate=True)  # answered again, not applied again
        except CommandError as err:
            reply = {"ok": False, "code": err.code, "message": err.message}
        except Exception as err:  # a bug still gets an answer, and the log says what it was
            log.exception("command %r on %r failed", envelope.get("request_id"), message.topic)
            reply = {"ok": False, "code": "internal", "message": "%s: %s" % (type(err).__name__, err)}
        if not reply.get("ok") and reply.get("code") != "internal":  # that one is logged with its traceback
            self._throttle.warning("refused:" + str(reply.get("code")), "refused a command on %r (request %r): %s: %s",
                                   message.topic, envelope.get("request_id"), reply.get("code"), reply.get("message"))
        reply.setdefault("request_id", envelope.get("request_id"))
        reply.setdefault("verb", envelope.get("verb"))
        reply["device"] = self.mqtt.device
        self._reply(message, envelope, reply)
        if reply.get("ok") and not reply.get("duplicate"):
            self.publish_status()
        return reply

    def _apply(self, envelope: Dict[str, Any], opened: Opened) -> Dict[str, Any]:
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
        request_id = envelope["request_id"]
        try:  # record, then act: a command that cannot be recorded is not carried out
            self.ledger.claim(request_id, envelope["verb"], float(envelope["issued"]))
        except StorageError as err:
            self.controller.storage_failed(str(err))
            raise CommandError("storage", "%s: not carried out" % err) from err
        self._origin = self._origin_of(envelope, opened)
        try:
            result = handler(body)
            if envelope["verb"] in GALLERY_VERBS and change is not None:
                self.store.set_site_version(change)
            if envelope["verb"] in AUDITED_VERBS:
                self._record_change(envelope["verb"], result, self._origin)
        except CommandError as err:
            self._finish(request_id, {"ok": False, "code": err.code, "message": err.message})
            raise
        except StorageError as err:
            self._finish(request_id, {"ok": False, "code": "storage", "message": str(err)})
            raise CommandError("storage", str(err)) from err
        except (GalleryError, ValueError, TypeError, KeyError) as err:
            self._finish(request_id, {"ok": False, "code": "failed", "message": str(err)})
            raise CommandError("failed", str(err)) from err
        reply = {"ok": True, "result": result}
        self._finish(request_id, READ_REPLY if envelope["verb"] in READ_VERBS else reply)
        return reply

    def _finish(self, request_id: str, reply: Dict[str, Any]) -> None:
        """The outcome of a claimed command; if it cannot be written, the claim still stands, so
        a repeat is refused rather than carried out again."""
        try:
            self.ledger.finish(request_id, reply)
        except StorageError as err:
            self.controller.storage_failed(str(err))

    def _origin_of(self, envelope: Dict[str, Any], opened: Opened) -> Dict[str, Any]:
        """Who asked: the signing key (its id and the name this door knows it by), the operator the
        administrator's tool names in the signed body, the request id."""
        operator = envelope["body"].get("operator")
        if not (plain_text(operator) and 0 < len(operator) <= 64):
            operator = None
        return {"via": "mqtt", "key": opened.signer.key_id, "signer": opened.signer.name, "operator": operator,
                "request_id": envelope["request_id"]}

    def _record_change(self, verb: str, result: Any, origin: Dict[str, Any]) -> None:
        """Every change to who may enter and to the decision rule goes into the audit trail."""
        result = result if isinstance(result, dict) else {}
        detail = {"action": verb, "origin": origin}
        for key in ("templates", "removed", "enabled", "distance_threshold", "min_margin", "applied", "failed",
                    "schedule", "group", "groups", "update"):
            if key in result:
                detail[key] = result[key]
        try:
            self.audit.record(Event("change", person_id=result.get("person_id"), person_name=result.get("name"),
                                    detail=detail))
        except AuditError as err:
            self.controller.storage_failed(str(err))
            raise StorageError(str(err)) from err
        self.wake()

    def _ask_for_changes(self, after: int) -> None:
        """Signed with this door's key: the administrator answers only doors it knows."""
        self.link.publish(topics.sync_request(self.mqtt.site, self.mqtt.device),
                          sign(self.key, "sync_request", "admin", {"after": after, "device": self.mqtt.device}))

    def _reply(self, message, envelope: Dict[str, Any], reply: Dict[str, Any]) -> None:
        """Signed with this door's key, to the reply topic the signed command named (an
        administrator's own), else to this door's own: no response topic in the MQTT properties,
        which nobody signed, chooses where this door publishes."""
        response_topic = envelope.get("reply_to")
        if not topics.response_topic_allowed(self.mqtt.site, response_topic):
            response_topic = topics.reply(self.mqtt.site, self.mqtt.device, envelope.get("request_id"))
        properties = getattr(message, "properties", None)
        correlation = getattr(properties, "CorrelationData", None) if properties else None
        if not isinstance(correlation, bytes) or len(correlation) > 256:
            correlation = None
        self.link.publish(response_topic, sign(self.key, "reply", "admin", reply,
                                               request_id=envelope.get("request_id") or None),
                          correlation=correlation)

    # -- updates -----------------------------------------------------------------------------

    def allow_updates(self, config_path: str) -> None:
        """Take the administrator's `update` command: this door runs from an installed bundle,
        and its updater will need the config the door runs with."""
        self._config_path = config_path
        self.handlers["update"] = self._update

    def _update_state(self) -> Optional[Dict[str, Any]]:
        from appliance.update import running_installation

        found = running_installation()
        return found[0].summary() if found else None

    def _update(self, body) -> Dict[str, Any]:
        from appliance.update import running_installation
        from appliance.update.fleet import check_request, launch

        url, digest, size = check_request(body, self.config.update.download_max_mb)
        found = running_installation()
        if found is None:
            raise CommandError("refused", "this door does not run from an installed bundle: it cannot update itself")
        launch(found[0], url, digest, size, self._config_path)
        return {"update": {"url": url, "sha256": digest, "size": size, "from": found[1]},
                "note": "the door stops while it switches; 'facegate admin status' follows the update"}

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
        force = body.get("force", False)
        if not isinstance(force, bool):
            raise CommandError("malformed", "force must be true or false")
        try:
            self.set_matching(float(threshold), float(margin), force=force)  # 0 returns to the false-accept target
        except ConfigError as err:
            raise CommandError("refused", "%s; send it with force ('facegate admin set-threshold T --force') to "
                                          "apply it all the same" % err) from err
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
        self._syncing = True
        try:
            return self._apply_changes(changes)
        finally:
            self._syncing = False

    def _apply_changes(self, changes) -> Dict[str, Any]:
        """Each change in order. One this door refuses for good (a photo its quality gate rejects,
        someone it never held) is recorded as failed and passed: it would fail the same way every
        time, and a refusal never lets anyone in. One that fails for a passing reason (the
        gallery busy or its disk full) stops the sync there: the site version stays before it,
        so "up to date" means up to date, and the next sync tries it again."""
        applied: List[int] = []
        failed: List[Dict[str, Any]] = []
        stopped = None
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
                self.store.set_site_version(number)
            except (CommandError, GalleryError, ValueError, TypeError, KeyError) as err:
                if _passing(err):
                    stopped = {"change": number, "error": str(err)}
                    break
                failed.append({"change": number, "error": str(err)})
                self._record_change(change["verb"], {"failed": str(err)},
                                    dict(self._origin, via="mqtt sync", change=number))
                self.store.set_site_version(number)
            except StorageError as err:
                stopped = {"change": number, "error": str(err)}
                break
            applied.append(number)
        if applied or failed:
            log.info("applied site changes up to %d (%d refused here); now at site change %d",
                     (applied or [0])[-1], len(failed), self.store.site_version)
        if stopped is not None:
            log.warning("sync stopped at site change %d: %s; it is tried again at the next sync",
                        stopped["change"], stopped["error"])
        elif applied or failed:
            self._ask_for_changes(self.store.site_version)  # a long backlog comes in several parts
        return {"applied": applied, "failed": failed, "stopped": stopped, "site_version": self.store.site_version}


def _passing(err: Exception) -> bool:
    """A gallery error caused by SQLite itself (locked, disk full, I/O), not by the change."""
    return isinstance(err, GalleryError) and isinstance(err.__cause__, sqlite3.Error)
