"""An OSDP card reader for card + face: the door is the control panel (CP) of one reader (a PD) on
an RS-485 line, through libosdp, with the secure channel required (a card read in the clear can
be replayed by anyone on the wire). Each raw Wiegand 26 or 34-bit card read, parity checked,
becomes a card the door takes like the serial reader's (`card_reader.py`); the reader's silence
or a lost secure channel is a `card_reader` fault, cleared when the channel is up again.
"""

import logging
import threading
from typing import Callable

from appliance import threads
from appliance.errors import ConfigError, FaceGateError
from appliance.panel import wiegand
from appliance.panel.card_reader import CardQueue

log = logging.getLogger(__name__)


class OsdpCardReader(CardQueue):
    def __init__(self, port: str, address: int, scbk: bytes, baudrate: int, on_fault: Callable[[str], None],
                 on_back: Callable[[], None], on_died=None) -> None:
        try:
            import osdp
            import serial
        except ImportError as err:
            raise ConfigError("panel.card_reader_protocol = \"osdp\" needs libosdp: pip install 'facegate[panel]'") \
                from err
        from appliance.panel.osdp import _channel

        super().__init__()
        self.address = address
        self.on_fault, self.on_back = on_fault, on_back
        try:
            self._port = serial.Serial(port, baudrate, timeout=0)
        except (serial.SerialException, OSError) as err:
            raise ConfigError("panel.card_reader_port %s cannot be opened (%s): is the RS-485 adapter plugged in?"
                              % (port, err)) from err
        self._osdp = osdp
        info = osdp.PDInfo(address, _channel(osdp, self._port), scbk=scbk, name="card reader",
                           flags=[osdp.LibFlag.EnforceSecure])
        self._panel = osdp.ControlPanel([info], log_level=osdp.LogLevel.Warning)
        self._panel.start()
        self._stop = threading.Event()
        self._thread = threads.start("osdp card reader", self._run, on_died)

    @property
    def secure(self) -> bool:
        return bool(self._panel.is_sc_active(self.address))

    def _run(self) -> None:
        up = None
        while not self._stop.is_set():
            secure = self.secure
            if secure != up:
                up = secure
                if secure:
                    self.on_back()
                else:
                    self.on_fault("card reader at OSDP address %d: no secure channel (check its address, baud rate "
                                  "and SCBK, and its cable)" % self.address)
            event = self._panel.get_event(self.address, timeout=0.2)
            if event is not None and event.get("event") == self._osdp.Event.CardRead:
                self._card(event)

    def _card(self, event: dict) -> None:
        if event.get("format") != self._osdp.CardFormat.Wiegand or event.get("length") not in wiegand.FORMATS:
            log.warning("card reader sent a card read this door does not take (format %s, %s bits): raw Wiegand 26 "
                        "or 34 only", event.get("format"), event.get("length"))
            return
        try:
            card = wiegand.parse(wiegand.unpacked(event["data"], event["length"]))
        except FaceGateError as err:
            log.warning("card reader sent a card that fails its check: %s", err)
            return
        self.keep(card)

    def indicate(self, granted: bool) -> None:
        """The door's answer at the reader, for the person holding the card: its LED green for 2 s
        and one beep on a grant, red for 2 s and three beeps on a denial. A reader without its
        secure channel gets nothing (the `card_reader` fault says so)."""
        if not self.secure:
            return
        colour = self._osdp.CommandLEDColor.Green if granted else self._osdp.CommandLEDColor.Red
        commands = [{"command": self._osdp.Command.LED, "reader": 0, "led_number": 0, "temporary": True,
                     "control_code": 2, "on_count": 20, "off_count": 0, "on_color": colour,
                     "off_color": self._osdp.CommandLEDColor.Black, "timer_count": 20},
                    {"command": self._osdp.Command.Buzzer, "reader": 0, "control_code": 2, "on_count": 2,
                     "off_count": 2, "rep_count": 1 if granted else 3}]
        for command in commands:
            if not self._panel.submit_command(self.address, command):
                log.warning("card reader at OSDP address %d did not take the %s command", self.address,
                            "LED" if command["command"] == self._osdp.Command.LED else "buzzer")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        try:
            self._panel.stop()
        finally:
            self._port.close()
