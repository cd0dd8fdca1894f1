"""The door as a reader of a building's access panel: cards per person, Wiegand frames, and OSDP
with the secure channel against a real control panel (libosdp's CP) on a pseudo-terminal."""

import os
import pty
import subprocess
import sys
import tty

import pytest

from conftest import ROOT, run_cli, wait_until
from test_mqtt import key_file  # noqa: F401 (fixture)
from test_service import PROBES, STRANGERS, door_config, emulator, gallery_path  # noqa: F401 (fixtures)

from appliance.audit import AuditStore
from appliance.errors import FaceGateError, GalleryError
from appliance.gallery.store import GalleryStore
from appliance.panel import wiegand
from appliance.panel.cards import parse_card
from appliance.service import build_service

# H10301 (26-bit) frames worked out by hand from the layout (even parity over the first 12 data
# bits, odd over the last 12): facility 1 card 1 has one 1 in each half, so 1|00000001|0...01|0;
# all ones has twelve in each, so 0|1...1|1; all zeros 0|0...0|1
REFERENCE_26 = {(1, 1): 0x2020002, (255, 65535): 0x1FFFFFF, (0, 0): 0x0000001}


def as_number(bits):
    return int("".join(map(str, bits)), 2)


def test_wiegand_frames_carry_the_card_between_correct_parity_bits():
    for (facility, number), expected in REFERENCE_26.items():
        bits = wiegand.frame(facility, number, 26)
        assert len(bits) == 26 and as_number(bits) == expected
        assert wiegand.parse(bits) == (facility, number)
    bits = wiegand.frame(513, 40001, 34)
    assert len(bits) == 34 and wiegand.parse(bits) == (513, 40001)
    for position in (0, 5, 20, 25):  # any one bit changed is caught by a parity bit
        damaged = list(wiegand.frame(123, 4567, 26))
        damaged[position] ^= 1
        with pytest.raises(FaceGateError, match="parity"):
            wiegand.parse(damaged)
    with pytest.raises(FaceGateError, match="does not fit Wiegand 26"):
        wiegand.frame(256, 1, 26)
    assert wiegand.unpacked(wiegand.packed(bits), 34) == bits


def test_wiegand_pulses_decode_as_a_panel_would_and_bad_timing_is_named():
    bits = wiegand.frame(7, 12345, 26)
    edges = wiegand.pulses(bits)
    assert wiegand.parse(wiegand.bits_from_edges(edges)) == (7, 12345)
    short = [(t + (35 if level == 0 and i == 4 else 0), line, level) for i, (t, line, level) in enumerate(edges)]
    with pytest.raises(FaceGateError, match="pulse of 15 us"):
        wiegand.bits_from_edges(short)
    with pytest.raises(FaceGateError, match="after the last"):
        wiegand.bits_from_edges(wiegand.pulses(bits, interval_us=150))


def test_a_card_belongs_to_one_person_and_survives_in_the_gallery(tmp_path, pipeline):
    assert parse_card("7:12345") == (7, 12345) and parse_card("99") == (0, 99)
    with pytest.raises(FaceGateError, match="FACILITY:NUMBER"):
        parse_card("seven")
    from test_decision_rule import random_templates
    import numpy as np

    store = GalleryStore(tmp_path / "g.db", model_id="m")
    rng = np.random.default_rng(0)
    for name in ("ann", "bob"):
        store.enrol(name, random_templates(rng, 1), "m")
    assert store.set_card("ann", 12345, 7).card == (7, 12345)
    with pytest.raises(GalleryError, match="belongs to ann already"):
        store.set_card("bob", 12345, 7)
    assert store.find("bob").card is None  # refused whole
    assert [p.card for p in store.people()] == [(7, 12345), None]
    assert store.set_card("ann", None).card is None
    store.close()


def test_the_people_command_gives_shows_and_takes_a_card(tmp_path, gallery_path):  # noqa: F811
    import shutil

    gallery = tmp_path / "g.db"
    shutil.copy(gallery_path, gallery)
    given = run_cli("people", "card", "obama", "7:12345", "--gallery", gallery)
    assert given.returncode == 0 and "card 7:12345" in given.stdout, given.stderr
    listed = run_cli("people", "list", "--gallery", gallery)
    assert any("obama" in line and "card 7:12345" in line for line in listed.stdout.splitlines())
    taken = run_cli("people", "card", "刘德华", "7:12345", "--gallery", gallery)
    assert taken.returncode == 2 and "belongs to obama already" in taken.stderr
    assert "no card" in run_cli("people", "card", "obama", "--clear", "--gallery", gallery).stdout
    # a card given with the enrolment: the person and the card together, or neither
    photo = STRANGERS[0]
    run_cli("people", "card", "obama", "7:12345", "--gallery", gallery)
    refused = run_cli("enroll", "Jacky", photo, "--card", "7:12345", "--force", "--gallery", gallery)
    assert refused.returncode == 1 and "belongs to obama already" in refused.stdout
    assert "Jacky" not in run_cli("people", "list", "--gallery", gallery).stdout
    enrolled = run_cli("enroll", "Jacky", photo, "--card", "7:9", "--force", "--gallery", gallery)
    assert enrolled.returncode == 0, enrolled.stdout + enrolled.stderr
    assert any("Jacky" in line and "card 7:9" in line
               for line in run_cli("people", "list", "--gallery", gallery).stdout.splitlines())
    mistyped = run_cli("enroll", "Jo", photo, "--card", "seven", "--gallery", gallery)
    assert mistyped.returncode == 2 and "FACILITY:NUMBER" in mistyped.stderr


