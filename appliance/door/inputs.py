"""Door contact and exit button from Linux GPIO, polled and debounced on one thread.

A line is named either by a sysfs value file (/sys/class/gpio/gpio17/value, exported by the
board's init script) or as chip:line for the GPIO character device (needs the `gpiod` Python
bindings, libgpiod 2). Both give a raw level; the active level and the debounce are applied here.
"""

import logging
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from appliance import threads
from appliance.config import InputsConfig
from appliance.errors import ConfigError, InputError

log = logging.getLogger(__name__)



class SysfsLine:
    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.read()  # fail at start, with the path, rather than on the first poll

    def read(self) -> int:
        try:
            text = self.path.read_text().strip()
        except OSError as err:
            raise InputError("cannot read GPIO value file %s: %s (is the line exported?)"
                             % (self.path, err.strerror or err)) from err
        if text not in ("0", "1"):
            raise InputError("GPIO value file %s holds %r, not 0 or 1" % (self.path, text))
        return int(text)

    def close(self) -> None:
        pass


def chip_line(spec: str) -> Optional[Tuple[str, int]]:
    """(the chip's device, the line's offset) for a line named chip:offset (gpiochip0:17), or None
    for a sysfs value file: how every GPIO setting of the door names a line."""
    head, _, tail = spec.rpartition(":")
    if head and tail.isdigit() and "gpiochip" in head:
        return (head if head.startswith("/") else "/dev/" + head), int(tail)
    return None


class CharDeviceLine:
    def __init__(self, spec: str) -> None:
        chip, self.offset = chip_line(spec)
        try:
            import gpiod
            from gpiod.line import Direction
        except ImportError as err:
            raise ConfigError("GPIO line %s needs the gpiod Python bindings (pip install gpiod, "
                              "libgpiod 2); or give a sysfs value file instead" % spec) from err
        try:
            self._request = gpiod.request_lines(
                chip, consumer="facegate",
                config={self.offset: gpiod.LineSettings(direction=Direction.INPUT)})
        except OSError as err:
            raise InputError("cannot request GPIO %s: %s" % (spec, err)) from err

    def read(self) -> int:
        return 1 if self._request.get_value(self.offset).value else 0

    def close(self) -> None:
        self._request.release()


def open_line(spec: str):
    return CharDeviceLine(spec) if chip_line(spec) else SysfsLine(spec)


class DebouncedInput:
    """A logical on/off signal from a raw line: active level applied, changes held `debounce` s."""

    def __init__(self, name: str, line, active_low: bool, debounce: float) -> None:
        self.name = name
        self.line = line
        self.active_low = active_low
        self.debounce = debounce
        self.active = self._level()
        self._candidate = self.active
        self._since = time.monotonic()

    def _level(self) -> bool:
        raw = self.line.read()
        return raw == 0 if self.active_low else raw == 1

    def poll(self, now: float) -> Optional[bool]:
        """The new state when it changed and held for the debounce time, else None."""
        level = self._level()
        if level != self._candidate:
            self._candidate, self._since = level, now
        if self._candidate != self.active and now - self._since >= self.debounce:
            self.active = self._candidate
            return self.active
        return None


class InputWatcher:
    """Polls the inputs on a thread and calls `on_change(name, active)` for debounced changes.

    A line that cannot be read is reported once through `on_error(message)`; when every line
    reads again, `on_recovered()` says so, so a glitch does not leave the door in fault."""

    def __init__(self, inputs: List[DebouncedInput], on_change: Callable[[str, bool], None],
                 poll_seconds: float = 0.02, on_error: Optional[Callable[[str], None]] = None,
                 on_recovered: Optional[Callable[[], None]] = None) -> None:
        self.inputs = inputs
        self.on_change = on_change
        self.on_error = on_error
        self.on_recovered = on_recovered
        self.on_died: Optional[threads.DeathCallback] = None
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @classmethod
    def from_config(cls, config: InputsConfig, on_change, on_error=None, on_recovered=None) -> "InputWatcher":
        inputs = []
        for name, spec, active_low in (("door_contact", config.door_contact, config.door_contact_active_low),
                                       ("exit_button", config.exit_button, config.exit_button_active_low),
                                       ("tamper", config.tamper, config.tamper_active_low),
                                       ("power_fail", config.power_fail, config.power_fail_active_low)):
            if spec:
                inputs.append(DebouncedInput(name, open_line(spec), active_low, config.debounce_ms / 1000))
        return cls(inputs, on_change, config.poll_ms / 1000, on_error, on_recovered)

    def states(self) -> Dict[str, bool]:
        return {i.name: i.active for i in self.inputs}

    def start(self) -> None:
        if self.inputs:
            self._thread = threads.start("gpio", self._loop, self.on_died)

    def _loop(self) -> None:
        failing = set()  # report a broken line once, not at every poll
        while not self._stop.wait(self.poll_seconds):
            now = time.monotonic()
            for signal in self.inputs:
                try:
                    changed = signal.poll(now)
                except InputError as err:
                    if signal.name not in failing and self.on_error:
                        self.on_error(str(err))
                    failing.add(signal.name)
                    continue
                if signal.name in failing:
                    failing.discard(signal.name)
                    log.info("GPIO %s reads again", signal.name)
                    if not failing and self.on_recovered:
                        self.on_recovered()
                if changed is not None:
                    self.on_change(signal.name, changed)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=2)
        for signal in self.inputs:
            signal.line.close()
