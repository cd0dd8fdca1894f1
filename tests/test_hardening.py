"""Hostile and broken inputs: each defect the adversarial run found, on the real parts.

MQTT on a real mosquitto (the door in this process or as its own process), GPIO value files,
image files at the real CLI, the door service on real models with a relay on a pty.
"""

import json
import os
import random
import re
import struct
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from conftest import MODELS, SEED, run_cli, wait_until
from test_mqtt import (SITE, Door, Listener, broker, door_settings, key_file, reply_body,  # noqa: F401
                       run_door_process)
from test_service import gallery_path  # noqa: F401

from appliance.audit import AuditStore
from appliance.config import DoorConfig, InputsConfig
from appliance.door.controller import DoorController
from facegate_host.emulator import RelayEmulator
from appliance.door.inputs import InputWatcher
from appliance.door.relay import LcusProtocol, Relay
from appliance.door.states import Access
from appliance.mqtt.signing import envelope, seal, seal_bytes, sign

TOPIC = "facegate/%s/door1/cmd/" % SITE
EMBEDDING = [1.0] + [0.0] * 127


def publish(broker, topic, payload, retain=False, properties=None, protocol=mqtt.MQTTv5):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=protocol)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    client.publish(topic, payload, qos=1, retain=retain, properties=properties).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()


def signed(key, verb, body, target="door1", **fields):
    """A signed message; `fields` replace envelope fields before signing."""
    return seal(key, dict(envelope(verb, target, body), **fields))


def replied(replies, request_id):
    """The door's reply to `request_id`, once it came, else None."""
    for _, payload, _ in list(replies.messages):
        body = reply_body(payload) if payload else {}
        if body.get("request_id") == request_id:
            return body
    return None


