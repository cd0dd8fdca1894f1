"""Wiegand output from user space: a frame's pulses played on two GPIO lines (DATA0, DATA1).

Lines are driven through the kernel's sysfs GPIO files (`/sys/class/gpio/gpioN/value`, held
open, one pwrite per edge; a kernel built with CONFIG_GPIO_SYSFS), which need no library. The
pulse timing comes from a busy wait on the monotonic clock, with the interpreter's switch interval
raised and the garbage collector held for the frame's 50-70 ms, so no other thread of the door
cuts into a pulse. User space cannot promise a pulse all the same: the kernel may preempt the
process mid-pulse. So every frame's edges are measured as it plays and decoded as a panel
would; a frame a panel would refuse is played again after the silence that ends a frame, up to
3 times, then the door reports a `panel` fault. A kernel Wiegand driver, where the board's
kernel has one, times pulses in the kernel instead. (A real-time scheduling class for the frame
was tried and measured worse on this host, a virtual machine whose pauses come from outside it.)
"""

import gc
import os
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from appliance.errors import FaceGateError
from appliance.panel import wiegand

ATTEMPTS = 3  # plays of one frame before the door gives up and reports a fault
FRAME_GAP_S = 0.03  # a panel ends a frame after about 25 ms of silence
Edge = Tuple[int, str, int]  # (microseconds from the frame's start, "D0" or "D1", level)


def export(root: Path, number: int) -> Path:
    """GPIO `number`'s sysfs folder, asking the kernel for it first when it is not there yet."""
    line = root / ("gpio%d" % number)
    if not line.exists():
        (root / "export").write_text(str(number))
    return line


class SysfsLines:
    """GPIO lines as outputs, idle high, through sysfs: {name: GPIO number}; `settings` names
    them in the error."""

    def __init__(self, numbers: Dict[str, int], root: str = "/sys/class/gpio",
                 settings: str = "panel.wiegand_data0 and wiegand_data1") -> None:
        self.root = Path(root)
        self._fds: Dict[str, int] = {}
        try:
            for name, number in numbers.items():
                line = export(self.root, number)
                (line / "direction").write_text("high")  # an output, and high, in one write: no glitch
                self._fds[name] = os.open(str(line / "value"), os.O_WRONLY)
        except OSError as err:
            self.close()
            raise FaceGateError("cannot drive GPIO %s through %s: %s (check %s, and that the lines are free)"
                                % (" and ".join(map(str, numbers.values())), root, err, settings)) from err

    def set(self, line: str, level: int) -> None:
        os.pwrite(self._fds[line], b"1" if level else b"0", 0)

    def names(self) -> List[str]:
        return list(self._fds)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


class RecordingLines:
    """A logic analyser in memory: every set() with its time. What the tests and the benchmark
    decode, since this machine has no GPIO and cannot load gpio-sim (a stand-in, said so)."""

    def __init__(self) -> None:
        self.edges: List[Tuple[int, str, int]] = []  # (perf_counter_ns, line, level)

    def set(self, line: str, level: int) -> None:
        self.edges.append((time.perf_counter_ns(), line, level))

    def close(self) -> None:
        pass


def play(edges: Sequence[Edge], lines, spin_from_us: int = 1500) -> List[Edge]:
    """Drive `edges` (wiegand.pulses: a low edge, then its high edge, per bit) on `lines`; the
    achieved edges, measured as each was written. A bit starts at its time from the frame's start
    (a sleep that overshot makes it late, never the frame longer by the sum), but never sooner
    than half its planned silence after the last pulse ended, so a pulse that ended late (the
    process was preempted) is not followed by one a panel would take for noise; its pulse is
    timed from the moment it went low, so a late start never shortens it. Waits longer than
    `spin_from_us` sleep most of the way, then spin."""
    switch = sys.getswitchinterval()
    sys.setswitchinterval(0.1)  # other Python threads wait for the frame, not the frame for them
    collecting = gc.isenabled()
    gc.disable()  # no collection in the middle of a pulse
    achieved = []
    try:
        start = time.perf_counter_ns()
        went_low = went_high = start
        previous_at_us = high_at_us = 0
        for at_us, line, level in edges:
            if level == 0:  # on time, but never sooner than half the planned silence after the last pulse
                due = max(start + at_us * 1000, went_high + (at_us - high_at_us) * 500)
            else:  # the pulse's width, from when this line actually went low
                due = went_low + (at_us - previous_at_us) * 1000
            left = due - time.perf_counter_ns()
            if left > spin_from_us * 1000:
                time.sleep((left - spin_from_us * 1000) / 1e9)
            while time.perf_counter_ns() < due:
                pass
            before = time.perf_counter_ns()
            lines.set(line, level)
            if level == 0:
                went_low, previous_at_us = before, at_us
            else:
                went_high, high_at_us = before, at_us
            achieved.append(((before - start) // 1000, line, level))
    finally:
        for line in ("D0", "D1"):
            lines.set(line, 1)  # idle high, whatever happened
        if collecting:
            gc.enable()
        sys.setswitchinterval(switch)
    return achieved


class WiegandOutput:
    """A reader's output to a panel's Wiegand input: `send(facility, number)` plays the frame and
    checks its own timing as a panel would read it."""

    def __init__(self, lines, bits: int = 26, pulse_us: int = wiegand.PULSE_US,
                 interval_us: int = wiegand.INTERVAL_US) -> None:
        self.lines = lines
        self.bits = bits
        self.pulse_us = pulse_us
        self.interval_us = interval_us
        self.secure = True  # nothing to negotiate: the service's panel check passes
        self.last: Optional[List[Edge]] = None
        self._lock = threading.Lock()
        for line in ("D0", "D1"):
            lines.set(line, 1)

    def send(self, facility: int, number: int) -> str:
        """Play the frame; one whose own timing a panel would refuse is played again after the
        silence that ends a frame (a panel drops a bad frame; it never reads half of one)."""
        bits = wiegand.frame(facility, number, self.bits)
        problem = ""
        with self._lock:
            for attempt in range(1, ATTEMPTS + 1):
                if attempt > 1:
                    time.sleep(FRAME_GAP_S)
                achieved = play(wiegand.pulses(bits, self.pulse_us, self.interval_us), self.lines)
                self.last = achieved
                try:
                    if wiegand.bits_from_edges(achieved) == bits:
                        return "card %d:%d as Wiegand %d%s" % (facility, number, self.bits,
                                                              " (played %d times)" % attempt if attempt > 1 else "")
                    problem = "the frame did not leave whole"
                except FaceGateError as err:
                    problem = str(err)
        raise FaceGateError("the Wiegand frame for card %d:%d left with bad timing %d times (%s): the panel did not "
                            "read it; a busy board needs a kernel Wiegand driver" % (facility, number, ATTEMPTS, problem))

    def close(self) -> None:
        self.lines.close()
