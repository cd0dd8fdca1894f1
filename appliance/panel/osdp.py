"""The door as an OSDP peripheral device (PD) on a serial line (an RS-485 adapter), through
libosdp (Apache-2.0): it reports a granted person's card as a raw Wiegand card read, and keeps
the panel's LED and buzzer commands (`indication.py`), which the door's status shows. The secure
channel's key (SCBK, 16 bytes as 32 hex digits)
is read from `panel.scbk_file`; without one the door refuses to start in reader mode, since a
card read sent in the clear can be replayed by anyone on the wire.
"""

import logging
import os
import threading
from pathlib import Path
from typing import List, Optional

from appliance.errors import ConfigError, FaceGateError
from appliance.panel import wiegand
from appliance.panel.indication import PanelIndication

log = logging.getLogger(__name__)


def read_scbk(path: str, setting: str = "panel.scbk_file") -> bytes:
    try:
        text = Path(path).read_text().strip()
        key = bytes.fromhex(text)
    except OSError as err:
        raise ConfigError("%s %s cannot be read (%s): write the 16-byte secure channel key there as 32 hex "
                          "digits" % (setting, path, err.strerror or err)) from err
    except ValueError:
        raise ConfigError("%s %s is not 32 hex digits" % (setting, path)) from None
    if len(key) != 16:
        raise ConfigError("%s %s holds %d bytes; the secure channel key is 16 (32 hex digits)"
                          % (setting, path, len(key)))
    return key


class OsdpReader:
    """An OSDP PD at `address` on `port`; `send(facility, number)` reports a card read."""

    def __init__(self, port: str, address: int, scbk: bytes, bits: int = 26, baudrate: int = 9600) -> None:
        try:
            import osdp
            import serial
        except ImportError as err:
            raise ConfigError("panel.protocol = \"osdp\" needs libosdp: pip install 'facegate[panel]'") from err
        self.bits = bits
        self.commands: List[dict] = []  # the panel's LED, buzzer and other commands, newest last
        self.indication = PanelIndication()
        try:
            self._port = serial.Serial(port, baudrate, timeout=0)
        except (serial.SerialException, OSError) as err:
            raise ConfigError("panel.port %s cannot be opened (%s): is the RS-485 adapter plugged in?"
                              % (port, err)) from err
        channel = _channel(osdp, self._port)
        capabilities = osdp.PDCapabilities([(osdp.Capability.CardDataFormat, 1, 1),
                                            (osdp.Capability.LEDControl, 1, 1),
                                            (osdp.Capability.AudibleControl, 1, 1)])
        info = osdp.PDInfo(address, channel, scbk=scbk, name="facegate")
        self._osdp = osdp
        self._device = osdp.PeripheralDevice(info, capabilities, log_level=osdp.LogLevel.Warning,
                                             command_handler=self._command)
        self._lock = threading.Lock()
        self._device.start()

    def _command(self, command: dict):
        with self._lock:
            self.commands = (self.commands + [dict(command)])[-50:]
        names = {self._osdp.Command.LED: "LED", self._osdp.Command.Buzzer: "buzzer"}
        kind = names.get(command.get("command"), "command")
        self.indication.command(command, kind)
        log.info("panel: %s %s", kind, {k: v for k, v in command.items() if k != "command"})
        return 0, None

    @property
    def secure(self) -> bool:
        return bool(self._device.is_sc_active())

    def send(self, facility: int, number: int) -> str:
        """Report the card; what was sent, for the audit trail. Refused without the secure channel."""
        if not self.secure:
            raise FaceGateError("the panel has not opened the secure channel: card %d:%d not sent (check the "
                                "panel's address, baud rate and SCBK)" % (facility, number))
        bits = wiegand.frame(facility, number, self.bits)
        self._device.submit_event({"event": self._osdp.Event.CardRead, "reader_no": 0, "direction": 0,
                                   "format": self._osdp.CardFormat.Wiegand, "length": len(bits),
                                   "data": wiegand.packed(bits)})
        return "osdp card %d:%d (Wiegand %d)" % (facility, number, self.bits)

    def report_status(self, tamper: bool, power_lost: bool) -> None:
        """The reader's local status (OSDP's tamper and power bytes), sent when either changes."""
        self._device.submit_event({"event": self._osdp.Event.Status, "type": self._osdp.StatusReportType.Local,
                                   "report": bytes([int(tamper), int(power_lost)])})

    def close(self) -> None:
        try:
            self._device.stop()
        finally:
            self._port.close()


def _channel(osdp, port):
    """libosdp's byte channel over a pyserial port (its base class comes with the library)."""
    class SerialChannel(osdp.Channel):
        def read(self, max_bytes: int) -> bytes:
            return port.read(max_bytes)

        def write(self, data: bytes) -> int:
            return port.write(data)

        def flush(self) -> None:
            port.flush()

    return SerialChannel()


def from_config(panel) -> Optional[OsdpReader]:
    """The reader `panel` describes; config.panel_problems has refused a missing port or key."""
    if panel.protocol != "osdp":
        return None
    return OsdpReader(panel.port, panel.address, read_scbk(os.path.expanduser(panel.scbk_file)), panel.wiegand_bits,
                      panel.baudrate)
