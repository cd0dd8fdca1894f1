"""The audit outbox: events are stored first, published in order at QoS 1, and marked sent only
when the broker acknowledges them (PUBACK).

At most `in_flight` events wait for their acknowledgement; after a reconnect everything not yet
acknowledged is published again from the first such event, so an event is never lost and the
door's `uid` lets a receiver drop a repeat.
"""

import base64
import json
import threading
import time
from typing import Callable, Dict

from appliance.audit import AuditStore, Event
from appliance.errors import AuditError
from appliance.mqtt import topics

EARLY_ACK_SECONDS = 30  # an acknowledgement meets its event within milliseconds; older ones are others'


class Outbox:
    def __init__(self, link, audit: AuditStore, site: str, device: str, in_flight: int,
                 on_storage_error: Callable[[str], None] = lambda message: None) -> None:
        self.link = link
        self.on_storage_error = on_storage_error
        self.audit = audit
        self.site, self.device = site, device
        self.limit = in_flight
        self.lock = threading.Condition()  # also the agent's wake-up signal
        self._in_flight: Dict[int, int] = {}  # message id -> event id
        self._early_acks: Dict[int, float] = {}  # message id -> when its acknowledgement came
        self._published_up_to = 0

    def restart(self) -> None:
        """After a connect or a disconnect: publish again from the first unacknowledged event."""
        with self.lock:
            self._in_flight.clear()
            self._early_acks.clear()
            self._published_up_to = 0
            self.lock.notify_all()

    def publish_some(self) -> bool:
        """Publish the next events there is room for; False when there was nothing to do (wait)."""
        with self.lock:
            now = time.monotonic()
            for mid, when in list(self._early_acks.items()):
                if now - when > EARLY_ACK_SECONDS:
                    del self._early_acks[mid]
            room = self.limit - len(self._in_flight)
            if not self.link.connected.is_set() or room <= 0:
                return False
            after = self._published_up_to
        events = self.audit.events(limit=room, unsent_only=True, since_id=after)
        for event in events:
            if not self.link.connected.is_set():
                break
            # publish outside our lock: paho calls acknowledged() holding its own lock
            mid = self.link.publish(topics.events(self.site, self.device), self.payload(event))
            with self.lock:
                self._published_up_to = event.id
                acknowledged = self._early_acks.pop(mid, None) is not None  # acknowledged before we noted it
                if not acknowledged:
                    self._in_flight[mid] = event.id
            if acknowledged:
                self._mark_sent(event.id)
        return bool(events)

    def _mark_sent(self, event_id: int) -> None:
        """A failure here (the trail locked, the disk full) must not escape into paho's network
        thread, which would die with it: the event stays unsent and goes again after the next
        reconnect (receivers drop repeats by uid); the door reports a storage fault."""
        try:
            self.audit.mark_sent([event_id])
        except AuditError as err:
            self.on_storage_error(str(err))

    def acknowledged(self, mid: int) -> None:
        """The broker's PUBACK for message `mid` (paho's network thread)."""
        with self.lock:
            event_id = self._in_flight.pop(mid, None)
            if event_id is None:  # a status or a reply, or an event not yet noted
                self._early_acks[mid] = time.monotonic()
            self.lock.notify_all()
        if event_id is not None:
            self._mark_sent(event_id)

    def payload(self, event: Event) -> bytes:
        body = event.summary()
        body.update(sequence=event.id, device=self.device, site=self.site)
        if event.snapshot is not None:
            body["snapshot_jpeg"] = base64.b64encode(event.snapshot).decode("ascii")
        return json.dumps(body, ensure_ascii=False).encode("utf-8")
