"""An LCUS relay on a pseudo-terminal: for tests, benchmarks and `make run` without hardware.

The emulator holds the master side of a pty and publishes the slave's path (optionally as a
stable symlink, so it can be "unplugged" and "plugged back" under the same name). It decodes
LCUS frames and keeps every byte and state change with its arrival time.
"""

import os
import select
import threading
import time
import tty
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional


@dataclass
class RelayEvent:
    at: float  # time.monotonic() when the frame arrived
    channel: int
    on: bool


class RelayEmulator:
    def __init__(self, link: Optional[str] = None,
                 on_change: Optional[Callable[[RelayEvent], None]] = None) -> None:
        self.link = Path(link) if link else None
        self.on_change = on_change
        self.events: List[RelayEvent] = []
        self.received = bytearray()
        self.bad_frames = 0
        self.states = {}  # channel -> on
        self._condition = threading.Condition()
        self._master: Optional[int] = None
        self._slave: Optional[int] = None
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self.plug()

    @property
    def path(self) -> str:
        return str(self.link) if self.link else self.slave_path

    def plug(self) -> None:
        """Create a new pty (a relay plugged in) and start reading it."""
        master, slave = os.openpty()
        tty.setraw(master)
        tty.setraw(slave)
        self.slave_path = os.ttyname(slave)
        # keep the slave open ourselves too, so the pty does not hang up between client opens
        self._slave = slave
        self._master = master
        if self.link:
            temporary = self.link.with_name(self.link.name + ".new")
            if temporary.is_symlink() or temporary.exists():
                temporary.unlink()
            temporary.symlink_to(self.slave_path)
            os.replace(temporary, self.link)
        self._stop.clear()
        self._thread = threading.Thread(target=self._read_loop, args=(master,), name="relay-emulator",
                                        daemon=True)
        self._thread.start()

    def unplug(self) -> None:
        """Close the pty: the client's next write fails as with a pulled USB cable."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        for fd in (self._master, self._slave):
            if fd is None:
                continue  # already unplugged
            try:
                os.close(fd)
            except OSError:
                pass
        self._master = self._slave = None
        if self.link and self.link.is_symlink():
            self.link.unlink()

    def _read_loop(self, master: int) -> None:
        pending = bytearray()
        while not self._stop.is_set():
            ready, _, _ = select.select([master], [], [], 0.05)
            if not ready:
                continue
            try:
                data = os.read(master, 256)
            except OSError:
                return
            now = time.monotonic()
            with self._condition:
                self.received.extend(data)
                pending.extend(data)
                self._decode(pending, now)
                self._condition.notify_all()

    def _decode(self, pending: bytearray, now: float) -> None:
        while len(pending) >= 4:
            if pending[0] != 0xA0:
                del pending[0]
                self.bad_frames += 1
                continue
            channel, state, checksum = pending[1], pending[2], pending[3]
            if state not in (0, 1) or checksum != (0xA0 + channel + state) & 0xFF:
                del pending[0]
                self.bad_frames += 1
                continue
            del pending[:4]
            event = RelayEvent(now, channel, bool(state))
            changed = self.states.get(channel) != event.on
            self.states[channel] = event.on
            self.events.append(event)
            if changed and self.on_change:
                self.on_change(event)

    def changes(self, channel: int = 1) -> List[RelayEvent]:
        """The frames that changed the relay's state (refreshes of the same state left out)."""
        with self._condition:
            changes, state = [], None
            for event in self.events:
                if event.channel == channel and event.on != state:
                    changes.append(event)
                    state = event.on
            return changes

    def is_on(self, channel: int = 1) -> bool:
        with self._condition:
            return bool(self.states.get(channel))

    def wait_for(self, predicate: Callable[["RelayEmulator"], bool], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._condition:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(remaining)
            return True

    def close(self) -> None:
        self.unplug()
