"""The administrator's MQTT client: signed commands with replies, door status, events, sync.

A command to one door waits for that door's reply; a command to the whole site waits for a
reply from every door whose retained status says online (or until the timeout). `serve`
answers doors' requests for site changes they missed.

Commands are signed with the administrator's private key. What doors send is trusted only
when signed by a door key this administrator knows (and has not revoked): replies and sync
requests. Retained statuses carry no signature (Home Assistant reads them too), so they are
read as untrusted text: shown, never acted on, and a malformed one is dropped.
"""

import datetime
import logging
import threading
import time
import uuid
from typing import Any, Callable, Dict, List, Optional

from appliance.admin.site import SiteGallery
from appliance.config import MqttConfig
from appliance.errors import AdminError, CommandError
from appliance.keys import PrivateKey, TrustedKeys
from appliance.mqtt import topics
from appliance.mqtt.link import MqttLink
from appliance.mqtt.payload import parse_json, plain_text
from appliance.mqtt.signing import open_sealed, sign
from appliance.throttle import Throttle

log = logging.getLogger(__name__)
throttle = Throttle(log)
SYNC_REQUEST_MAX_AGE = 600  # seconds: a door's clock may be off by minutes, not by days


def _operator() -> str:
    """Who runs the administrator's tool: $FACEGATE_OPERATOR, else the login name."""
    import getpass
    import os

    try:
        return (os.environ.get("FACEGATE_OPERATOR") or getpass.getuser())[:64]
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return ""


