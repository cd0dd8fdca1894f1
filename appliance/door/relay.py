"""The door relay on a serial port: protocols that make the bytes, and a fail-secure driver.

The driver counts the door as unlocked only after the unlock bytes were written and flushed.
Any write error closes the port and leaves the driver "locked, unreachable"; `reconnect()`
reopens the port and writes the lock bytes before anything else.
"""

import logging
import threading
from typing import Optional

import serial

from appliance.config import RelayConfig
from appliance.errors import ConfigError, RelayError

log = logging.getLogger(__name__)


class LcusProtocol:
    """LCUS USB relay boards: 9600 8N1, frame A0 <channel> <state> <sum of the first three>."""

    def __init__(self, channel: int = 1) -> None:
        if not 1 <= channel <= 8:
            raise ConfigError("LCUS relay channel must be 1 to 8, got %d" % channel)
        self.channel = channel

    def frame(self, on: bool) -> bytes:
        state = 1 if on else 0
        return bytes([0xA0, self.channel, state, (0xA0 + self.channel + state) & 0xFF])


class GenericProtocol:
    """Any relay whose on and off commands are fixed byte strings, given as hex in the config."""

    def __init__(self, on_hex: str, off_hex: str) -> None:
        self.on_bytes = _parse_hex("relay.on_hex", on_hex)
        self.off_bytes = _parse_hex("relay.off_hex", off_hex)

    def frame(self, on: bool) -> bytes:
        return self.on_bytes if on else self.off_bytes


def _parse_hex(name: str, text: str) -> bytes:
    try:
        data = bytes.fromhex(text.replace(":", " "))
    except ValueError as err:
        raise ConfigError("%s must be hex bytes such as 'A0 01 01 A2', got %r" % (name, text)) from err
    if not data:
        raise ConfigError("%s is empty: the generic relay protocol needs both on and off bytes" % name)
    return data


def protocol_from_config(config: RelayConfig):
    if config.protocol == "lcus":
        return LcusProtocol(config.channel)
    return GenericProtocol(config.on_hex, config.off_hex)


class Relay:
    """unlock() / lock() / close(); `unlocked` is True only after an unlock write succeeded."""

    def __init__(self, port: str, protocol, baudrate: int = 9600,
                 unlock_energises: bool = True, write_timeout: float = 1.0) -> None:
        self.port_name = port
        self.protocol = protocol
        self.baudrate = baudrate
        # normally-closed wiring inverts the coil: energised means locked
        self.unlock_energises = unlock_energises
        self.write_timeout = write_timeout
        self.unlocked = False
        self._port: Optional[serial.Serial] = None
        self._lock = threading.RLock()
        self._open()
        self.lock()  # fail secure: whatever state the relay was left in, start locked

    @classmethod
    def from_config(cls, config: RelayConfig) -> "Relay":
        if not config.port:
            raise ConfigError("relay.port is empty: set it to the relay's serial port (relay.port in the config, or "
                              "--relay-port; 'facegate run --no-relay' is a dry run without a door)")
        if config.wiring == "normally_closed":
            log.warning("relay wiring is normally_closed: a crash or power cut leaves the door unlocked")
        return cls(config.port, protocol_from_config(config), config.baudrate,
                   unlock_energises=config.wiring == "normally_open")

    @property
    def connected(self) -> bool:
        return self._port is not None

    def _open(self) -> None:
        try:
            # exclusive: a second process (another door on the same config, a 'relay test') would
            # drive the relay against this one
            self._port = serial.Serial(self.port_name, self.baudrate, bytesize=8, parity="N",
                                       stopbits=1, timeout=0, write_timeout=self.write_timeout, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as err:
            self._port = None
            if "exclusively lock" in str(err):
                raise RelayError("relay port %s is held by another process (a FaceGate door or a 'facegate relay "
                                 "test'): stop it first ('fuser %s' names it)" % (self.port_name, self.port_name)) from err
            raise RelayError("cannot open relay port %s: %s (check the cable and relay.port)"
                             % (self.port_name, err)) from err

    def _write(self, energise: bool) -> None:
        if self._port is None:
            raise RelayError("relay port %s is not open (unplugged?)" % self.port_name)
        try:
            self._port.write(self.protocol.frame(energise))
            self._port.flush()
        except (serial.SerialException, OSError) as err:
            self._drop()
            raise RelayError("relay write to %s failed: %s" % (self.port_name, err)) from err

    def _drop(self) -> None:
        port, self._port = self._port, None
        self.unlocked = False  # an unreachable relay is treated as locked: it can be opened by nobody
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError):
                pass

    def unlock(self) -> None:
        with self._lock:
            self._write(self.unlock_energises)
            self.unlocked = True

    def lock(self) -> None:
        with self._lock:
            self.unlocked = False  # locked in intent first: a failed write never leaves "unlocked"
            self._write(not self.unlock_energises)

    def refresh(self) -> None:
        """Rewrite the current state; a write error means the relay was unplugged."""
        with self._lock:
            self._write(self.unlock_energises if self.unlocked else not self.unlock_energises)

    def reconnect(self) -> None:
        """Reopen a lost port and drive it locked; raises RelayError while it is still gone."""
        with self._lock:
            self._drop()
            self._open()
            self.lock()
            log.info("relay on %s is back and locked", self.port_name)

    def close(self) -> None:
        with self._lock:
            try:
                if self._port is not None:
                    self.lock()
            except RelayError as err:
                log.error("could not lock the relay while closing: %s", err)
            finally:
                self._drop()


class NoRelay:
    """A dry run without a door: same interface, remembers the state, writes nothing."""

    port_name = "none"
    connected = True

    def __init__(self) -> None:
        self.unlocked = False

    def unlock(self) -> None:
        self.unlocked = True

    def lock(self) -> None:
        self.unlocked = False

    def refresh(self) -> None:
        pass

    def reconnect(self) -> None:
        pass

    def close(self) -> None:
        self.unlocked = False