def fd_channel(fd):
    """libosdp's channel over one end of the pseudo-terminal."""
    import osdp

    class Channel(osdp.Channel):
        def read(self, max_bytes):
            try:
                return os.read(fd, max_bytes)
            except BlockingIOError:
                return b""

        def write(self, data):
            return os.write(fd, data)

        def flush(self):
            pass

    os.set_blocking(fd, False)
    return Channel()


@pytest.fixture
def control_panel(tmp_path):
    """A real OSDP control panel (libosdp's CP) on the master side of a pty; the door gets the slave."""
    import osdp

    master, slave = pty.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    key = os.urandom(16)
    (tmp_path / "scbk").write_text(key.hex() + "\n")
    panel = osdp.ControlPanel([osdp.PDInfo(5, fd_channel(master), scbk=key, name="door",
                                           flags=[osdp.LibFlag.EnforceSecure])], log_level=osdp.LogLevel.Error)
    panel.start()
    yield panel, os.ttyname(slave), tmp_path / "scbk"
    panel.stop()
    os.close(master)
    os.close(slave)


def panel_events(panel, address):
    """Every event the control panel has heard from `address`, until half a second of silence."""
    events = []
    while True:
        event = panel.get_event(address, timeout=0.5)
        if event is None:
            return events
        events.append(event)


def test_a_reader_door_reports_the_granted_persons_card_to_the_panel_over_a_secure_channel(
        tmp_path, gallery_path, pipeline, emulator, control_panel):  # noqa: F811
    import shutil

    import osdp

    panel, port, scbk = control_panel
    gallery = tmp_path / "g.db"
    shutil.copy(gallery_path, gallery)
    store = GalleryStore(gallery)
    store.set_card("obama", 12345, 7)
    store.close()
    clip = tmp_path / "reader.mp4"
    subprocess.run([sys.executable, str(ROOT / "tools" / "make-demo-video"), str(clip),
                    str(PROBES / "obama.jpg"), str(STRANGERS[0]), str(PROBES / "ldh.jpg"),
                    "--seconds", "2.0", "--fps", "15", "--gap", "1.0"], check=True)
    config = door_config(tmp_path, gallery, clip, emulator.path, liveness={"enabled": False},
                         door={"mode": "reader"},
                         panel={"protocol": "osdp", "port": port, "address": 5, "scbk_file": str(scbk)})
    service = build_service(config, pipeline=pipeline)
    assert wait_until(lambda: panel.is_sc_active(5), timeout=10)  # the secure channel is up
    panel.submit_command(5, {"command": osdp.Command.LED, "reader": 0, "led_number": 0, "control_code": 1,
                             "on_count": 1, "off_count": 0, "on_color": osdp.CommandLEDColor.Red,
                             "off_color": osdp.CommandLEDColor.Black, "temporary": False})
    panel.submit_command(5, {"command": osdp.Command.LED, "reader": 0, "led_number": 0, "control_code": 2,
                             "on_count": 5, "off_count": 5, "on_color": osdp.CommandLEDColor.Green,
                             "off_color": osdp.CommandLEDColor.Black, "timer_count": 600, "temporary": True})
    panel.submit_command(5, {"command": osdp.Command.Buzzer, "reader": 0, "control_code": 2, "on_count": 2,
                             "off_count": 2, "rep_count": 0})
    # the panel's LED and buzzer commands reach the door, whose status (the web page's header) shows them
    assert wait_until(lambda: service.status()["panel"] == {"led": "green flashing", "buzzer": True}, timeout=10)
    panel.submit_command(5, {"command": osdp.Command.LED, "reader": 0, "led_number": 0, "control_code": 1,
                             "on_count": 0, "off_count": 0, "on_color": 0, "off_color": 0, "timer_count": 0,
                             "temporary": True})  # the temporary state cancelled: the permanent red shows
    panel.submit_command(5, {"command": osdp.Command.Buzzer, "reader": 0, "control_code": 1, "on_count": 0,
                             "off_count": 0, "rep_count": 0})
    assert wait_until(lambda: service.status()["panel"] == {"led": "red", "buzzer": False}, timeout=10)
    service.run()
    cards = [e for e in panel_events(panel, 5) if e["event"] == osdp.Event.CardRead]
    assert len(cards) == 1 and cards[0]["format"] == osdp.CardFormat.Wiegand and cards[0]["length"] == 26
    assert wiegand.parse(wiegand.unpacked(cards[0]["data"], 26)) == (7, 12345)  # obama's, parity checked
    decided = [e for e in AuditStore(tmp_path / "audit.db").events() if e.kind in ("grant", "deny")]
    assert [(e.kind, e.person_name) for e in decided] == [("grant", "obama"), ("deny", None), ("grant", "刘德华")]
    assert decided[0].detail["panel"] == "card 7:12345" and decided[0].detail["card"] == "7:12345"
    assert "has no card" in decided[2].detail["panel"] and "card" not in decided[2].detail
    assert not any(change.on for change in emulator.changes())  # the panel drives the lock, not this relay


