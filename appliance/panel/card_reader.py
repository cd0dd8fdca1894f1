"""A card reader for card + face: a serial reader (or a USB one in its serial mode) that sends
each card it reads as a line of text, FACILITY:NUMBER or NUMBER.

The reading thread keeps at most `QUEUE` cards and `LINE` characters of a line, so a reader that
babbles cannot fill memory. A reader that cannot be opened or read is a `card_reader` fault (the
door locks) cleared when it reads again: an unplugged USB reader comes back by itself.
"""

import logging
import queue
import threading
from typing import Callable, Optional, Tuple

from appliance import threads
from appliance.errors import FaceGateError
from appliance.panel.cards import parse_card

log = logging.getLogger(__name__)

QUEUE = 8
LINE = 64


class CardQueue:
    """Cards read and not yet taken by the door, at most QUEUE of them: what every reader keeps."""

    def __init__(self) -> None:
        self.cards: "queue.Queue[Tuple[int, int]]" = queue.Queue(QUEUE)

    def take(self) -> Optional[Tuple[int, int]]:
        """The oldest card read and not yet taken, or None."""
        try:
            return self.cards.get_nowait()
        except queue.Empty:
            return None

    def indicate(self, granted: bool) -> None:
        """The door's answer at the reader; a reader this door cannot light or sound shows nothing."""

    def keep(self, card: Tuple[int, int]) -> None:
        try:
            self.cards.put_nowait(card)
        except queue.Full:
            log.warning("card %d:%d dropped: %d cards are waiting for faces already", card[0], card[1], QUEUE)


class CardReader(CardQueue):
    def __init__(self, port: str, baudrate: int, on_fault: Callable[[str], None], on_back: Callable[[], None],
                 on_died=None) -> None:
        super().__init__()
        self.port_name, self.baudrate = port, baudrate
        self.on_fault, self.on_back = on_fault, on_back
        self._stop = threading.Event()
        self.connected = threading.Event()  # the port is open (opening it drops whatever was waiting)
        self._thread = threads.start("card reader", self._run, on_died)

    def _run(self) -> None:
        import serial

        while not self._stop.is_set():
            try:
                with serial.Serial(self.port_name, self.baudrate, timeout=0.2) as port:
                    self.connected.set()
                    self.on_back()
                    self._read(port)
            except (serial.SerialException, OSError) as err:
                self.connected.clear()
                self.on_fault("card reader %s: %s (check its cable and panel.card_reader_port)" % (self.port_name, err))
                self._stop.wait(1.0)

    def _read(self, port) -> None:
        line = b""
        while not self._stop.is_set():
            for byte in port.read(LINE):
                if byte in b"\r\n":
                    self._card(line)
                    line = b""
                elif len(line) < LINE:
                    line += bytes([byte])

    def _card(self, line: bytes) -> None:
        text = line.decode("ascii", "replace").strip()
        if not text:
            return
        try:
            card = parse_card(text)
        except FaceGateError as err:
            log.warning("card reader sent %r: %s", text[:LINE], err)
            return
        self.keep(card)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)


def card_reader_from_config(panel, on_fault, on_back, on_died=None):
    """The card reader `panel.card_reader_protocol` names: a line-per-card serial reader, a USB
    reader that types (`hid_reader.py`), an OSDP reader this door polls as its control panel
    (`osdp_cards.py`), or a Wiegand reader's wires on two GPIO inputs (`wiegand_in.py`)."""
    if panel.card_reader_protocol == "hid":
        from appliance.panel.hid_reader import HidCardReader

        return HidCardReader(panel.card_reader_port, on_fault, on_back, on_died)
    if panel.card_reader_protocol == "wiegand":
        from appliance.panel.wiegand_in import ReaderSignals, WiegandCardReader, open_edges
        from appliance.panel.wiegand_out import SysfsLines

        outputs = {name: number for name, number in (("LED", panel.card_reader_led),
                                                     ("BEEP", panel.card_reader_beeper)) if number >= 0}
        signals = ReaderSignals(SysfsLines(outputs, panel.wiegand_gpio_root, "panel.card_reader_led and "
                                           "card_reader_beeper")) if outputs else None
        return WiegandCardReader(lambda: open_edges(panel.card_reader_data0, panel.card_reader_data1),
                                 on_fault, on_back, on_died, signals)
    if panel.card_reader_protocol == "osdp":
        import os

        from appliance.panel.osdp import read_scbk
        from appliance.panel.osdp_cards import OsdpCardReader

        return OsdpCardReader(panel.card_reader_port, panel.card_reader_address,
                              read_scbk(os.path.expanduser(panel.card_reader_scbk_file), "panel.card_reader_scbk_file"),
                              panel.card_reader_baudrate,
                              on_fault, on_back, on_died)
    return CardReader(panel.card_reader_port, panel.card_reader_baudrate, on_fault, on_back, on_died)
