"""The administrator's MQTT client: signed commands with replies, door status, events, sync.

A command to one door waits for that door's reply; a command to the whole site waits for a
reply from every door whose retained status says online (or until the timeout). `serve`
answers doors' requests for site changes they missed.
"""

import datetime
import json
import logging
import threading
import time
import uuid
from typing import Any, Callable, Dict, List, Optional

from appliance.admin.site import SiteGallery
from appliance.config import MqttConfig
from appliance.mqtt import topics
from appliance.mqtt.link import MqttLink
from appliance.mqtt.signing import sign
from appliance.errors import AdminError

log = logging.getLogger(__name__)



def _operator() -> str:
    """Who runs the administrator's tool: $FACEGATE_OPERATOR, else the login name."""
    import getpass
    import os

    try:
        return (os.environ.get("FACEGATE_OPERATOR") or getpass.getuser())[:64]
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return ""


class AdminClient:
    def __init__(self, config: MqttConfig, key: bytes, link: Optional[MqttLink] = None) -> None:
        self.config = config
        self.key = key
        self.site = config.site
        self.name = "admin-%s" % uuid.uuid4().hex[:8]
        self.operator = _operator()
        self.reply_topic = topics.client_reply(self.site, self.name)
        self.link = link or MqttLink(config, "facegate-%s-%s" % (self.site, self.name), persistent=False)
        self.statuses: Dict[str, Dict[str, Any]] = {}
        self.seen: Dict[str, str] = {}  # door -> UTC time of its last status, kept past its last will
        self._status_arrived: Dict[str, float] = {}  # door -> when a live (not stored) status came
        self._live = False  # past the burst of stored (retained) messages that follows subscribing
        self.on_event: Optional[Callable[[Dict[str, Any]], None]] = None
        self._replies: Dict[str, List[Dict[str, Any]]] = {}
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

    def _message(self, message) -> None:
        try:
            payload = json.loads(message.payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            log.warning("ignoring a malformed message on %s", message.topic)
            return
        parts = message.topic.split("/")
        if len(parts) == 4 and parts[3] == "status" and isinstance(payload, dict):
            with self._condition:
                self.statuses[parts[2]] = payload
                # stored statuses come in the burst after subscribing; later ones were sent just now,
                # so their time is now: how "offline since" is known for a last will
                if self._live:
                    self._status_arrived[parts[2]] = time.time()
                self._condition.notify_all()
            return
        if len(parts) == 4 and parts[3] == "seen" and isinstance(payload, dict):
            with self._condition:
                self.seen[parts[2]] = str(payload.get("time"))
            return
        if len(parts) == 4 and parts[3] == "events":
            if self.on_event:
                self.on_event(payload)
            return
        if "reply" in parts and isinstance(payload, dict) and payload.get("request_id"):
            with self._condition:
                replies = self._replies.setdefault(payload["request_id"], [])
                if not any(r.get("device") == payload.get("device") for r in replies):
                    replies.append(payload)
                self._condition.notify_all()

    def offline_since(self, door: str) -> Optional[str]:
        """When `door` went offline (UTC ISO), if anyone can know: it said so as it stopped, or this
        client saw its last will arrive. A will stored before we connected says only that it
        was lost after it was last seen."""
        with self._condition:
            status = self.statuses.get(door) or {}
            if status.get("state") == "online":
                return None
            if status.get("since"):
                return str(status["since"])
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
                with self._condition:
                    self.statuses[reply["device"]] = reply["result"]
                    self.seen[reply["device"]] = str(reply["result"].get("time"))
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
        envelope = sign(self.key, verb, target, body)
        request_id = envelope["request_id"]
        topic = topics.command(self.site, target, verb)
        if expect is None:
            expect = self.online_doors() if target == "all" else [target]
        with self._condition:
            self._replies[request_id] = []
        self.link.publish_request(topic, json.dumps(envelope, ensure_ascii=False).encode("utf-8"),
                                  self.reply_topic, request_id.encode())
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
        try:
            after = int(json.loads(payload.decode("utf-8")).get("after", 0))
        except (UnicodeDecodeError, ValueError, AttributeError, TypeError):
            log.warning("ignoring a malformed sync request from %s", device)
            return
        changes = gallery.changes_after(after, max_bytes=self.config.max_payload_kb * 512)
        if not changes:
            return
        log.info("door %s is at change %d: sending %d-%d", device, after, changes[0]["change"],
                 changes[-1]["change"])
        envelope = sign(self.key, "sync", device, {"changes": changes})
        self.link.publish(topics.command(self.site, device, "sync"),
                          json.dumps(envelope, ensure_ascii=False).encode("utf-8"))