def test_a_reader_sends_its_denial_card_on_a_denial_and_refuses_one_that_somebody_holds(
        tmp_path, gallery_path, pipeline, emulator, control_panel):  # noqa: F811
    import shutil

    import osdp

    from appliance.config import from_dict, panel_problems
    from appliance.errors import ConfigError

    panel, port, scbk = control_panel
    gallery = tmp_path / "g.db"
    shutil.copy(gallery_path, gallery)
    clip = tmp_path / "stranger.mp4"
    subprocess.run([sys.executable, str(ROOT / "tools" / "make-demo-video"), str(clip), str(STRANGERS[0]),
                    "--seconds", "2.0", "--fps", "15", "--gap", "1.0"], check=True)
    settings = {"protocol": "osdp", "port": port, "address": 5, "scbk_file": str(scbk), "denial_card": "0:1"}
    config = door_config(tmp_path, gallery, clip, emulator.path, liveness={"enabled": False},
                         door={"mode": "reader"}, panel=settings)
    service = build_service(config, pipeline=pipeline)
    assert wait_until(lambda: panel.is_sc_active(5), timeout=10)
    service.run()
    cards = [wiegand.parse(wiegand.unpacked(e["data"], e["length"]))
             for e in panel_events(panel, 5) if e["event"] == osdp.Event.CardRead]
    denials = [e for e in AuditStore(tmp_path / "audit.db").events() if e.kind == "deny"]
    assert len(denials) >= 1 and cards == [(0, 1)] * len(denials)  # one denial card per denial, and nothing else
    assert denials[0].detail["panel"] == "denial card 0:1"
    store = GalleryStore(gallery)
    store.set_card("obama", 1, 0)  # somebody now holds it: the panel would open the door for them
    store.close()
    with pytest.raises(ConfigError, match="denial_card 0:1 is obama's card"):
        build_service(config, pipeline=pipeline)
    wide = from_dict({"door": {"mode": "reader"}, "panel": dict(settings, denial_card="300:1")})
    assert any("denial_card 300:1 does not fit Wiegand 26" in p for p in panel_problems(wide))


def test_a_reader_without_its_panels_key_refuses_to_start(tmp_path, emulator):  # noqa: F811
    door = tmp_path / "door.toml"
    door.write_text('[door]\nmode = "reader"\n[panel]\nprotocol = "osdp"\nport = "/dev/null"\n')
    check = run_cli("config", "--check", door)
    assert check.returncode == 2 and "panel.scbk_file" in check.stderr and "replayed" in check.stderr


def test_the_administrator_gives_a_card_site_wide_over_mqtt_and_the_door_holds_it(tmp_path, key_file):  # noqa: F811
    from test_access import site_and_door

    with site_and_door(tmp_path, key_file, ["Ada", "Bo"]) as (door, common):
        given = run_cli("admin", "person-card", "Ada", "7:12345", *common)
        assert given.returncode == 0 and "door1: ok" in given.stdout, given.stdout + given.stderr
        assert door.agent.store.find("Ada").card == (7, 12345)
        twice = run_cli("admin", "person-card", "Bo", "7:12345", *common)
        assert twice.returncode == 2 and "belongs to Ada already" in twice.stderr  # refused at the site first
        assert door.agent.store.find("Bo").card is None
        taken = run_cli("admin", "person-card", "Ada", "--clear", *common)
        assert taken.returncode == 0 and door.agent.store.find("Ada").card is None
        changes = [e.detail for e in door.audit.events() if e.kind == "change"]
        assert [c["action"] for c in changes] == ["person_card", "person_card"]


@pytest.fixture
def card_reader_port():
    """A card reader's serial line: the test writes cards into the master end."""
    master, slave = pty.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    yield master, os.ttyname(slave)
    os.close(master)
    os.close(slave)