def ping_answered(broker, key, replies, timeout=10.0) -> bool:
    """A signed ping answered ok. A door whose inbox is full answers `busy` ("send it again
    shortly"): the ping is sent again then, as an administrator would, until `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        request_id = "ping-%s" % random.random()
        publish(broker, TOPIC + "ping", sign(key, "ping", "door1", {}, request_id=request_id))
        if not replies.wait(lambda m: replied(replies, request_id) is not None, max(0.0, deadline - time.monotonic())):
            return False
        answer = replied(replies, request_id)
        if answer.get("ok"):
            return True
        if answer.get("code") != "busy":
            return False
    return False


def door_connections(broker) -> int:
    log = (broker.folder / "mosquitto.log").read_text(errors="replace")
    return len(re.findall(r"New client connected .* as facegate-%s-door1 " % SITE, log))


# -- 1. a NUL in a request id must not take the door off the network -----------------------

def test_a_request_id_with_nul_is_answered_safely_and_the_door_stays_connected(tmp_path, broker, key_file):
    door = Door(door_settings(tmp_path, broker, key_file))
    replies = Listener(broker.port, "facegate/%s/door1/reply/#" % SITE)
    statuses = Listener(broker.port, "facegate/%s/door1/status" % SITE)
    key = key_file.admin
    try:
        connected = door_connections(broker)
        hostile = signed(key, "ping", {}, request_id="a\u0000b")  # signed: it reaches the parser
        publish(broker, TOPIC + "ping", hostile)
        assert replies.wait(lambda m: any(t.endswith("/reply/unknown") for t, _, _ in m))
        reply = reply_body(next(p for t, p, _ in replies.messages if t.endswith("/reply/unknown")))
        assert reply["ok"] is False and reply["code"] == "malformed"
        assert ping_answered(broker, key, replies)
        assert door.agent.link.connected.is_set()
        assert not any(json.loads(p)["state"] == "offline" for _, p, _ in statuses.messages if p)
        assert door_connections(broker) == connected
    finally:
        statuses.close()
        replies.close()
        door.close()


def test_a_malformed_topic_is_never_published():
    from appliance.mqtt import topics

    for bad in ("facegate/s/d/reply/a\0b", "facegate/s/+/x", "facegate/#", "", "a\ud800b", "x" * 2000):
        assert not topics.publishable(bad), repr(bad)
    assert topics.reply("s", "d", "a\0b") == "facegate/s/d/reply/invalid"
    assert topics.reply("s", "d", "0f3a-Z_9.x:1") == "facegate/s/d/reply/0f3a-Z_9.x:1"


# -- 2. an unsigned request chooses nothing about where the door publishes -------------------

def test_replies_to_unsigned_requests_never_go_to_another_topic(tmp_path, broker, key_file):
    door = Door(door_settings(tmp_path, broker, key_file))
    everything = Listener(broker.port, "facegate/%s/#" % SITE)
    key = key_file.admin
    try:
        cases = [
            ("facegate/%s/door2/events" % SITE, json.dumps({"request_id": "r1", "verb": "ping", "target": "door1",
                                                            "issued": time.time(), "body": {}})),
            ("facegate/%s/door2/cmd/unlock" % SITE, "{not json"),
            # signed, but the response topic is the MQTT property's, which nobody signed
            ("facegate/%s/admin-1/reply" % SITE, sign(key, "ping", "door1", {}, request_id="r3")),
            # signed, naming a reply topic that is not an administrator's
            ("x", sign(key, "ping", "door1", {}, request_id="r4", reply_to="facegate/%s/door2/status" % SITE)),
        ]
        for number, (reflect_to, payload) in enumerate(cases):
            properties = Properties(PacketTypes.PUBLISH)
            properties.ResponseTopic = reflect_to
            properties.CorrelationData = b"c%d" % number
            publish(broker, TOPIC + "ping", payload, properties=properties)
        assert everything.wait(lambda m: sum("/door1/reply/" in t for t, _, _ in m) == len(cases))
        assert not [t for t, _, _ in everything.messages if "/door2/" in t]
        assert not [t for t, _, _ in everything.messages if "/admin-1/" in t]
        # a request that names an administrator's reply topic in what it signed is answered there
        publish(broker, TOPIC + "ping", sign(key, "ping", "door1", {}, reply_to="facegate/%s/admin-1/reply" % SITE))
        assert everything.wait(lambda m: any(t.endswith("/admin-1/reply") for t, _, _ in m))
    finally:
        everything.close()
        door.close()


# -- 3. a failed re-enrolment leaves the person as they were ---------------------------------

def test_a_failed_signed_enrol_changes_nothing(tmp_path, broker, key_file):
    door = Door(door_settings(tmp_path, broker, key_file))
    replies = Listener(broker.port, "facegate/%s/door1/reply/#" % SITE)
    key = key_file.admin
    body = {"model_id": "mobilefacenet_128d", "embeddings": [EMBEDDING]}
    try:
        def command(request_id, fields):
            publish(broker, TOPIC + "enroll", sign(key, "enroll", "door1", dict(body, **fields), request_id=request_id))
            assert replies.wait(lambda m: replied(replies, request_id) is not None)
            return replied(replies, request_id)

        assert command("e1", {"person_id": "p1", "name": "Alice"})["ok"]
        assert command("e2", {"person_id": "p2", "name": "Bob"})["ok"]
        before = door.people()
        taken = command("e3", {"person_id": "p1", "name": "Bob"})  # Bob is someone else's name
        assert taken["ok"] is False and "another person" in taken["message"]
        bad_date = command("e4", {"person_id": "p1", "name": "Alice", "valid_from": "next tuesday"})
        assert bad_date["ok"] is False and "valid_from" in bad_date["message"]
        assert door.people() == before
        assert door.agent.store.find("p1").templates == 1
        renamed = command("e5", {"person_id": "p1", "name": "Alice B", "valid_until": "2030-01-01"})
        assert renamed["ok"] and renamed["result"]["name"] == "Alice B"
        assert [p[:2] for p in door.people()] == [("p1", "Alice B"), ("p2", "Bob")]
    finally:
        replies.close()
        door.close()


# -- 4 and 5. numbers and text that Python's json takes but nothing should ------------------

def test_hostile_numbers_and_text_are_refused_with_a_reply(tmp_path, broker, key_file, caplog):
    door = Door(door_settings(tmp_path, broker, key_file))
    replies = Listener(broker.port, "facegate/%s/door1/reply/#" % SITE)
    key = key_file.admin
    now = time.time()
    # signed by the administrator (a bug or a stolen laptop), so each reaches the parser
    cases = [
        ("unlock", signed(key, "unlock", {}, request_id="nan", issued=float("nan"))),
        ("unlock", signed(key, "unlock", {}, request_id="huge", issued=10 ** 400)),
        ("unlock", seal_bytes(key, b'{"request_id":"inf","verb":"unlock","target":"door1","issued":1e400,"body":{}}')),
        ("ping", seal_bytes(key, b'{"request_id":"deep","verb":"ping","target":"door1","issued":%f,"body":%s}'
                            % (now, b"[" * 50000 + b"]" * 50000))),
        ("enroll", seal_bytes(key, b'{"request_id":"surrogate","verb":"enroll","target":"door1","issued":%f,'
                                   b'"body":{"person_id":"p1","name":"\\ud800"}}' % now)),
        ("ping", signed(key, "ping", {"a": [[[[[[[[[[1]]]]]]]]]]}, request_id="nested")),
    ]
    try:
        with caplog.at_level("WARNING", logger="appliance.mqtt.device"):
            for verb, payload in cases:
                publish(broker, TOPIC + verb, payload)
                assert replies.wait(lambda m: len(m) >= 1), [p for _, p, _ in replies.messages]
                reply = reply_body(replies.messages[-1][1])
                assert reply["ok"] is False and reply["code"] == "malformed", reply
                replies.messages.clear()
        # logged once, with the reason; more of the same kind are counted, not repeated (a flood)
        logged = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert len(logged) == 1 and "malformed" in logged[0] and "NaN" in logged[0], logged
        assert door.audit.events() == [] and door.controller.access is Access.idle
        assert ping_answered(broker, key, replies)
    finally:
        replies.close()
        door.close()


# -- 6. retained commands, per protocol version --------------------------------------------

def test_on_mqtt_311_a_stored_retained_unlock_is_refused_and_a_live_one_applied_once(tmp_path, broker, key_file):
    key = key_file.admin
    raw = door_settings(tmp_path, broker, key_file, mqtt={"protocol": "3.1.1"})
    # stored on the broker before the door subscribes: delivered with the retain flag, refused
    publish(broker, TOPIC + "unlock", signed(key, "unlock", {}, request_id="stored"), retain=True,
            protocol=mqtt.MQTTv311)
    replies = Listener(broker.port, "facegate/%s/door1/reply/#" % SITE)
    door = Door(raw)
    try:
        assert replies.wait(lambda m: replied(replies, "stored") is not None)
        assert replied(replies, "stored")["code"] == "retained"
        assert door.audit.events() == []
        # published live with retain: MQTT 3.1.1 delivers it without the flag, so it is applied,
        # once (signed, fresh, new request id); its stored copy is refused at every reconnect
        publish(broker, TOPIC + "unlock", signed(key, "unlock", {}, request_id="live"), retain=True,
                protocol=mqtt.MQTTv311)
        assert wait_until(lambda: [e.kind for e in door.audit.events()] == ["remote_unlock"], timeout=5)
    finally:
        door.close()
    # while the door is stopped, a retained gallery change: on 3.1.1 the door keeps no session,
    # so no copy is queued for it without the flag; the stored one arrives flagged and is refused
    publish(broker, TOPIC + "enroll", signed(key, "enroll", {"person_id": "p1", "name": "Mallory",
                                                              "model_id": "mobilefacenet_128d",
                                                              "embeddings": [EMBEDDING]}, request_id="queued"),
            retain=True, protocol=mqtt.MQTTv311)
    door = Door(raw)
    try:
        assert replies.wait(lambda m: replied(replies, "queued") is not None)
        assert replied(replies, "queued")["code"] == "retained"
        assert door.people() == []
        assert [e.kind for e in door.audit.events()] == ["remote_unlock"]
    finally:
        replies.close()
        door.close()


# -- 7. a GPIO glitch clears when the line reads again --------------------------------------

def write_level(path, level):
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("%s\n" % level)
    os.replace(temporary, path)


def test_a_gpio_glitch_faults_then_clears_and_the_exit_button_works_again(tmp_path):
    button = tmp_path / "button"
    write_level(button, 1)  # released (active low)
    emulator = RelayEmulator(link=str(tmp_path / "relay"))
    audit = AuditStore(tmp_path / "audit.db")
    controller = DoorController(DoorConfig(unlock_seconds=1.0, cooldown_seconds=0.1),
                                Relay(emulator.path, LcusProtocol(1)), audit)
    watcher = InputWatcher.from_config(
        InputsConfig(exit_button=str(button), debounce_ms=20, poll_ms=5),
        lambda name, active: controller.exit_pressed() if active else None,
        lambda message: controller.report_fault("inputs", message),
        lambda: controller.clear_fault("inputs"))
    watcher.start()
    try:
        write_level(button, "garbage")
        assert wait_until(lambda: controller.access is Access.fault, timeout=10)
        write_level(button, 1)
        assert wait_until(lambda: controller.access is Access.idle and not controller.faults, timeout=10)
        write_level(button, 0)  # pressed
        assert emulator.wait_for(lambda e: any(change.on for change in e.changes()), timeout=10)
        assert wait_until(lambda: len(audit.events()) >= 3, timeout=10)  # recorded after the relay write
        assert [(e.kind, e.detail.get("source")) for e in audit.events()][:3] == [
            ("fault", "inputs"), ("recovered", "inputs"), ("exit", "exit_button")]
    finally:
        watcher.close()
        controller.shutdown()
        emulator.close()
        audit.close()


# -- 8. the camera: image bombs are skipped, a dead thread stops the door locked -------------

def png_header(width, height):
    chunk = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))


def service_config(tmp_path, gallery, source, relay, **sections):
    from appliance.config import from_dict

    raw = {"models": {"dir": str(MODELS)}, "gallery": {"path": str(gallery)},
           "audit": {"path": str(tmp_path / "audit.db")}, "camera": {"source": str(source), "folder_fps": 10.0},
           "relay": {"port": relay}, "door": {"unlock_seconds": 0.5}}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return from_dict(raw, "test")


def test_a_camera_folder_skips_an_image_bomb_and_the_door_works(tmp_path, gallery_path, pipeline):
    from appliance.service import build_service

    folder = tmp_path / "camera"
    folder.mkdir()
    (folder / "0.png").write_bytes(png_header(40000, 40000) + b"\0" * 64)  # 1.6e9 pixels declared
    for number in range(1, 8):
        (folder / ("%d.jpg" % number)).write_bytes((SEED / "probes" / "obama.jpg").read_bytes())
    emulator = RelayEmulator(link=str(tmp_path / "relay"))
    try:
        service = build_service(service_config(tmp_path, gallery_path, folder, emulator.path), pipeline=pipeline)
        counters = service.run()
        assert service.failure is None
        assert counters.decisions["grant"] == 1
        assert not emulator.is_on()
    finally:
        emulator.close()


def test_a_thread_that_dies_locks_the_door_stops_the_service_and_starves_the_watchdog(
        tmp_path, gallery_path, pipeline, monkeypatch):
    from appliance import camera as camera_module
    from appliance.service import build_service

    class BrokenCamera:
        """Stands in for a driver that raises inside read(): a fault no real file provokes."""

        def __init__(self):
            self.reads = 0

        def isOpened(self):  # noqa: N802
            return True

        def get(self, prop):
            return 0.0

        def read(self):
            self.reads += 1
            time.sleep(0.04)  # a 25 fps camera
            if self.reads > 50:  # two seconds in: the door has fed its watchdog by then
                raise RuntimeError("driver fell over")
            return True, np.full((480, 640, 3), 80, np.uint8)

        def release(self):
            pass

    monkeypatch.setattr(camera_module, "open_capture", lambda source, *settings: BrokenCamera())
    watchdog = tmp_path / "watchdog"
    watchdog.write_bytes(b"")
    emulator = RelayEmulator(link=str(tmp_path / "relay"))
    try:
        config = service_config(tmp_path, gallery_path, "/dev/video9", emulator.path,
                                door={"watchdog_device": str(watchdog)})
        service = build_service(config, pipeline=pipeline)
        runner = threading.Thread(target=service.run)
        runner.start()
        runner.join(timeout=60)
        if runner.is_alive():  # the door ran on blind: stop it, then fail
            service.stop()
            runner.join(timeout=10)
            pytest.fail("the service kept running after its camera thread died")
        assert service.failure and "camera thread stopped" in service.failure and "driver fell over" in service.failure
        fed = watchdog.read_bytes()
        assert fed and set(fed) == {ord("1")}  # fed while healthy, never disarmed with 'V'
        faults = [e.detail for e in AuditStore(tmp_path / "audit.db").events(kind="fault")]
        assert any(f["source"] == "thread" for f in faults)
        assert not emulator.is_on()
    finally:
        emulator.close()


# -- 9. image bombs and broken files at the command line -----------------------------------

def test_image_bombs_and_broken_files_get_one_line_at_every_command(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(20000, 20000) + b"\0" * 41)
    assert len(bomb.read_bytes()) == 74
    broken = tmp_path / "broken.png"
    ok, encoded = cv2.imencode(".png", np.full((64, 64, 3), 128, np.uint8))
    broken.write_bytes(encoded.tobytes()[:60] + b"\0" * 40)  # a valid header, damaged data
    gallery = tmp_path / "g.db"
    from appliance.gallery.store import GalleryStore

    GalleryStore(gallery).close()  # an empty gallery: identify reads one
    for path, expected in ((bomb, "20000x20000"), (broken, "not a readable image")):
        for command in (["detect", path], ["identify", path, "--gallery", gallery]):
            result = run_cli(*command)
            assert result.returncode == 2, (command, result.stderr)
            assert result.stderr.count("\n") == 1 and expected in result.stderr, (command, result.stderr)
            assert "Traceback" not in result.stderr and "libpng" not in result.stderr
        # enrolment skips a bad photo with its reason in the summary, and enrols nobody
        result = run_cli("enroll", "Someone", path, "--gallery", gallery)
        assert result.returncode == 1 and result.stderr == "", result.stderr
        assert expected in result.stdout and "0 people enrolled" in result.stdout


# -- the fuzz test: thousands of hostile payloads against a door process ---------------------

def fuzzed_payloads(key, count, seed=20261125):
    """Hostile messages: random bytes, envelopes with odd fields (signed by the administrator, so
    they reach the parser, or unsigned), hostile bodies, and signed bytes cut and spliced."""
    generator = random.Random(seed)
    fields = ["request_id", "verb", "target", "issued", "body", "reply_to"]
    oddities = [None, True, -1, 0, 2 ** 70, 1e308, "", "\u0000", "\ud800", "a/b", "+", "#", "x" * 300,
                [], {}, [[[[]]]], {"change": -5}, "unlock", "all", "door2", "NaN"]
    for number in range(count):
        kind = generator.randrange(6)
        if kind == 0:
            yield bytes(generator.randrange(256) for _ in range(generator.randrange(1, 200))), False, None
            continue
        fields_now = envelope("ping", "door1", {}, request_id="f%d" % number)
        if kind == 1:
            fields_now[generator.choice(fields)] = generator.choice(oddities)
        elif kind == 2:
            fields_now.pop(generator.choice(fields[:5]))
        elif kind == 3:  # validly signed, hostile body
            verb = generator.choice(["enroll", "remove", "sync", "list", "set_threshold", "add_photos", "nope"])
            fields_now.update(verb=verb, body={generator.choice(["person_id", "name", "photos", "embeddings", "changes",
                                                                 "page", "distance_threshold", "change"]):
                                               generator.choice(oddities) for _ in range(generator.randrange(1, 4))})
        elif kind == 4:
            text = seal(key, fields_now)
            cut = generator.randrange(len(text))
            yield (text[:cut] + generator.choice([b"NaN", b"Infinity", b"\\u0000", b"\\ud800", b"[" * 5000, b"1e999"])
                   + text[cut:]), False, None
            continue
        try:
            # a well-formed signed unlock is the administrator's real command, not an attack
            sign_it = generator.random() < 0.7 and fields_now.get("verb") != "unlock"
            payload = seal(key, fields_now) if sign_it else json.dumps(fields_now).encode()
        except UnicodeEncodeError:  # a lone surrogate cannot be signed: it goes out unsigned
            payload = json.dumps(fields_now).encode()
        yield payload, generator.random() < 0.1, fields_now.get("verb") if isinstance(fields_now.get("verb"), str) \
            and fields_now.get("verb").isalpha() else None


def test_fuzzed_commands_never_crash_unlock_or_disconnect_the_door(tmp_path, broker, key_file):
    raw = door_settings(tmp_path, broker, key_file)
    config_path = tmp_path / "door.json"
    config_path.write_text(json.dumps(raw))
    key = key_file.admin
    statuses = Listener(broker.port, "facegate/%s/door1/status" % SITE)
    replies = Listener(broker.port, "facegate/%s/door1/reply/#" % SITE)
    process = run_door_process(config_path)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        assert statuses.wait(lambda m: any(json.loads(p)["state"] == "online" for _, p, _ in m if p))
        connected = door_connections(broker)
        generator = random.Random(7)
        verbs = ["ping", "unlock", "enroll", "remove", "sync", "list", "status", "set_threshold", "x"]
        sent = 0
        for payload, retain, verb in fuzzed_payloads(key, 3000):
            properties = None
            if generator.random() < 0.2:
                properties = Properties(PacketTypes.PUBLISH)
                properties.ResponseTopic = generator.choice(["facegate/%s/door2/events" % SITE, "elsewhere",
                                                             "facegate/%s/door1/cmd/unlock" % SITE])
            target = generator.choice([TOPIC, "facegate/%s/all/cmd/" % SITE])
            info = client.publish(target + (verb or generator.choice(verbs)), payload, qos=1, retain=retain,
                                  properties=properties)
            sent += 1
            if sent % 200 == 0:
                info.wait_for_publish(10)
        info.wait_for_publish(10)
        assert ping_answered(broker, key, replies, timeout=120), "no answer to a valid ping after the fuzzing"
        assert process.poll() is None  # the same process
        assert door_connections(broker) == connected  # never dropped for what it published
        assert not any(json.loads(p)["state"] == "offline" for _, p, _ in statuses.messages if p)
    finally:
        client.loop_stop()
        client.disconnect()
        process.terminate()
        process.wait(timeout=20)
        statuses.close()
        replies.close()
    events = AuditStore(Path(raw["audit"]["path"])).events()
    assert not [e for e in events if e.kind in ("grant", "remote_unlock", "exit")]


# -- misconfiguration is said, not silent ---------------------------------------------------

def test_a_door_pointed_at_the_wrong_broker_port_says_why_and_that_it_retries(tmp_path, key_file, caplog):
    from broker import free_port

    from appliance.config import from_dict
    from appliance.mqtt.link import MqttLink

    port = free_port()  # nothing listens there
    config = from_dict({"mqtt": {"enabled": True, "host": "127.0.0.1", "port": port, "tls": False}})
    link = MqttLink(config.mqtt, "facegate-test-wrong-port")
    with caplog.at_level("WARNING", logger="appliance.mqtt.link"):
        link.start()
        try:
            assert wait_until(lambda: any("cannot connect" in r.getMessage() for r in caplog.records), timeout=10)
        finally:
            link.stop()
    line = next(r.getMessage() for r in caplog.records if "cannot connect" in r.getMessage())
    assert "127.0.0.1:%d" % port in line and "refused" in line.lower() and "retrying" in line


def test_removing_a_name_a_door_does_not_hold_is_not_found(tmp_path, broker, key_file):
    door = Door(door_settings(tmp_path, broker, key_file))
    replies = Listener(broker.port, "facegate/%s/door1/reply/#" % SITE)
    key = key_file.admin
    try:
        body = {"person_id": "p1", "name": "Tiger Woods", "model_id": "mobilefacenet_128d", "embeddings": [EMBEDDING]}
        publish(broker, TOPIC + "enroll", sign(key, "enroll", "door1", body, request_id="e1"))
        publish(broker, TOPIC + "remove", sign(key, "remove", "door1", {"person_id": "Tigr Woods"}, request_id="r1"))
        publish(broker, TOPIC + "remove", sign(key, "remove", "door1", {"person_id": "Tiger Woods"}, request_id="r2"))
        assert replies.wait(lambda m: len(m) >= 3)
        by_id = {reply_body(p)["request_id"]: reply_body(p) for _, p, _ in replies.messages}
        assert by_id["r1"]["ok"] is False and by_id["r1"]["code"] == "not_found"
        assert "did you mean 'Tiger Woods'" in by_id["r1"]["message"]
        assert by_id["r2"]["ok"] and by_id["r2"]["result"]["removed"] is True  # by name, as the admin sends it
        assert door.people() == []
    finally:
        replies.close()
        door.close()


def test_output_into_a_closed_pipe_is_no_traceback(tmp_path):
    from appliance.audit import Event

    audit = AuditStore(tmp_path / "a.db")
    for number in range(3000):  # far more than a pipe's buffer holds
        audit.record(Event("deny", frames=[number], detail={"reason": "unknown: distance 0.9 above threshold"}))
    audit.close()
    import subprocess
    import sys

    result = subprocess.run("%s -m appliance audit --audit %s --limit 3000 | head -n 1"
                            % (sys.executable, tmp_path / "a.db"), shell=True, capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.count("\n") == 1 and "deny" in result.stdout
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr


def test_the_audit_trail_filters_by_time_person_and_kind_and_exports_csv(tmp_path):
    import csv
    import datetime
    import io

    from appliance.audit import Event

    audit = AuditStore(tmp_path / "a.db")
    audit.record(Event("grant", person_id="p1", person_name="Ada", distance=0.2, margin=0.3))
    audit.record(Event("deny", distance=0.9, margin=0.01, detail={"reason": "unknown"}))
    audit.record(Event("grant", person_id="p2", person_name="Bob", distance=0.25, margin=0.2))
    audit.close()
    common = ["audit", "--audit", tmp_path / "a.db"]
    ada = run_cli(*common, "--person", "Ada", "--csv", env={"TZ": "Asia/Shanghai"})  # a person reads local time
    rows = list(csv.DictReader(io.StringIO(ada.stdout)))
    assert ada.returncode == 0 and [r["person_name"] for r in rows] == ["Ada"]
    local = datetime.datetime.fromisoformat(rows[0]["time_local"])
    stored = datetime.datetime.fromisoformat(rows[0]["time_utc"])
    assert local.utcoffset() == datetime.timedelta(hours=8) and stored.utcoffset() == datetime.timedelta(0)
    assert abs((local - stored).total_seconds()) < 1  # the same moment
    grants = run_cli(*common, "--kind", "grant").stdout.splitlines()
    assert len(grants) == 2 and all(" grant " in line for line in grants)
    tomorrow = (datetime.date.today() + datetime.timedelta(days=1)).isoformat()
    assert run_cli(*common, "--since", tomorrow).stdout == ""
    assert len(run_cli(*common, "--until", tomorrow).stdout.splitlines()) == 3
    bad = run_cli(*common, "--since", "yesterday")
    assert bad.returncode == 2 and "not a date or time" in bad.stderr


def test_audit_for_a_person_it_never_saw_says_so_with_close_names(tmp_path):
    from appliance.audit import Event

    audit = AuditStore(tmp_path / "a.db")
    audit.record(Event("grant", person_id="p1", person_name="Ada Lovelace", distance=0.2, margin=0.3))
    audit.close()
    typo = run_cli("audit", "--audit", tmp_path / "a.db", "--person", "Ada Lovelac")
    assert typo.returncode == 2 and "no events of 'Ada Lovelac'" in typo.stderr and "Ada Lovelace" in typo.stderr
    found = run_cli("audit", "--audit", tmp_path / "a.db", "--person", "Ada Lovelace")
    assert found.returncode == 0 and "Ada Lovelace" in found.stdout


def test_a_relay_test_says_what_it_cannot_know(tmp_path):
    emulator = RelayEmulator(link=str(tmp_path / "relay"))
    try:
        result = run_cli("relay", "test", "--seconds", "0.2", "--port", emulator.path)
        assert result.returncode == 0 and "unlocked" not in result.stdout
        assert "sent the unlock command" in result.stdout and "listen for the strike" in result.stdout
        no_port = run_cli("relay", "test", "--seconds", "0.2")
        assert no_port.returncode == 2 and "relay.port is empty" in no_port.stderr and "--relay-port" in no_port.stderr
    finally:
        emulator.close()
