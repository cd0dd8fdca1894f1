"""What the access panel tells its reader to show and sound: OSDP's LED and buzzer commands.

In reader mode the panel decides, so the panel's answer to a card is its LED and buzzer command
(most panels flash the reader's LED green on a grant and sound the buzzer on a denial). This door
has no LED or buzzer of its own, so it keeps the panel's indication as OSDP defines it and shows
it where the door shows itself: its status, which the web page's header and Door page read.

OSDP (SIA OSDP 2.2, osdp_LED and osdp_BUZ): an LED has a permanent state and a temporary one
that overrides it for `timer_count` x 100 ms; each is an on colour and an off colour shown for
`on_count` and `off_count` x 100 ms in turn. A buzzer sounds `rep_count` cycles of `on_count` and
`off_count` x 100 ms (0 repeats: until told otherwise).
"""

import math
import threading
import time
from typing import Optional

COLOURS = {0: "off", 1: "red", 2: "green", 3: "amber", 4: "blue", 5: "magenta", 6: "cyan", 7: "white"}
TICK_S = 0.1  # OSDP counts LED and buzzer times in 100 ms


def describe(command: dict) -> str:
    """An LED state in words: "green", "green flashing", "red/green alternating", "off"."""
    on = COLOURS.get(command.get("on_color", 0), "colour %s" % command.get("on_color"))
    off = COLOURS.get(command.get("off_color", 0), "colour %s" % command.get("off_color"))
    if not command.get("off_count"):
        return on
    if not command.get("on_count"):
        return off
    if off == "off":
        return "%s flashing" % on
    return "%s/%s alternating" % (on, off)


class PanelIndication:
    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self.permanent = "off"
        self.temporary: Optional[str] = None
        self.temporary_until = 0.0
        self.buzzer_until = 0.0
        self._lock = threading.Lock()

    def command(self, command: dict, kind: str) -> None:
        """Take one of the panel's commands (`kind` "LED" or "buzzer"; others are not shown)."""
        now = self.clock()
        code = command.get("control_code", 0)
        with self._lock:
            if kind == "LED" and command.get("temporary"):
                if code == 1:  # cancel the temporary state: the permanent one shows
                    self.temporary = None
                elif code == 2:
                    self.temporary = describe(command)
                    self.temporary_until = now + command.get("timer_count", 0) * TICK_S
            elif kind == "LED" and code == 1:
                self.permanent = describe(command)
            elif kind == "buzzer" and code == 1:
                self.buzzer_until = 0.0
            elif kind == "buzzer" and code == 2:
                repeats = command.get("rep_count", 0)
                cycle = (command.get("on_count", 0) + command.get("off_count", 0)) * TICK_S
                self.buzzer_until = math.inf if repeats == 0 else now + repeats * cycle

    def state(self) -> dict:
        """{"led": what the LED shows now, "buzzer": whether it sounds now}."""
        now = self.clock()
        with self._lock:
            temporary = self.temporary if self.temporary is not None and now < self.temporary_until else None
            return {"led": temporary or self.permanent, "buzzer": now < self.buzzer_until}
