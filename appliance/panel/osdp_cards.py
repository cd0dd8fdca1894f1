"""An OSDP card reader for card + face: the door is the control panel (CP) of one reader (a PD) on
an RS-485 line, through libosdp, with the secure channel required (a card read in the clear can
be replayed by anyone on the wire). Each raw Wiegand 26 or 34-bit card read, parity checked,
becomes a card the door takes like the serial reader's (`card_reader.py`); the reader's silence
or a lost secure channel is a `card_reader` fault, cleared when the channel is up again.
"""

import logging
import queue
import threading
from typing import Callable, Optional, Tuple

from appliance import threads
from appliance.errors import ConfigError, FaceGateError
from appliance.panel import wiegand
from appliance.panel.card_reader import QUEUE

log = logging.getLogger(__name__)


class OsdpCardReader:
    def __init__(self, port: str, address: int, scbk: bytes, baudrate: int, on_fault: Callable[[str], None],
                 on_back: Callable[[], None], on_died=None) -> None:
        try:
            import osdp
            import serial
        except ImportError as err:
            raise ConfigError("panel.card_reader_protocol = \"osdp\" needs libosdp: pip install 'facegate[panel]'") \
                from err
        from appliance.panel.osdp import _channel

        self.address = address
        self.on_fault, self.on_back = on_fault, on_back
        self.cards: "queue.Queue[Tuple[int, int]]" = queue.Queue(QUEUE)
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

    def take(self) -> Optional[Tuple[int, int]]:
        """The oldest card read and not yet taken, or None."""
        try:
            return self.cards.get_nowait()
        except queue.Empty:
            return None

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
        try:
            self.cards.put_nowait(card)
        except queue.Full:
            log.warning("card %d:%d dropped: %d cards are waiting for faces already", card[0], card[1], QUEUE)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        try:
            self._panel.stop()
        finally:
            self._port.close()