def test_card_and_face_checks_the_cards_holder_one_to_one_and_denies_with_the_reason(
        tmp_path, gallery_path, pipeline, emulator, card_reader_port):  # noqa: F811
    import shutil

    import cv2
    import numpy as np

    master, port = card_reader_port
    gallery = tmp_path / "g.db"
    shutil.copy(gallery_path, gallery)
    store = GalleryStore(gallery)
    store.set_card("obama", 12345, 7)
    store.set_card("刘德华", 2, 7)
    store.close()
    blank = tmp_path / "nobody.jpg"
    cv2.imwrite(str(blank), np.full((400, 300, 3), 128, np.uint8))

    def door(name, visitors, cards, seconds=2.5, card_seconds=8.0):
        clip = tmp_path / (name + ".mp4")
        subprocess.run([sys.executable, str(ROOT / "tools" / "make-demo-video"), str(clip), *map(str, visitors),
                        "--seconds", str(seconds), "--fps", "15", "--gap", "1.0"], check=True)
        audit = tmp_path / (name + ".db")
        config = door_config(tmp_path, gallery, clip, emulator.path, liveness={"enabled": False},
                             audit={"path": str(audit)}, door={"mode": "card_and_face"},
                             panel={"card_reader_port": port, "card_seconds": card_seconds})
        service = build_service(config, pipeline=pipeline)
        assert service.card_reader.connected.wait(5)
        answers = []  # what the door answers at the reader (a serial reader has no LED: noted here)
        service.card_reader.indicate = answers.append
        os.write(master, "".join(card + "\r\n" for card in cards).encode())  # cards shown as the clip starts
        service.run()
        decided = [(e.kind, e.person_name, e.detail.get("card"), e.detail["reason"])
                   for e in AuditStore(audit).events() if e.kind in ("grant", "deny")]
        assert answers == [kind == "grant" for kind, *_ in decided]  # each decision answered at the reader
        return decided

    # obama's card, then his face: granted; his face again without a card: nothing is decided
    assert door("holder", [PROBES / "obama.jpg", PROBES / "obama.jpg"], ["7:12345"]) == [
        ("grant", "obama", "7:12345", "match")]
    # 刘德华's card with obama's face: the wrong face for that card
    wrong = door("wrong", [PROBES / "obama.jpg"], ["7:2"])
    assert len(wrong) == 1 and wrong[0][:3] == ("deny", None, "7:2")
    assert wrong[0][3].startswith("not the card's holder: card 7:2 is 刘德华's")
    # a card nobody holds, and a known card whose holder never shows a face
    late = door("late", [blank], ["9:9", "7:12345"], seconds=3.0, card_seconds=1.5)
    assert late == [("deny", None, "9:9", "unknown card 9:9: nobody in the gallery holds it"),
                    ("deny", None, "7:12345", "card 7:12345 (obama): no face within 1.5 s")]
    assert sum(change.on for change in emulator.changes()) == 1  # the relay opened for the grant alone


def test_an_export_carries_the_cards_and_an_import_refuses_a_card_held_here(tmp_path):
    import numpy as np
    from test_decision_rule import random_templates

    from appliance.gallery.transfer import export_gallery, import_gallery

    rng = np.random.default_rng(3)
    source = GalleryStore(tmp_path / "a.db", model_id="m")
    source.enrol("ann", random_templates(rng, 1), "m")
    source.set_card("ann", 12345, 7)
    export_gallery(source, tmp_path / "export.json")
    source.close()
    fresh = GalleryStore(tmp_path / "b.db", model_id="m")
    assert import_gallery(fresh, tmp_path / "export.json") == (1, [])
    assert fresh.find("ann").card == (7, 12345)
    fresh.close()
    taken = GalleryStore(tmp_path / "c.db", model_id="m")
    taken.enrol("cy", random_templates(rng, 1), "m")
    taken.set_card("cy", 12345, 7)
    with pytest.raises(GalleryError, match="belongs to cy in this gallery: nothing imported"):
        import_gallery(taken, tmp_path / "export.json")
    assert [p.name for p in taken.people()] == ["cy"]
    taken.close()