class AdminClient:
    def __init__(self, config: MqttConfig, key: PrivateKey, doors: TrustedKeys,
                 link: Optional[MqttLink] = None) -> None:
        self.config = config
        self.key = key
        self.doors = doors  # the doors' public keys: whose replies and sync requests count
        self.site = config.site
        self.name = "admin-%s" % uuid.uuid4().hex[:8]
        self.operator = _operator()
        self.reply_topic = topics.client_reply(self.site, self.name)
        self.link = link or MqttLink(config, "facegate-%s-%s" % (self.site, self.name), persistent=False)
        self.statuses: Dict[str, Dict[str, Any]] = {}
        self.seen: Dict[str, str] = {}  # door -> UTC time of its last status, kept past its last will
        self.seen_within: Dict[str, int] = {}  # door -> seconds within which its next status was due
        self._status_arrived: Dict[str, float] = {}  # door -> when a live (not stored) status came
        self._live = False  # past the burst of stored (retained) messages that follows subscribing
        self.on_event: Optional[Callable[[Dict[str, Any]], None]] = None
        self._replies: Dict[str, List[Dict[str, Any]]] = {}
        self._sync_requests_seen: Dict[str, float] = {}  # request id -> when: each is answered once
        self._condition = threading.Condition()
        self.link.subscriptions = [self.reply_topic, "facegate/%s/+/reply/+" % self.site,
                                   "facegate/%s/+/status" % self.site,
                                   "facegate/%s/+/seen" % self.site]
        self.link.on_message = self._message

    def connect(self, timeout: float = 10.0) -> None:
        self.link.start()
        if not self.link.wait_connected(timeout):
            self.link.stop()
            raise AdminError("cannot connect to the MQTT broker %s:%d within %.0f s%s"
                             % (self.config.host, self.config.port, timeout,
                                " (%s)" % self.link.refused if self.link.refused else ""))
        time.sleep(0.3)  # retained statuses arrive right after the subscription
        self._live = True

    def close(self) -> None:
        self.link.stop()

    def door_signed(self, payload: bytes, door: Optional[str]):
        """The parsed envelope of a message signed by `door`'s own (unrevoked) key (any known
        door's when `door` is None), else None; the envelope's `signer` is the door's name."""
        try:
            self.doors = self.doors.fresh()
            opened = open_sealed(payload, lambda key_id: self.doors.find(key_id, "door"))
            if door is not None and opened.signer.name != door:
                raise CommandError("wrong_signer", "signed by door %s, sent as %s" % (opened.signer.name, door))
            envelope = parse_json(opened.signed)
            if not isinstance(envelope, dict) or not isinstance(envelope.get("body"), dict):
                raise CommandError("malformed", "not an envelope")
            envelope["signer"] = opened.signer.name
        except CommandError as err:
            throttle.warning("door:" + err.code, "ignoring a message as from door %r: %s: %s", door, err.code,
                             err.message)
            return None
        return envelope

    def _message(self, message) -> None:
        parts = message.topic.split("/")
        if len(parts) == 4 and parts[3] in ("status", "seen", "events"):
            try:
                payload = parse_json(message.payload)
            except CommandError:
                payload = None
            if not isinstance(payload, dict):  # untrusted: anyone on the broker may have written it
                throttle.warning("malformed:" + parts[3], "ignoring a malformed message on %r", message.topic)
                return
            self._door_message(parts[2], parts[3], payload)
            return
        if "reply" in parts and len(parts) >= 4:
            # a door's own reply topic names it; this administrator's reply topic takes any known door
            envelope = self.door_signed(message.payload, parts[2] if len(parts) == 5 else None)
            reply = envelope["body"] if envelope else None
            if reply and isinstance(reply.get("request_id"), str) and reply.get("device") == envelope["signer"]:
                with self._condition:
                    replies = self._replies.get(reply["request_id"])
                    if replies is not None and not any(r.get("device") == reply["device"] for r in replies):
                        replies.append(reply)
                    self._condition.notify_all()

    def _door_message(self, door: str, kind: str, payload: Dict[str, Any]) -> None:
        if kind == "status":
            status = _clean_status(payload)
            with self._condition:
                self.statuses[door] = status
                # stored statuses come in the burst after subscribing; later ones were sent just now,
                # so their time is now: how "offline since" is known for a last will
                if self._live:
                    self._status_arrived[door] = time.time()
                self._condition.notify_all()
        elif kind == "seen":
            with self._condition:
                self.seen[door] = _text(payload.get("time"))
                within = payload.get("within")
                if isinstance(within, int) and not isinstance(within, bool) and 0 < within < 10 ** 6:
                    self.seen_within[door] = within
        elif self.on_event:
            self.on_event(payload)

    def offline_since(self, door: str) -> Optional[str]:
        """When `door` went offline (UTC ISO), if anyone can know: it said so as it stopped, or this
        client saw its last will arrive. A will stored before we connected says only that it
        was lost after it was last seen."""
        with self._condition:
            status = self.statuses.get(door) or {}
            if status.get("state") == "online":
                return None
            if status.get("since"):
                return _text(status["since"])
            arrived = self._status_arrived.get(door)
        if arrived is None:
            return None
        return datetime.datetime.fromtimestamp(arrived, datetime.timezone.utc).isoformat(timespec="seconds")

    def wait_for_status(self, predicate: Callable[[Dict[str, Dict[str, Any]]], bool], timeout: float) -> bool:
        """Wait until `predicate(statuses)` holds (statuses arrive on the network thread)."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while not predicate(self.statuses):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(remaining)
            return True

    def refresh(self, timeout: float = 3.0) -> List[str]:
        """Ask every online door for its status now; returns the doors that answered."""
        online = self.online_doors()
        if not online:
            return []
        answered = []
        for reply in self.send("all", "status", {}, timeout=timeout, expect=online):
            if reply.get("ok") and isinstance(reply.get("result"), dict) and reply.get("device"):
                status = _clean_status(reply["result"])
                with self._condition:
                    self.statuses[reply["device"]] = status
                    self.seen[reply["device"]] = status.get("time")
                answered.append(reply["device"])
        return answered

    def online_doors(self) -> List[str]:
        with self._condition:
            return sorted(d for d, s in self.statuses.items() if s.get("state") == "online")

    def send(self, target: str, verb: str, body: Dict[str, Any], timeout: float = 10.0,
             expect: Optional[List[str]] = None) -> List[Dict[str, Any]]:
        """Sign and publish a command; return the replies (one per door) that came in time."""
        if self.operator and "operator" not in body:
            body = dict(body, operator=self.operator)  # signed with the rest: the door records who asked
        request_id = uuid.uuid4().hex
        payload = sign(self.key, verb, target, body, request_id=request_id, reply_to=self.reply_topic)
        topic = topics.command(self.site, target, verb)
        if expect is None:
            expect = self.online_doors() if target == "all" else [target]
        with self._condition:
            self._replies[request_id] = []
        self.link.publish_request(topic, payload, self.reply_topic, request_id.encode())
        deadline = time.monotonic() + timeout
        with self._condition:
            while True:
                replies = self._replies[request_id]
                if {r.get("device") for r in replies} >= set(expect):
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)
            return list(self._replies.pop(request_id))

    def follow_events(self, callback: Callable[[Dict[str, Any]], None], device: str = "+") -> None:
        self.on_event = callback
        self.link.subscribe(topics.events(self.site, device))

    def serve(self, gallery: SiteGallery) -> None:
        """Answer sync requests from doors with the site changes they lack (runs on the network thread)."""
        previous = self.link.on_message

        def on_message(message) -> None:
            parts = message.topic.split("/")
            if len(parts) == 5 and parts[3] == "sync" and parts[4] == "request":
                self._answer_sync(gallery, parts[2], message.payload)
            else:
                previous(message)

        self.link.on_message = on_message
        self.link.subscribe("facegate/%s/+/sync/request" % self.site)

    def _answer_sync(self, gallery: SiteGallery, device: str, payload: bytes) -> None:
        """Only a door this administrator knows, asking in its own name, freshly and once, gets
        the site's changes; they go to that door's own command topic, signed for it alone."""
        envelope = self.door_signed(payload, device)
        if envelope is None:
            return
        body, now = envelope["body"], time.time()
        after, issued, request_id = body.get("after"), envelope.get("issued"), envelope.get("request_id")
        if (envelope.get("verb") != "sync_request" or not isinstance(after, int) or isinstance(after, bool)
                or after < 0 or not isinstance(issued, (int, float)) or not isinstance(request_id, str)):
            throttle.warning("sync:malformed", "ignoring a malformed sync request from %s", device)
            return
        if abs(now - issued) > SYNC_REQUEST_MAX_AGE or request_id in self._sync_requests_seen:
            throttle.warning("sync:stale", "ignoring a stale or repeated sync request from %s", device)
            return
        self._sync_requests_seen = {r: t for r, t in self._sync_requests_seen.items()
                                    if now - t < 2 * SYNC_REQUEST_MAX_AGE}
        self._sync_requests_seen[request_id] = now
        changes = gallery.changes_after(after, max_bytes=self.config.max_payload_kb * 512)
        if not changes:
            return
        log.info("door %s is at change %d: sending %d-%d", device, after, changes[0]["change"],
                 changes[-1]["change"])
        self.link.publish(topics.command(self.site, device, "sync"), sign(self.key, "sync", device, {"changes": changes}))


def _text(value: Any) -> Optional[str]:
    """Plain text from an untrusted message, or None."""
    return value[:100] if plain_text(value) else None


def _clean_status(payload: Dict[str, Any]) -> Dict[str, Any]:
    """A retained status reduced to fields of the types `admin status` prints; nothing else passes."""
    status: Dict[str, Any] = {}
    for key in ("state", "device", "since", "reason", "door", "access", "time", "version"):
        if _text(payload.get(key)) is not None:
            status[key] = _text(payload.get(key))
    gallery = payload.get("gallery")
    if isinstance(gallery, dict):
        status["gallery"] = {k: v for k, v in gallery.items() if k in ("version", "site_version", "door_only_changes", "people", "templates")
                             and isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2 ** 53}
    clock = payload.get("clock")
    if isinstance(clock, dict) and clock.get("synchronised") in (True, False, None):
        status["clock"] = {"synchronised": clock.get("synchronised")}
    if isinstance(payload.get("unsent_events"), int):
        status["unsent_events"] = payload["unsent_events"]
    faults = payload.get("faults")
    if isinstance(faults, dict):
        status["faults"] = {str(_text(k)): _text(v) for k, v in list(faults.items())[:20] if _text(k)}
    matching = payload.get("matching")
    if isinstance(matching, dict):
        status["matching"] = {k: v for k, v in matching.items() if isinstance(v, (int, float, str))
                              and not isinstance(v, bool)}
    decision = payload.get("last_decision")
    if isinstance(decision, dict):
        status["last_decision"] = {k: _text(decision.get(k)) for k in ("kind", "person_id", "person_name", "time")}
    update = payload.get("update")
    if isinstance(update, dict):
        status["update"] = {k: _text(update.get(k)) for k in ("state", "current", "previous", "version", "reason", "time")
                            if _text(update.get(k)) is not None}
    return status
