"""A Wiegand card reader's two wires (DATA0, DATA1) on two GPIO inputs, for card + face.

A reader pulls DATA0 low for a 0 and DATA1 low for a 1, a bit every 1-2 ms, and a frame ends
with about 25 ms of silence. Each falling edge is a bit; a frame of 26 or 34 bits whose parity
holds is a card (`wiegand.parse`), anything else is logged and dropped: a bit lost while the
board was busy fails the parity, and the holder presents the card again.

The edges are the kernel's, not a poll of the levels (a 50 us pulse is gone long before a poll):
- a line named chip:offset (the RV1126B's kernel) is requested with falling-edge events from the
  GPIO character device, through the gpiod bindings (libgpiod 2). The kernel timestamps and
  queues every edge, so the door's own scheduling cannot lose or reorder one.
- a line named by its sysfs value file (the RV1126's 4.19 kernel; exported here if it is not yet)
  has its `edge` set to falling and is waited on with poll(). The kernel counts an edge,
  not each edge: two edges of one line closer than the door's wake-up (bits are 1-2 ms apart)
  become one, which the frame's length then refuses; an edge on each line before the door woke
  leaves their order unknown, and the frame is dropped.
"""

import logging
import os
import select
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from appliance import threads
from appliance.door.inputs import chip_line
from appliance.errors import ConfigError, FaceGateError, InputError
from appliance.panel import wiegand
from appliance.panel.card_reader import CardQueue
from appliance.panel.wiegand_out import export

log = logging.getLogger(__name__)

FRAME_GAP_NS = 25_000_000  # silence that ends a frame
MAX_BITS = 64  # a longer burst is noise on the wires, not a card
UNORDERED = "D?"  # both lines fell before the door woke: which bit came first is unknown
Edge = Tuple[str, int]  # ("D0", "D1" or UNORDERED, monotonic nanoseconds)


class FrameDecoder:
    """Falling edges in, frames (lists of bits) out once their silence has passed. A frame with
    bits of unknown order is dropped whole: swapping two bits of one half keeps its parity, so
    the parity would not catch the wrong card."""

    def __init__(self, gap_ns: int = FRAME_GAP_NS) -> None:
        self.gap_ns = gap_ns
        self.bits: List[int] = []
        self.unordered = False
        self.last_ns: Optional[int] = None

    def edge(self, line: str, at_ns: int) -> Optional[List[int]]:
        """Add one bit; the frame before it when this bit starts a new one."""
        done = self.due(at_ns)
        if line == UNORDERED:
            self.unordered = True
        if len(self.bits) < MAX_BITS:
            self.bits.append(1 if line == "D1" else 0)
        self.last_ns = at_ns
        return done

    def due(self, now_ns: int) -> Optional[List[int]]:
        """The frame received so far, once `gap_ns` has passed without an edge."""
        if self.bits and self.last_ns is not None and now_ns - self.last_ns >= self.gap_ns:
            done, self.bits = self.bits, []
            if self.unordered:
                self.unordered = False
                log.warning("card reader: %d bits dropped, two of them arrived together in unknown order; "
                            "present the card again", len(done))
                return None
            return done
        return None


class SysfsEdges:
    """Falling edges of two exported sysfs GPIO lines, named by their value files."""

    def __init__(self, data0: str, data1: str) -> None:
        self._names: Dict[int, str] = {}
        self._poll = select.poll()
        try:
            for name, value in (("D0", data0), ("D1", data1)):
                folder = Path(value).parent
                if folder.name[4:].isdigit() and (folder.parent / "export").exists():
                    export(folder.parent, int(folder.name[4:]))
                (folder / "direction").write_text("in")
                (folder / "edge").write_text("falling")
                fd = os.open(value, os.O_RDONLY)
                self._names[fd] = name
                os.read(fd, 8)  # what is there now is not an edge
                self._poll.register(fd, select.POLLPRI | select.POLLERR)
        except OSError as err:
            self.close()
            raise InputError("cannot watch Wiegand reader lines %s and %s: %s (are they exported, and is the kernel's "
                             "sysfs GPIO there?)" % (data0, data1, err)) from err

    def wait(self, timeout_s: float) -> List[Edge]:
        ready = self._poll.poll(timeout_s * 1000)
        now = time.monotonic_ns()
        for fd, _ in ready:
            os.lseek(fd, 0, os.SEEK_SET)
            os.read(fd, 8)  # read to arm the next edge
        if len(ready) > 1:  # one bit per line, in an order poll() does not keep
            return [(UNORDERED, now), (UNORDERED, now)]
        return [(self._names[fd], now) for fd, _ in ready]

    def close(self) -> None:
        for fd in self._names:
            os.close(fd)
        self._names.clear()