def recorded_edges(lines):
    """The recording's edges in microseconds from its first, as a logic analyser shows them."""
    start = lines.edges[0][0]
    return [((at - start) // 1000, line, level) for at, line, level in lines.edges]


@pytest.mark.parametrize("bits,card", [(26, (7, 12345)), (26, (255, 65535)), (34, (4242, 1)), (34, (0, 40000))])
def test_wiegand_output_plays_frames_a_panel_decodes_with_their_parity_and_timing(bits, card):
    from appliance.panel.wiegand_out import RecordingLines, WiegandOutput

    lines = RecordingLines()  # this machine has no GPIO and no gpio-sim: the recorder stands in for the lines
    output = WiegandOutput(lines, bits)
    assert output.send(*card).startswith("card %d:%d as Wiegand %d" % (card[0], card[1], bits))
    frame_edges = recorded_edges(lines)
    assert frame_edges[-2:] == [frame_edges[-2][:1] + ("D0", 1), frame_edges[-1][:1] + ("D1", 1)]  # left idle high
    heard = wiegand.bits_from_edges(output.last)  # the edges as the lines saw them, each timestamped
    assert wiegand.parse(heard) == card and len(heard) == bits
    widths = [b[0] - a[0] for a, b in zip(output.last[::2], output.last[1::2])]
    assert all(20 <= w <= 100 for w in widths)


def test_wiegand_lines_are_driven_through_sysfs_files_and_a_missing_line_says_which(tmp_path):
    from appliance.panel.wiegand_out import SysfsLines, WiegandOutput

    root = tmp_path / "gpio"  # sysfs's layout in a folder: the files a kernel would give (no GPIO here)
    for number in (17, 18):
        (root / ("gpio%d" % number)).mkdir(parents=True)
        (root / ("gpio%d" % number) / "value").write_text("1")
    from appliance.config import from_dict
    from appliance.panel import from_config

    config = from_dict({"door": {"mode": "reader"}, "panel": {"protocol": "wiegand", "wiegand_data0": 17,
                                                             "wiegand_data1": 18, "wiegand_gpio_root": str(root)}})
    output = from_config(config.panel)  # what the door builds in reader mode
    assert isinstance(output, WiegandOutput)
    assert (root / "gpio17" / "direction").read_text() == "high"  # output, high, in one write
    output.send(7, 12345)
    assert (root / "gpio17" / "value").read_text() == "1" and (root / "gpio18" / "value").read_text() == "1"
    output.close()
    with pytest.raises(FaceGateError, match="GPIO 17 and 99"):
        SysfsLines({"D0": 17, "D1": 99}, str(root))


def test_a_wiegand_reader_needs_its_two_lines():
    from appliance.config import from_dict, panel_problems

    config = from_dict({"door": {"mode": "reader"}, "panel": {"protocol": "wiegand", "wiegand_data0": 17}})
    assert any("wiegand_data0 and wiegand_data1" in p for p in panel_problems(config))
    config = from_dict({"door": {"mode": "reader"},
                        "panel": {"protocol": "wiegand", "wiegand_data0": 17, "wiegand_data1": 18}})
    assert panel_problems(config) == []


def set_line(path, level):
    """A GPIO value file's new level, written whole (as the kernel's file changes)."""
    temporary = path.with_name(path.name + ".new")
    temporary.write_text("%d\n" % level)
    os.replace(temporary, path)


def test_a_reader_tells_the_panel_when_its_case_is_opened_or_its_power_lost(
        tmp_path, gallery_path, pipeline, emulator, control_panel):  # noqa: F811
    import threading

    import osdp

    panel, port, scbk = control_panel
    tamper, power = tmp_path / "tamper", tmp_path / "power"
    set_line(tamper, 1)  # closed (the switch reads 0 when opened)
    set_line(power, 1)  # mains present (the monitor reads 0 while lost)
    clip = tmp_path / "empty.mp4"
    subprocess.run([sys.executable, str(ROOT / "tools" / "make-demo-video"), str(clip), str(STRANGERS[0]),
                    "--seconds", "1.0", "--fps", "10"], check=True)
    config = door_config(tmp_path, gallery_path, clip, emulator.path, liveness={"enabled": False},
                         door={"mode": "reader"}, camera={"loop": True, "realtime": True},
                         inputs={"tamper": str(tamper), "tamper_active_low": True, "power_fail": str(power),
                                 "debounce_ms": 20},
                         panel={"protocol": "osdp", "port": port, "address": 5, "scbk_file": str(scbk)})
    service = build_service(config, pipeline=pipeline)
    running = threading.Thread(target=service.run)
    running.start()
    reports = []

    def heard(report):
        while True:
            event = panel.get_event(5, timeout=0.2)
            if event is None:
                return reports and reports[-1] == report
            if event["event"] == osdp.Event.Status:
                reports.append(event["report"])
    try:
        assert wait_until(lambda: heard(b"\x00\x00"), timeout=15)  # at start: closed, powered
        set_line(tamper, 0)
        assert wait_until(lambda: heard(b"\x01\x00"), timeout=10)
        set_line(power, 0)
        assert wait_until(lambda: heard(b"\x01\x01"), timeout=10)
        set_line(tamper, 1)
        set_line(power, 1)
        assert wait_until(lambda: heard(b"\x00\x00"), timeout=10)
    finally:
        service.stop()
        running.join(timeout=30)
    alarms = [(e.detail["alarm"], e.detail["active"]) for e in AuditStore(tmp_path / "audit.db").events(kind="alarm")]
    assert alarms == [("tamper", True), ("power_fail", True), ("tamper", False), ("power_fail", False)]


def test_card_and_face_takes_cards_from_an_osdp_reader_over_its_secure_channel(tmp_path):
    """The door as the control panel of an OSDP card reader: libosdp's own PD plays the reader on
    the other end of a pseudo-terminal."""
    import osdp

    from appliance.config import from_dict
    from appliance.panel.card_reader import card_reader_from_config

    master, slave = pty.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    key = os.urandom(16)
    (tmp_path / "reader.scbk").write_text(key.hex() + "\n")
    heard = []  # the LED and buzzer commands the reader is given
    reader = osdp.PeripheralDevice(osdp.PDInfo(3, fd_channel(master), scbk=key, name="reader"),
                                   osdp.PDCapabilities([(osdp.Capability.CardDataFormat, 1, 1),
                                                        (osdp.Capability.LEDControl, 1, 1),
                                                        (osdp.Capability.AudibleControl, 1, 1)]),
                                   log_level=osdp.LogLevel.Error,
                                   command_handler=lambda command: (heard.append(command), (0, None))[1])
    reader.start()
    faults, backs = [], []
    config = from_dict({"door": {"mode": "card_and_face"},
                        "panel": {"card_reader_protocol": "osdp", "card_reader_port": os.ttyname(slave),
                                  "card_reader_address": 3, "card_reader_scbk_file": str(tmp_path / "reader.scbk")}})
    door = card_reader_from_config(config.panel, faults.append, lambda: backs.append(True))
    try:
        assert wait_until(lambda: door.secure and backs, timeout=15)

        def read(bits):
            reader.submit_event({"event": osdp.Event.CardRead, "reader_no": 0, "direction": 0,
                                 "format": osdp.CardFormat.Wiegand, "length": len(bits), "data": wiegand.packed(bits)})
        read(wiegand.frame(7, 12345, 26))
        taken = []
        assert wait_until(lambda: taken.append(door.take()) or taken[-1] is not None, timeout=5)
        assert taken[-1] == (7, 12345)
        damaged = wiegand.frame(7, 2, 26)
        damaged[5] ^= 1  # a bit changed on the way: its parity says so, and the card is not taken
        read(damaged)
        read(wiegand.frame(300, 1, 34))
        assert wait_until(lambda: taken.append(door.take()) or taken[-1] is not None, timeout=5)
        assert taken[-1] == (300, 1) and door.take() is None
        # the door's answer at the reader: green and one beep for a grant, red and three for a denial
        door.indicate(True)
        door.indicate(False)
        assert wait_until(lambda: len(heard) == 4, timeout=10)
        leds = [c for c in heard if c["command"] == osdp.Command.LED]
        beeps = [c for c in heard if c["command"] == osdp.Command.Buzzer]
        assert [c["on_color"] for c in leds] == [osdp.CommandLEDColor.Green, osdp.CommandLEDColor.Red]
        assert all(c["temporary"] and c["timer_count"] == 20 for c in leds)
        assert [c["rep_count"] for c in beeps] == [1, 3]
        before = len(faults)  # the channel was down at start, before the reader answered: said then
        reader.stop()  # the reader goes silent: a fault again
        assert wait_until(lambda: len(faults) > before, timeout=30) and "no secure channel" in faults[-1]
    finally:
        door.close()
        os.close(master)
        os.close(slave)


def test_an_osdp_card_reader_needs_its_key():
    from appliance.config import from_dict, panel_problems

    config = from_dict({"door": {"mode": "card_and_face"},
                        "panel": {"card_reader_protocol": "osdp", "card_reader_port": "/dev/ttyUSB2"}})
    assert any("card_reader_scbk_file" in p for p in panel_problems(config))


class RecordedWires:
    """A Wiegand reader's two wires as the door's edge source sees them: the falling edges of
    frames the door's own Wiegand output played (`RecordingLines`), each frame starting `apart_s`
    after the last, handed out as real time reaches them. There is no GPIO here to carry them
    (no gpio-sim either): this stands in for the kernel's edge events, and is said to."""

    def __init__(self, recordings, apart_s=0.1):
        import time

        start = time.monotonic_ns() + 20_000_000
        self.edges = []
        for index, lines in enumerate(recordings):
            first = lines.edges[0][0]
            self.edges += [(name, start + int(index * apart_s * 1e9) + at - first)
                           for at, name, level in lines.edges if level == 0]
        self.closed = False

    def wait(self, timeout_s):
        import time

        deadline = time.monotonic_ns() + int(timeout_s * 1e9)
        while time.monotonic_ns() < deadline and not (self.edges and self.edges[0][1] <= time.monotonic_ns()):
            time.sleep(0.0005)
        due = [edge for edge in self.edges if edge[1] <= time.monotonic_ns()]
        del self.edges[:len(due)]
        return due

    def close(self):
        self.closed = True


def played(bits, card=None, damage=None):
    """The lines' recording of the door's Wiegand output playing a card (one bit flipped by `damage`)."""
    from appliance.panel.wiegand_out import RecordingLines, play

    frame = wiegand.frame(*card, bits)
    if damage is not None:
        frame[damage] ^= 1
    lines = RecordingLines()
    play(wiegand.pulses(frame), lines)
    return lines


def test_card_and_face_takes_cards_from_a_wiegand_readers_wires_and_drops_a_damaged_frame():
    from appliance.panel.wiegand_in import WiegandCardReader

    wires = RecordedWires([played(26, (7, 12345)), played(26, (9, 2), damage=4), played(34, (4242, 1))])
    faults, backs = [], []
    reader = WiegandCardReader(lambda: wires, faults.append, lambda: backs.append(True))
    try:
        taken = []
        assert wait_until(lambda: taken.append(reader.take()) or taken[-1] is not None, timeout=5)
        assert taken[-1] == (7, 12345)
        assert wait_until(lambda: taken.append(reader.take()) or taken[-1] is not None, timeout=5)
        assert taken[-1] == (4242, 1)  # the damaged frame between them failed its parity and was dropped
        assert reader.take() is None and backs == [True] and faults == []
    finally:
        reader.close()
    assert wires.closed


def test_a_wiegand_frame_ends_at_its_silence_and_noise_is_no_card():
    from appliance.panel.wiegand_in import MAX_BITS, UNORDERED, FrameDecoder

    decoder = FrameDecoder(gap_ns=25_000_000)
    bits = wiegand.frame(7, 12345, 26)
    at = 0
    for bit in bits:
        assert decoder.edge("D1" if bit else "D0", at) is None
        at += 2_000_000
    assert decoder.due(at + 20_000_000) is None  # 22 ms after the last bit: the frame may go on
    assert decoder.due(at + 23_000_000) == bits
    for index in range(MAX_BITS + 10):  # a long burst on the wires is capped, then refused as a card
        decoder.edge("D0", 10**9 + index * 1000)
    noise = decoder.edge("D1", 2 * 10**9)  # the next bit after silence starts a new frame
    assert len(noise) == MAX_BITS and decoder.bits == [1]
    with pytest.raises(FaceGateError, match="64 bits"):
        wiegand.parse(noise)
    # two bits that arrived together, order unknown (sysfs): swapped, they could keep the parity
    # and name another card, so the frame is dropped whole
    decoder = FrameDecoder(gap_ns=25_000_000)
    for index, bit in enumerate(bits[:10]):
        decoder.edge("D1" if bit else "D0", index * 2_000_000)
    decoder.edge(UNORDERED, 20_000_000)
    decoder.edge(UNORDERED, 20_000_000)
    for index, bit in enumerate(bits[12:]):
        decoder.edge("D1" if bit else "D0", 22_000_000 + index * 2_000_000)
    assert decoder.due(10**9) is None and decoder.bits == []


def test_wiegand_reader_lines_are_watched_through_sysfs_and_a_missing_line_is_a_fault_that_clears(tmp_path):
    from appliance.config import from_dict, panel_problems
    from appliance.panel.card_reader import card_reader_from_config
    from appliance.panel.wiegand_in import WiegandCardReader

    root = tmp_path / "gpio"  # sysfs's layout in a folder (no GPIO here); the lines are not exported yet
    root.mkdir()
    (root / "export").write_text("")
    settings = {"card_reader_protocol": "wiegand", "card_reader_data0": str(root / "gpio20" / "value"),
                "card_reader_data1": str(root / "gpio21" / "value")}
    config = from_dict({"door": {"mode": "card_and_face"}, "panel": settings})
    assert panel_problems(config) == []
    faults, backs = [], []
    reader = card_reader_from_config(config.panel, faults.append, lambda: backs.append(True))
    try:
        assert isinstance(reader, WiegandCardReader)
        assert wait_until(lambda: faults, timeout=5)
        assert "gpio20/value" in faults[-1] and "exported" in faults[-1] and not backs
        assert (root / "export").read_text() == "20"  # the door asked the kernel for the line
        for number in (20, 21):  # the init script exports them: the fault clears by itself
            (root / ("gpio%d" % number)).mkdir(parents=True)
            (root / ("gpio%d" % number) / "value").write_text("1\n")
        assert wait_until(lambda: backs, timeout=5)
        assert (root / "gpio20" / "direction").read_text() == "in" and (root / "gpio21" / "edge").read_text() == "falling"
    finally:
        reader.close()
    half = from_dict({"door": {"mode": "card_and_face"},
                      "panel": dict(settings, card_reader_data1=settings["card_reader_data0"])})
    assert any("card_reader_data0 and card_reader_data1" in p for p in panel_problems(half))


def test_wiegand_reader_lines_named_chip_line_use_the_character_device_and_a_missing_chip_is_a_fault():
    from appliance.errors import ConfigError
    from appliance.panel.wiegand_in import CharDeviceEdges, WiegandCardReader, open_edges

    faults = []
    # no GPIO chip on this machine: the request fails as it would for a mistyped chip on a board
    reader = WiegandCardReader(lambda: open_edges("gpiochip9:20", "gpiochip9:21"), faults.append, lambda: None)
    try:
        assert wait_until(lambda: faults, timeout=5)
        assert "cannot watch Wiegand reader lines gpiochip9:20 and gpiochip9:21" in faults[-1]
        assert "No such file" in faults[-1]
    finally:
        reader.close()
    with pytest.raises(ConfigError, match="must be on one GPIO chip"):
        CharDeviceEdges("gpiochip0:20", "gpiochip1:21")


def test_the_panels_led_and_buzzer_commands_are_kept_as_osdp_times_them():
    from appliance.panel.indication import PanelIndication, describe

    now = [100.0]
    shown = PanelIndication(clock=lambda: now[0])
    assert shown.state() == {"led": "off", "buzzer": False}
    shown.command({"control_code": 1, "on_count": 1, "off_count": 0, "on_color": 1, "off_color": 0}, "LED")
    shown.command({"temporary": True, "control_code": 2, "on_count": 3, "off_count": 3, "on_color": 2,
                   "off_color": 1, "timer_count": 20}, "LED")  # 2 s of red and green in turn
    shown.command({"control_code": 2, "on_count": 1, "off_count": 1, "rep_count": 3}, "buzzer")  # 3 x 0.2 s
    assert shown.state() == {"led": "green/red alternating", "buzzer": True}
    now[0] += 0.7
    assert shown.state() == {"led": "green/red alternating", "buzzer": False}
    now[0] += 1.4
    assert shown.state()["led"] == "red"  # the temporary state's 2 s are over: the permanent one again
    shown.command({"command": 99}, "command")  # another command (text, output): not shown, no harm
    assert describe({"on_color": 2, "off_color": 0, "on_count": 0, "off_count": 5}) == "off"
    assert describe({"on_color": 9, "off_count": 0}) == "colour 9"


def test_the_self_test_checks_what_reader_mode_and_card_and_face_need_without_opening_the_lines(tmp_path):
    """The running door holds the panel's line, so the self-test beside it opens nothing: it says
    what is set up and what is missing."""
    from appliance.config import from_dict
    from appliance.selftest import run_checks

    master, slave = pty.openpty()
    (tmp_path / "scbk").write_text("00" * 16 + "\n")
    try:
        def panel_check(door, panel):
            config = from_dict({"door": door, "panel": panel})
            return next(c for c in run_checks(config, relay=False, camera=False) if c.name == "panel")

        ready = panel_check({"mode": "reader"}, {"protocol": "osdp", "port": os.ttyname(slave), "address": 4,
                                                 "scbk_file": str(tmp_path / "scbk")})
        assert ready.ok and ready.detail == "reader at OSDP address 4 on %s, 9600 baud" % os.ttyname(slave)
        unplugged = panel_check({"mode": "reader"}, {"protocol": "osdp", "port": "/dev/ttyUSB9",
                                                     "scbk_file": str(tmp_path / "scbk")})
        assert not unplugged.ok and "/dev/ttyUSB9 does not exist" in unplugged.detail
        wires = panel_check({"mode": "card_and_face"}, {"card_reader_protocol": "wiegand",
                                                        "card_reader_data0": "gpiochip7:1",
                                                        "card_reader_data1": "gpiochip7:2"})
        assert not wires.ok and "GPIO chip /dev/gpiochip7 does not exist" in wires.detail
        keyless = panel_check({"mode": "card_and_face"}, {"card_reader_protocol": "osdp",
                                                          "card_reader_port": os.ttyname(slave)})
        assert not keyless.ok and "card_reader_scbk_file" in keyless.detail
    finally:
        os.close(master)
        os.close(slave)


def test_card_and_face_takes_cards_a_usb_reader_types_and_refuses_a_line_with_letters(tmp_path):
    """A USB reader that types (HID): its key events, in the kernel's struct input_event, arrive
    through a FIFO standing in for /dev/input/eventN (no input devices and no uinput here)."""
    import struct

    from appliance.config import from_dict
    from appliance.panel.card_reader import card_reader_from_config
    from appliance.panel.hid_reader import HidCardReader

    device = tmp_path / "event-kbd"
    os.mkfifo(device)
    writer = os.open(device, os.O_RDWR)  # held open: the reader sees a device that is plugged in
    codes = {str(n): 1 + n for n in range(1, 10)}
    codes["0"] = 11

    def typed(text, keypad=False):
        events = b""
        for char in text:
            code = 28 if char == "\n" else 30 if char == "A" else codes[char]  # 30 is KEY_A
            if keypad and char == "\n":
                code = 96  # the keypad's Enter
            for value in (1, 0):  # pressed, released
                events += struct.pack("llHHi", 1, 0, 1, code, value) + struct.pack("llHHi", 1, 0, 0, 0, 0)
        return events

    faults, backs = [], []
    config = from_dict({"door": {"mode": "card_and_face"},
                        "panel": {"card_reader_protocol": "hid", "card_reader_port": str(device)}})
    reader = card_reader_from_config(config.panel, faults.append, lambda: backs.append(True))
    try:
        assert isinstance(reader, HidCardReader) and wait_until(lambda: backs, timeout=5)
        data = typed("0012345678\n") + typed("12A3\n") + typed("42\n", keypad=True)
        os.write(writer, data[:37])  # events split anywhere: whole ones are read, the rest waits
        os.write(writer, data[37:])
        taken = []
        assert wait_until(lambda: taken.append(reader.take()) or taken[-1] is not None, timeout=5)
        assert taken[-1] == (0, 12345678)
        assert wait_until(lambda: taken.append(reader.take()) or taken[-1] is not None, timeout=5)
        assert taken[-1] == (0, 42)  # the line with a letter in it was no card
        os.close(writer)  # unplugged: a fault, tried again every second
        writer = None
        assert wait_until(lambda: faults, timeout=5) and "input ended" in faults[-1]
    finally:
        reader.close()
        if writer is not None:
            os.close(writer)


def test_a_wiegand_readers_led_and_beeper_lines_answer_a_grant_and_a_denial(tmp_path):
    from appliance.config import from_dict
    from appliance.panel.card_reader import card_reader_from_config

    root = tmp_path / "gpio"  # sysfs's layout in a folder (no GPIO here): the kernel's files for each line
    for number in (20, 21, 22, 23):
        (root / ("gpio%d" % number)).mkdir(parents=True)
        (root / ("gpio%d" % number) / "value").write_text("1")
    config = from_dict({"door": {"mode": "card_and_face"},
                        "panel": {"card_reader_protocol": "wiegand", "wiegand_gpio_root": str(root),
                                  "card_reader_data0": str(root / "gpio20" / "value"),
                                  "card_reader_data1": str(root / "gpio21" / "value"),
                                  "card_reader_led": 22, "card_reader_beeper": 23}})
    reader = card_reader_from_config(config.panel, lambda message: None, lambda: None)

    def level(number):
        return (root / ("gpio%d" % number) / "value").read_text()[:1]
    try:
        assert (root / "gpio22" / "direction").read_text() == "high"  # outputs, idle high
        reader.signals.LED_SECONDS, reader.signals.BEEP_SECONDS = 1.0, 0.3
        reader.indicate(True)
        assert wait_until(lambda: level(22) == "0", timeout=2)  # green while the door opens
        assert wait_until(lambda: level(22) == "1" and level(23) == "1", timeout=3)
        edges = []
        reader.indicate(False)

        def three_beeps():
            now = level(23)
            if not edges or edges[-1] != now:
                edges.append(now)
            return edges.count("0") == 3 and edges[-1] == "1"
        assert wait_until(three_beeps, timeout=5)
        assert level(22) == "1"  # a denial leaves the LED alone
    finally:
        reader.close()
