"""A USB card reader that types: keyboard emulation (HID), read from its Linux input device.

Most USB card readers have no serial mode: they type the card's number and Enter, as a keyboard
would. The door reads the key events from the reader's input device (/dev/input/by-id/...-event-kbd
names it across replugs) and takes the device for itself (EVIOCGRAB), so the digits reach no
console or other program. Each line of digits is a card: NUMBER (facility 0), the number the
reader prints, which is the number to enrol.

The events are the kernel's `struct input_event` (a time, then type, code, value), whose time
fields are longs: 24 bytes on the RV1126B (arm64), 16 on the RV1126 (armhf). A reader that
cannot be opened or read (unplugged) is a `card_reader` fault, tried again every second and
cleared when it opens.
"""

import errno
import fcntl
import logging
import os
import select
import struct

from appliance.panel.card_reader import LINE, CardReader

log = logging.getLogger(__name__)

EVENT = struct.Struct("llHHi")  # struct input_event: time (two longs), type, code, value
EV_KEY, PRESSED = 1, 1
EVIOCGRAB = 0x40044590  # _IOW('E', 0x90, int)
# key codes (linux/input-event-codes.h): the digit row and the keypad's digits, and both Enters
DIGITS = {2: "1", 3: "2", 4: "3", 5: "4", 6: "5", 7: "6", 8: "7", 9: "8", 10: "9", 11: "0",
          79: "1", 80: "2", 81: "3", 75: "4", 76: "5", 77: "6", 71: "7", 72: "8", 73: "9", 82: "0"}
ENTER = {28, 96}
SHIFTS = {42, 54}  # typed with some digits by some readers: no key of the card's


class HidCardReader(CardReader):
    def __init__(self, device: str, on_fault, on_back, on_died=None) -> None:
        super().__init__(device, 0, on_fault, on_back, on_died)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                fd = os.open(self.port_name, os.O_RDONLY | os.O_NONBLOCK)
            except OSError as err:
                self.on_fault("card reader %s: %s (check its cable and panel.card_reader_port, an input device "
                              "such as /dev/input/by-id/...-event-kbd)" % (self.port_name, err.strerror or err))
                self._stop.wait(1.0)
                continue
            try:
                self._grab(fd)
                self.connected.set()
                self.on_back()
                self._read(fd)
            except OSError as err:
                self.on_fault("card reader %s: %s (unplugged?)" % (self.port_name, err.strerror or err))
                self._stop.wait(1.0)
            finally:
                self.connected.clear()
                os.close(fd)

    def _grab(self, fd: int) -> None:
        try:
            fcntl.ioctl(fd, EVIOCGRAB, 1)
        except OSError as err:
            if err.errno != errno.ENOTTY:
                raise
            log.warning("card reader %s is not an input device: its keys are read but not taken from other "
                        "programs", self.port_name)

    def _read(self, fd: int) -> None:
        line, pending, other = b"", b"", False
        while not self._stop.is_set():
            if not select.select([fd], [], [], 0.2)[0]:
                continue
            data = os.read(fd, EVENT.size * 64)
            if not data:  # a stream that ended (never an input device): nothing more will come
                raise OSError(errno.ENODEV, "the reader's input ended")
            pending += data
            whole = len(pending) - len(pending) % EVENT.size
            for _, _, kind, code, value in EVENT.iter_unpack(pending[:whole]):
                if kind != EV_KEY or value != PRESSED:
                    continue
                if code in ENTER:
                    if other:  # a reader set to type hex, or a keyboard: dropping a letter would name another card
                        log.warning("card reader %s typed something other than digits: not a card (set it to type "
                                    "the card's number in decimal)", self.port_name)
                    else:
                        self._card(line)
                    line, other = b"", False
                elif code in DIGITS:
                    line += DIGITS[code].encode() if len(line) < LINE else b""
                elif code not in SHIFTS:
                    other = True
            pending = pending[whole:]