class CharDeviceEdges:
    """Falling edges of two lines of one GPIO chip (chip:offset), timestamped by the kernel."""

    def __init__(self, data0: str, data1: str) -> None:
        try:
            import gpiod
            from gpiod.line import Direction, Edge as LineEdge
        except ImportError as err:
            raise ConfigError("Wiegand reader lines %s and %s need the gpiod Python bindings (pip install gpiod, "
                              "libgpiod 2); or give sysfs value files instead" % (data0, data1)) from err
        (chip, offset0), (other_chip, offset1) = chip_line(data0), chip_line(data1)
        if chip != other_chip:
            raise ConfigError("Wiegand reader lines %s and %s must be on one GPIO chip" % (data0, data1))
        self._names = {offset0: "D0", offset1: "D1"}
        try:
            self._request = gpiod.request_lines(
                chip, consumer="facegate wiegand",
                config={(offset0, offset1): gpiod.LineSettings(direction=Direction.INPUT,
                                                               edge_detection=LineEdge.FALLING)})
        except OSError as err:
            raise InputError("cannot watch Wiegand reader lines %s and %s: %s" % (data0, data1, err)) from err

    def wait(self, timeout_s: float) -> List[Edge]:
        if not self._request.wait_edge_events(timeout_s):
            return []
        return [(self._names[event.line_offset], event.timestamp_ns) for event in self._request.read_edge_events()]

    def close(self) -> None:
        self._request.release()


def open_edges(data0: str, data1: str):
    """The edge source the lines' names call for (named as door inputs name lines: inputs.py)."""
    if chip_line(data0) and chip_line(data1):
        return CharDeviceEdges(data0, data1)
    return SysfsEdges(data0, data1)


class ReaderSignals:
    """The reader's LED and beeper inputs (most readers: pulled low to light green, to beep),
    driven from their own thread so the door's loop never waits for a beep."""

    LED_SECONDS, BEEP_SECONDS = 2.0, 0.15

    def __init__(self, lines) -> None:
        self.lines = lines  # SysfsLines with "LED" and/or "BEEP", idle high
        self._lock = threading.Lock()

    def indicate(self, granted: bool) -> None:
        threading.Thread(target=self._play, args=(granted,), name="reader signals", daemon=True).start()

    def _play(self, granted: bool) -> None:
        with self._lock:  # one answer at a time, whole
            names = self.lines.names()
            if granted and "LED" in names:
                self.lines.set("LED", 0)
            for _ in range(1 if granted else 3):
                if "BEEP" in names:
                    self.lines.set("BEEP", 0)
                    time.sleep(self.BEEP_SECONDS)
                    self.lines.set("BEEP", 1)
                    time.sleep(self.BEEP_SECONDS)
            if granted and "LED" in names:
                time.sleep(max(0.0, self.LED_SECONDS - 2 * self.BEEP_SECONDS))
                self.lines.set("LED", 1)

    def close(self) -> None:
        with self._lock:
            self.lines.close()


class WiegandCardReader(CardQueue):
    """Cards from a Wiegand reader's wires, decoded on a thread; a line that cannot be watched is a
    `card_reader` fault, tried again every second and cleared when it opens. `signals`, if given,
    answers at the reader (its LED and beeper)."""

    def __init__(self, open_source: Callable[[], object], on_fault: Callable[[str], None],
                 on_back: Callable[[], None], on_died=None, signals: Optional[ReaderSignals] = None) -> None:
        super().__init__()
        self.signals = signals
        self.open_source = open_source
        self.on_fault, self.on_back = on_fault, on_back
        self.decoder = FrameDecoder()
        self._stop = threading.Event()
        self.connected = threading.Event()
        self._thread = threads.start("wiegand card reader", self._run, on_died)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                source = self.open_source()
            except FaceGateError as err:
                self.on_fault("card reader: %s" % err)
                self._stop.wait(1.0)
                continue
            self.connected.set()
            self.on_back()
            try:
                while not self._stop.is_set():
                    # a frame in progress is ended by its silence; between cards, wake seldom
                    for line, at_ns in source.wait(0.01 if self.decoder.bits else 0.5):
                        self._frame(self.decoder.edge(line, at_ns))
                    self._frame(self.decoder.due(time.monotonic_ns()))
            except OSError as err:
                self.connected.clear()
                self.on_fault("card reader: its Wiegand lines cannot be read: %s" % err)
                self._stop.wait(1.0)
            finally:
                source.close()

    def _frame(self, bits: Optional[List[int]]) -> None:
        if not bits:
            return
        try:
            self.keep(wiegand.parse(bits))
        except FaceGateError as err:
            log.warning("card reader sent %d bits that are not a card: %s", len(bits), err)

    def indicate(self, granted: bool) -> None:
        if self.signals is not None:
            self.signals.indicate(granted)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        if self.signals is not None:
            self.signals.close()
