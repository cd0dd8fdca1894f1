"""GPIO inputs (sysfs value files), door alarms, the exit button, the schedule and the audit trail."""

import datetime
import os
import signal
import subprocess
import sys

import pytest

from appliance.audit import AuditStore, Event
from appliance.config import DoorConfig, InputsConfig
from appliance.door.controller import DoorController
from facegate_host.emulator import RelayEmulator
from appliance.door.inputs import DebouncedInput, InputError, InputWatcher, SysfsLine
from appliance.door.relay import LcusProtocol, Relay
from appliance.door.schedule import is_open, parse_schedule
from appliance.door.states import Access, Door
from appliance.errors import ConfigError
from conftest import wait_until


def write_level(path, level):
    # write-then-rename, as a reader may poll at any moment
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("%d\n" % level)
    os.replace(temporary, path)


@pytest.fixture
def door(tmp_path):
    """A controller on an emulated relay, with contact and exit button as sysfs-style value files."""
    contact, button = tmp_path / "contact", tmp_path / "button"
    write_level(contact, 0)  # closed
    write_level(button, 1)  # released (active low)
    emulator = RelayEmulator(link=str(tmp_path / "relay"))
    audit = AuditStore(tmp_path / "audit.db")
    controller = DoorController(DoorConfig(unlock_seconds=0.5, held_open_seconds=1.0, cooldown_seconds=0.1),
                                Relay(emulator.path, LcusProtocol(1)), audit)
    watcher = InputWatcher.from_config(
        InputsConfig(door_contact=str(contact), exit_button=str(button), debounce_ms=30, poll_ms=5),
        lambda name, active: (controller.exit_pressed() if name == "exit_button" and active
                              else controller.contact_changed(active) if name == "door_contact" else None))
    watcher.start()
    yield controller, contact, button, emulator, audit
    watcher.close()
    controller.shutdown()
    emulator.close()


def test_forced_door_raises_its_alarm(door):
    controller, contact, _, emulator, audit = door
    write_level(contact, 1)
    assert wait_until(lambda: controller.door is Door.forced_open)
    alarms = audit.events(kind="alarm")
    assert [a.detail["alarm"] for a in alarms] == ["forced_open"]
    assert not emulator.is_on()
    write_level(contact, 0)
    assert wait_until(lambda: controller.door is Door.closed)


def test_exit_button_unlocks_and_a_held_door_alarms(door):
    controller, contact, button, emulator, audit = door
    write_level(button, 0)  # pressed
    assert wait_until(lambda: controller.access is Access.granted)
    assert emulator.wait_for(lambda e: e.is_on())
    write_level(button, 1)
    write_level(contact, 1)  # the person opens the door ...
    assert wait_until(lambda: controller.door is Door.open)
    # ... the relay relocks after 0.5 s and the door stays open past 1 s
    assert wait_until(lambda: controller.door is Door.held_open, timeout=3)
    assert not emulator.is_on()
    write_level(contact, 0)
    assert wait_until(lambda: controller.door is Door.closed)
    assert [e.kind for e in audit.events()] == ["exit", "alarm"]
    assert audit.events(kind="alarm")[0].detail["alarm"] == "held_open"


def test_debounce_ignores_a_short_glitch(tmp_path):
    path = tmp_path / "value"
    write_level(path, 0)
    signal_input = DebouncedInput("door_contact", SysfsLine(str(path)), active_low=False, debounce=0.05)
    write_level(path, 1)
    assert signal_input.poll(100.0) is None
    write_level(path, 0)
    assert signal_input.poll(100.02) is None  # back before the debounce time: no change
    write_level(path, 1)
    assert signal_input.poll(100.03) is None
    assert signal_input.poll(100.09) is True


def test_unreadable_gpio_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="is the line exported"):
        SysfsLine(str(tmp_path / "gpio99" / "value"))
    bad = tmp_path / "value"
    bad.write_text("maybe\n")
    with pytest.raises(InputError, match="not 0 or 1"):
        SysfsLine(str(bad))


def test_schedule_periods():
    periods = parse_schedule("mon-fri 08:00-09:00; sat-sun 10:00-10:30")
    monday = datetime.datetime(2026, 11, 23, 8, 30)  # a Monday
    assert is_open(periods, monday)
    assert not is_open(periods, monday.replace(hour=9, minute=0))
    assert is_open(periods, datetime.datetime(2026, 11, 29, 10, 15))  # Sunday
    assert not is_open(periods, datetime.datetime(2026, 11, 28, 8, 30))  # Saturday morning
    for bad in ("mon 9-10", "funday 08:00-09:00", "mon 10:00-09:00", "mon 08:00-25:00"):
        with pytest.raises(ConfigError, match="door.always_open"):
            parse_schedule(bad)


def test_schedule_holds_the_door_unlocked_and_relocks(tmp_path):
    emulator = RelayEmulator()
    try:
        controller = DoorController(DoorConfig(always_open="mon 08:00-09:00"),
                                    Relay(emulator.path, LcusProtocol(1)))
        controller.tick(wall=datetime.datetime(2026, 11, 23, 8, 0))
        assert emulator.wait_for(lambda e: e.is_on())
        assert controller.door is Door.unlocked
        controller.tick(wall=datetime.datetime(2026, 11, 23, 9, 0))
        assert emulator.wait_for(lambda e: not e.is_on())
        assert controller.door is Door.closed
        controller.shutdown()
    finally:
        emulator.close()


def test_audit_retention_caps_events_and_snapshots(tmp_path):
    store = AuditStore(tmp_path / "audit.db", max_events=100, snapshots_max_bytes=10_000)
    for number in range(150):
        store.record(Event("deny", frames=[number], snapshot=b"x" * 1000))
    events = store.events(limit=1000)
    assert len(events) == 100
    alarms = [e for e in events if e.kind == "alarm"]
    assert [a.detail["alarm"] for a in alarms] == ["audit_capacity"]  # raised once, at 90%
    denials = [e for e in events if e.kind == "deny"]
    assert denials[0].frames == [51] and denials[-1].frames == [149]  # the oldest went first
    kept = [e for e in events if e.snapshot is not None]
    assert len(kept) == 10 and kept[-1].frames == [149]
    assert len({e.uid for e in events}) == 100


WRITER = """
import sys
from appliance.audit import AuditStore, Event
store = AuditStore(sys.argv[1])
number = 0
while True:
    event = store.record(Event("deny", frames=[number]))
    print(event.id, flush=True)
    number += 1
"""


def test_audit_keeps_every_reported_event_through_a_kill(tmp_path):
    path = tmp_path / "audit.db"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    reported = []
    while len(reported) < 200:
        reported.append(int(writer.stdout.readline()))
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    ids = {e.id for e in AuditStore(path).events(limit=10 ** 6)}
    assert set(reported) <= ids
