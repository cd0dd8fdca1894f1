"""The door controller: the model both state machines act on, and the only code that unlocks.

It turns verification outcomes, the exit button, the door contact and faults into triggers,
drives the relay from the transitions' conditions and callbacks, and records every decision,
alarm and fault as an audit event. Fail secure: any fault locks, and a grant counts only once
the relay write succeeded.
"""

import datetime
import logging
import threading
import time
from typing import Callable, Dict, List, Optional

from appliance.audit import AuditStore, Event
from appliance.config import DoorConfig
from appliance.door.access_rules import local_now
from appliance.door.schedule import is_open, parse_schedule
from appliance.door.states import Access, Door, access_machine, door_machine
from appliance.errors import AuditError, RelayError, StorageError

log = logging.getLogger(__name__)

STORAGE = "storage"  # the fault source of a record that could not be written


class DoorController:
    def __init__(self, config: DoorConfig, relay, audit: Optional[AuditStore] = None,
                 refresh_seconds: float = 1.0, reconnect_max_seconds: float = 10.0) -> None:
        self.config = config
        self.relay = relay
        self.audit = audit
        self.listeners: List[Callable[[Event], None]] = []
        self.faults: Dict[str, str] = {}
        self.schedule = parse_schedule(config.always_open)
        self.schedule_open = False
        self.refresh_seconds = refresh_seconds
        self.reconnect_max_seconds = reconnect_max_seconds
        self.last_released_at: Optional[float] = None  # monotonic time the unlock write finished
        self._last_grant: Dict[str, float] = {}
        self._opened_by: Optional[str] = None
        self._release_error: Optional[str] = None
        self._lock_error: Optional[str] = None
        self._lock = threading.RLock()
        self._storage_since: Optional[str] = None
        self._next_refresh = 0.0
        self._next_reconnect = 0.0
        self._reconnect_wait = 0.5
        self.access_machine = access_machine(self, config.unlock_seconds, config.deny_seconds,
                                             config.cooldown_seconds)
        self.door_machine = door_machine(self, config.held_open_seconds)

    # -- callbacks named in the transitions tables -------------------------------------------

    def release_relay(self, *args, **kwargs) -> bool:
        """Condition of every transition into `granted`: True only if the unlock write succeeded."""
        try:
            self.relay.unlock()
        except RelayError as err:
            self._release_error = str(err)
            return False
        self.last_released_at = time.monotonic()
        if self.door is Door.closed:
            self.release()
        return True

    def relay_released(self, *args, **kwargs) -> bool:
        return bool(self.relay.unlocked)

    def lock_relay(self, *args, **kwargs) -> None:
        if self.schedule_open:
            return  # the schedule holds the door open; the grant's end changes nothing
        self._lock_now()

    def force_lock(self, *args, **kwargs) -> None:
        self._lock_now()

    def _lock_now(self) -> None:
        try:
            self.relay.lock()
        except RelayError as err:
            # an unreachable relay holds nobody's door open; the next tick reports the fault,
            # because this may run inside a transition that cannot start another one
            self._lock_error = str(err)
        if self.door is Door.unlocked:
            self.secure()

    def healthy(self, *args, **kwargs) -> bool:
        # a full disk stops what must be recorded first (remote commands), not faces: see storage_failed
        return not (set(self.faults) - {STORAGE}) and bool(self.relay.connected)

    def access_changed(self, *args, **kwargs) -> None:
        log.info("access -> %s", self.access.value)

    def door_changed(self, *args, **kwargs) -> None:
        log.info("door -> %s", self.door.value)

    def on_enter_forced_open(self, *args, **kwargs) -> None:
        self.emit(Event("alarm", detail={"alarm": "forced_open",
                                         "message": "door opened without a grant"}))

    def on_enter_held_open(self, *args, **kwargs) -> None:
        self.emit(Event("alarm", detail={"alarm": "held_open", "message": "door open longer than %.0f s"
                                         % self.config.held_open_seconds}))

    # -- what the service and the inputs call ------------------------------------------------

    def emit(self, event: Event) -> None:
        self._store(event)  # if it fails, the decision stands; the log keeps what the trail could not
        for listener in self.listeners:
            listener(event)

    def _store(self, event: Event) -> bool:
        """Into the audit trail; False, with a storage fault, when it could not be written."""
        if self.audit is None:
            return True
        if STORAGE in self.faults:
            self._storage_recovered()  # the fault goes into the trail before what follows it
        try:
            self.audit.record(event)
        except AuditError as err:
            log.error("%s", err)
            self.storage_failed(str(err))
            return False
        return True

    def storage_failed(self, message: str) -> None:
        """A record could not be written (disk full, database locked or corrupt). A fault the
        status and the log show; it does not lock out faces, but what must be recorded before it
        is done (a remote command) is refused until a write succeeds again."""
        with self._lock:
            if STORAGE not in self.faults:
                log.error("fault (%s): %s", STORAGE, message)
                self._storage_since = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            self.faults[STORAGE] = message

    def _storage_recovered(self) -> None:
        """If space is back, the trail gets the fault it could not record, then its end."""
        with self._lock:
            message = self.faults.get(STORAGE)
            events = (Event("fault", detail={"source": STORAGE, "message": message, "since": self._storage_since}),
                      Event("recovered", detail={"source": STORAGE}))
            try:
                for event in events:
                    self.audit.record(event)
            except AuditError:
                return  # still failing: the fault stands
            self.faults.pop(STORAGE, None)
            log.info("storage writable again (fault since %s)", self._storage_since)
        for event in events:
            for listener in self.listeners:
                listener(event)

    def recently_granted(self, person_id: str, now: Optional[float] = None) -> bool:
        now = time.monotonic() if now is None else now
        last = self._last_grant.get(person_id)
        if last is None:
            return False
        door_still_open = self._opened_by == person_id and self.door in (Door.open, Door.held_open)
        return now - last < self.config.person_cooldown_seconds or door_still_open

    def grant_person(self, event: Event, first_captured: Optional[float] = None) -> bool:
        """Unlock for a verified person; False when suppressed, refused or the relay failed.

        `first_captured` is when the face was first seen: the grant records the latency from
        then to the finished unlock write."""
        with self._lock:
            if self.access is not Access.verifying:
                return False
            if self.recently_granted(event.person_id):
                log.info("%s was granted moments ago: not unlocking again", event.person_name)
                self.repeat()
                return False
            self._release_error = None
            if not self.grant():
                self.report_fault("relay", self._release_error or "unlock failed")
                return False
            self._last_grant[event.person_id] = self.last_released_at
            self._opened_by = event.person_id
            if first_captured is not None:
                event.latency_ms = round((self.last_released_at - first_captured) * 1000, 1)
            self.emit(event)
            return True

    def deny_face(self, event: Event) -> None:
        with self._lock:
            if self.access is Access.verifying:
                self.deny()
                self.emit(event)

    def _release_on_request(self, event: Event, record_first: bool = False) -> bool:
        """Unlock for a request that needs no face (exit button, remote unlock); False if refused.
        With `record_first` the event must be in the audit trail before the relay moves."""
        with self._lock:
            if not self.may_exit_request():
                log.info("%s ignored in state %s", event.kind, self.access.value)
                return False
            if record_first and not self._store(event):
                raise StorageError("%s: the door stays locked" % self.faults.get(STORAGE))
            self._release_error = None
            if not self.exit_request():
                self.report_fault("relay", self._release_error or "unlock failed")
                return False
            self._opened_by = None
            if record_first:
                for listener in self.listeners:
                    listener(event)
            else:
                self.emit(event)
            return True

    def exit_pressed(self) -> None:
        self._release_on_request(Event("exit", detail={"source": "exit_button"}))

    def remote_unlock(self, reason: str, origin: Optional[dict] = None, source: str = "mqtt") -> bool:
        """A signed, fresh, first-seen unlock command (checked by the MQTT side), or the web page's
        relay test (a logged-in user), asks to open; `origin` (key fingerprint or user, operator,
        request id) goes into the audit event."""
        detail = {"source": source, "reason": reason}
        if origin:
            detail["origin"] = origin
        return self._release_on_request(Event("remote_unlock", detail=detail), record_first=True)

    def contact_changed(self, door_open: bool) -> None:
        if door_open:
            self.opened()
        elif self.door is not Door.closed and self.door is not Door.unlocked:
            self.shut()

    def report_fault(self, source: str, message: str) -> None:
        with self._lock:
            known = self.faults.get(source) == message
            self.faults[source] = message
            if self.may_fail():
                self.fail()
            else:
                self.force_lock()
            self._lock_error = None  # already reported as this fault
            if not known:
                log.error("fault (%s): %s", source, message)
                self.emit(Event("fault", detail={"source": source, "message": message}))

    def clear_fault(self, source: str) -> None:
        with self._lock:
            if self.faults.pop(source, None) is None:
                return
            self.emit(Event("recovered", detail={"source": source}))
            if self.access is Access.fault and self.healthy():
                self.recover()

    def tick(self, now: Optional[float] = None, wall: Optional[datetime.datetime] = None) -> None:
        """Periodic duties: the schedule, relay refresh and reconnection. Call a few times a second."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._lock_error and "relay" not in self.faults:
                self.report_fault("relay", self._lock_error)
            if "relay" in self.faults:
                self._try_reconnect(now)
            elif now >= self._next_refresh:
                self._next_refresh = now + self.refresh_seconds
                try:
                    self.relay.refresh()
                except RelayError as err:
                    self.report_fault("relay", str(err))
            if self.schedule and "relay" not in self.faults:
                self._apply_schedule(wall or local_now(self.config.time_zone))

    def _try_reconnect(self, now: float) -> None:
        if now < self._next_reconnect:
            return
        try:
            self.relay.reconnect()
        except RelayError as err:
            self._next_reconnect = now + self._reconnect_wait
            self._reconnect_wait = min(self._reconnect_wait * 2, self.reconnect_max_seconds)
            log.debug("relay still unreachable: %s", err)
            return
        self._reconnect_wait = 0.5
        if self.door is Door.unlocked:
            self.secure()
        self.clear_fault("relay")

    def _apply_schedule(self, wall: datetime.datetime) -> None:
        should_open = is_open(self.schedule, wall) and self.access is not Access.fault
        if should_open == self.schedule_open:
            return
        self.schedule_open = should_open
        try:
            if should_open:
                self.relay.unlock()
                if self.door is Door.closed:
                    self.release()
            elif self.access is not Access.granted:
                self._lock_now()
        except RelayError as err:
            self.report_fault("relay", str(err))
            return
        self.emit(Event("schedule", detail={"always_open": should_open}))

    def _cancel_timers(self) -> None:
        for machine in (self.access_machine, self.door_machine):
            for state in machine.states.values():
                timer = getattr(state, "runner", {}).pop(id(self), None)
                if timer is not None:
                    timer.cancel()

    def shutdown(self) -> None:
        """Lock and let go of the relay; safe to call more than once."""
        with self._lock:
            self._cancel_timers()
            self.relay.close()
