"""The relay on a real pseudo-terminal: bytes per protocol, wiring, unplug and replug, fail secure."""

import time

import pytest

from appliance.audit import AuditStore, Event
from appliance.config import DoorConfig, RelayConfig
from appliance.door.controller import DoorController
from facegate_host.emulator import RelayEmulator
from appliance.door.relay import GenericProtocol, LcusProtocol, Relay
from appliance.door.states import Access, Door
from appliance.errors import ConfigError, RelayError
from conftest import wait_until


@pytest.fixture
def emulator(tmp_path):
    built = RelayEmulator(link=str(tmp_path / "relay"))
    yield built
    built.close()


def wait_bytes(emulator, count, timeout=3.0):
    assert emulator.wait_for(lambda e: len(e.received) >= count, timeout), bytes(emulator.received)
    return bytes(emulator.received)


@pytest.mark.parametrize("channel", [1, 2, 8])
def test_lcus_frames_on_a_pty(emulator, channel):
    relay = Relay(emulator.path, LcusProtocol(channel))
    assert wait_bytes(emulator, 4) == bytes([0xA0, channel, 0, (0xA0 + channel) & 0xFF])  # locked at start
    relay.unlock()
    assert relay.unlocked
    assert wait_bytes(emulator, 8)[4:] == bytes([0xA0, channel, 1, (0xA1 + channel) & 0xFF])
    relay.close()
    assert wait_bytes(emulator, 12)[8:] == bytes([0xA0, channel, 0, (0xA0 + channel) & 0xFF])
    assert emulator.bad_frames == 0


def test_lcus_frame_matches_the_published_example():
    assert LcusProtocol(1).frame(True) == bytes.fromhex("A00101A2")
    assert LcusProtocol(1).frame(False) == bytes.fromhex("A00100A1")


def test_generic_protocol_writes_the_configured_bytes(tmp_path):
    import os
    import pty

    master, slave = pty.openpty()
    os.set_blocking(master, False)
    relay = Relay(os.ttyname(slave), GenericProtocol("55 aa 01", "55:aa:00"))
    relay.unlock()
    relay.close()
    time.sleep(0.1)
    assert os.read(master, 64) == bytes.fromhex("55aa00 55aa01 55aa00")
    os.close(master)
    os.close(slave)


def test_generic_protocol_refuses_bad_hex():
    with pytest.raises(ConfigError, match="relay.on_hex"):
        GenericProtocol("zz", "00")
    with pytest.raises(ConfigError, match="relay.off_hex is empty"):
        GenericProtocol("01", "")


def test_normally_closed_wiring_inverts_the_coil(emulator):
    relay = Relay(emulator.path, LcusProtocol(1), unlock_energises=False)
    assert emulator.wait_for(lambda e: e.events and e.events[-1].on)  # locked = energised
    relay.unlock()
    assert emulator.wait_for(lambda e: len(e.events) == 2 and not e.events[-1].on)
    relay.close()


def test_a_missing_port_is_a_clear_error(tmp_path):
    with pytest.raises(RelayError, match="cannot open relay port .*nothing-here.*check the cable"):
        Relay(str(tmp_path / "nothing-here"), LcusProtocol(1))
    with pytest.raises(ConfigError, match="relay.port is empty"):
        Relay.from_config(RelayConfig(port=""))


def controller_on(emulator, tmp_path, **door):
    relay = Relay(emulator.path, LcusProtocol(1))
    settings = dict(unlock_seconds=30, deny_seconds=0.1, cooldown_seconds=0.1)
    settings.update(door)
    audit = AuditStore(tmp_path / "audit.db")
    return DoorController(DoorConfig(**settings), relay, audit, refresh_seconds=0.2), audit


def test_unplugged_and_replugged_relay_ends_locked(emulator, tmp_path):
    controller, audit = controller_on(emulator, tmp_path)
    controller.exit_pressed()
    assert controller.access is Access.granted
    assert emulator.wait_for(lambda e: e.is_on())
    emulator.unplug()  # the USB cable comes out while the door is unlocked
    deadline = time.monotonic() + 3
    while controller.access is not Access.fault and time.monotonic() < deadline:
        controller.tick()
        time.sleep(0.05)
    assert controller.access is Access.fault
    assert not controller.relay.unlocked
    emulator.plug()  # and goes back in: the first bytes on the new port must be "off"
    deadline = time.monotonic() + 5
    while controller.access is Access.fault and time.monotonic() < deadline:
        controller.tick()
        time.sleep(0.05)
    assert controller.access is Access.idle
    assert emulator.wait_for(lambda e: e.events)
    assert emulator.events[0].on is False and not emulator.is_on()
    assert controller.door is Door.closed
    kinds = [e.kind for e in audit.events()]
    assert kinds == ["exit", "fault", "recovered"]
    controller.shutdown()


def test_grant_with_the_relay_gone_is_a_fault_not_an_unlock(emulator, tmp_path):
    controller, audit = controller_on(emulator, tmp_path)
    emulator.unplug()
    controller.access_machine.set_state(Access.verifying, model=controller)
    assert not controller.grant_person(Event("grant", person_id="p1", person_name="P"))
    assert controller.access is Access.fault
    assert controller.door is Door.closed
    assert [e.kind for e in audit.events()] == ["fault"]  # no grant was recorded
    controller.shutdown()


def test_relock_after_the_unlock_time(emulator, tmp_path):
    controller, _ = controller_on(emulator, tmp_path, unlock_seconds=0.3)
    controller.exit_pressed()
    assert emulator.wait_for(lambda e: e.is_on())
    assert emulator.wait_for(lambda e: not e.is_on(), timeout=2)
    on, off = [e.at for e in emulator.events if e.on][-1], emulator.events[-1].at
    assert 0.25 <= off - on <= 1.0
    # the emulator can read the off bytes before the relock thread records the state it wrote
    assert wait_until(lambda: controller.door is Door.closed, timeout=1)
    controller.shutdown()
