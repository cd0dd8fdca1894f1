"""MQTT against a real mosquitto on loopback: signed commands, sync, outbox, last will."""

import base64
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib

import paho.mqtt.client as mqtt
import pytest

from broker import Broker
from conftest import MODELS, ROOT, SEED

from appliance.admin.client import AdminClient
from appliance.admin.site import SiteGallery
from appliance.audit import AuditStore, Event
from appliance.config import from_dict
from appliance.door.controller import DoorController
from appliance.door.relay import NoRelay
from appliance.errors import CommandError, ConfigError
from appliance.gallery.enrol import Enroller
from appliance.mqtt.device import DeviceAgent
from appliance.mqtt.payload import decode_photo, encode_photo
from appliance.vision.images import probe as image_size
from appliance.keys import PrivateKey, Trusted, TrustedKeys, load_private, write_private
from appliance.mqtt.signing import envelope, open_sealed, seal, sign

SITE = "testsite"


@pytest.fixture
def broker(tmp_path):
    folder = tmp_path / "broker"
    folder.mkdir()
    running = Broker(folder)
    yield running
    running.stop()


class SiteKeys:
    """A site's keys as an installer makes them: the administrator's pair (its public half is
    every door's trusted keys file), each door's own pair, and the administrator's door registry."""

    def __init__(self, folder) -> None:
        self.folder = folder
        self.admin_file = folder / "admin.key"
        self.admin = PrivateKey.generate()
        write_private(str(self.admin_file), self.admin)
        self.admin_public = folder / "admin.key.pub"
        self.admin_public.write_text("admin admin %s\n" % self.admin.public.hex)
        self.registry = folder / "doors.keys"
        self.doors = {}

    def door(self, device: str):
        """The door's key file, made (and trusted by the administrator) on first use."""
        path = self.folder / ("%s.key" % device)
        if device not in self.doors:
            self.doors[device] = PrivateKey.generate()
            write_private(str(path), self.doors[device])
            registry = TrustedKeys.load(str(self.registry), missing_ok=True)
            registry.with_entry(Trusted("door", device, self.doors[device].public)).save()
        return path

    def load_door(self, device: str) -> PrivateKey:
        return load_private(str(self.door(device)))

    def admin_toml(self, broker) -> str:
        """The administrator's config: its own key and the doors' keys it trusts."""
        return ('[mqtt]\nhost = "127.0.0.1"\nport = %d\ntls = false\nsite = "%s"\nsigning_key_file = "%s"\n'
                'trusted_keys_file = "%s"\n' % (broker.port, SITE, self.admin_file, self.registry))

    def trusted_by_admin(self) -> TrustedKeys:
        return TrustedKeys.load(str(self.registry), missing_ok=True)


@pytest.fixture
def key_file(tmp_path):
    return SiteKeys(tmp_path)


def reply_body(payload: bytes):
    """What a door's signed reply says (its signature is checked by the admin tests)."""
    message = json.loads(payload)
    return message["signed"]["body"] if isinstance(message, dict) and "signed" in message else message


def door_settings(tmp_path, broker, key_file, device="door1", **extra):
    folder = tmp_path / device
    folder.mkdir(exist_ok=True)
    raw = {"models": {"dir": str(MODELS)},
           "gallery": {"path": str(folder / "gallery.db")}, "audit": {"path": str(folder / "audit.db")},
           "mqtt": {"enabled": True, "host": "127.0.0.1", "port": broker.port, "tls": False, "site": SITE,
                    "device": device, "signing_key_file": str(key_file.door(device)),
                    "trusted_keys_file": str(key_file.admin_public),
                    "state_path": str(folder / "mqtt-state.db"), "keepalive": 5}}
    for section, values in extra.items():
        raw.setdefault(section, {}).update(values)
    return raw


class Door:
    """A door's MQTT side in this process: controller on a dry-run relay, audit, gallery, agent."""

    def __init__(self, raw, pipeline=None) -> None:
        self.config = from_dict(raw)
        self.audit = AuditStore(self.config.audit.path)
        self.controller = DoorController(self.config.door, NoRelay(), self.audit)
        model_id = pipeline.embedder.model_id if pipeline else "mobilefacenet_128d"
        self.agent = DeviceAgent(self.config, self.controller, self.audit, self.config.gallery.path,
                                 model_id, pipeline)
        self.agent.start()
        assert self.agent.link.wait_connected(10)

    def people(self):
        return sorted((p.id, p.name, p.enabled) for p in self.agent.store.people())

    def close(self):
        self.agent.stop()
        self.controller.shutdown()
        self.audit.close()


class Listener:
    """The test's own paho client: collects messages under a topic filter."""

    def __init__(self, port, topic, client_id=None, persistent=False) -> None:
        self.messages = []
        self.condition = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or "",
                                  protocol=mqtt.MQTTv5)
        self.client.on_message = self._message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        subscribed = threading.Event()
        self.client.on_subscribe = lambda c, u, mid, codes, p: subscribed.set()
        properties = None
        if persistent:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, 5, clean_start=not persistent, properties=properties)
        self.client.loop_start()
        # a message published before the broker acknowledged the subscription would be missed
        assert subscribed.wait(10), "the test's listener could not subscribe to %s" % topic

    def _message(self, client, userdata, message) -> None:
        with self.condition:
            self.messages.append((message.topic, message.payload, message.retain))
            self.condition.notify_all()

    def wait(self, predicate, timeout=10.0):
        deadline = time.monotonic() + timeout
        with self.condition:
            while not predicate(self.messages):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.condition.wait(remaining)
            return True

    def payloads(self, suffix=""):
        with self.condition:
            return [reply_body(p) for t, p, _ in self.messages if t.endswith(suffix) and p]

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def admin_for(broker, key_file):
    config = from_dict({"mqtt": {"host": "127.0.0.1", "port": broker.port, "tls": False, "site": SITE}})
    client = AdminClient(config.mqtt, key_file.admin, key_file.trusted_by_admin())
    client.connect()
    return client


# -- signing and payload checks without a broker ------------------------------------------

def test_signature_covers_every_byte_and_names_its_key(key_file):
    trusted = {key_file.admin.key_id: Trusted("admin", "admin", key_file.admin.public)}
    payload = sign(key_file.admin, "remove", "door1", {"person_id": "p1"})
    opened = open_sealed(payload, trusted.get)
    assert json.loads(opened.signed)["body"] == {"person_id": "p1"} and opened.signer.name == "admin"
    start = payload.index(b'"signed":') + len(b'"signed":')
    for offset in range(start, len(payload) - 1, 7):  # any changed byte of the envelope
        tampered = payload[:offset] + bytes([payload[offset] ^ 1]) + payload[offset + 1:]
        with pytest.raises(CommandError) as refused:
            open_sealed(tampered, trusted.get)
        assert refused.value.code == "bad_signature"
    # a door's key is not the administrator's: signed by a key this door does not trust
    with pytest.raises(CommandError) as refused:
        open_sealed(sign(key_file.load_door("door9"), "remove", "door1", {}), trusted.get)
    assert refused.value.code == "unknown_key"
    for unsigned in (b'{"request_id":"x","verb":"remove"}', b"", b"\xff" * 300, payload + b" "):
        with pytest.raises(CommandError) as refused:
            open_sealed(unsigned, trusted.get)
        assert refused.value.code == "unsigned"


def test_key_file_with_loose_permissions_is_refused(key_file):
    os.chmod(key_file.admin_file, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_private(str(key_file.admin_file))


def test_an_old_shared_site_key_is_refused_with_the_way_forward(tmp_path):
    old = tmp_path / "site.key"
    old.write_text(os.urandom(32).hex() + "\n")
    old.chmod(0o600)
    with pytest.raises(ConfigError, match="old shared site key.*facegate keys init"):
        load_private(str(old))


def png_header(width, height):
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))


def test_photos_are_checked_from_their_headers():
    assert image_size(png_header(640, 480))[1:] == (640, 480)
    jpeg = (SEED / "probes" / "obama.jpg").read_bytes()
    assert image_size(jpeg)[0] == "jpeg"
    bomb = base64.b64encode(png_header(60000, 60000) + b"\0" * 100).decode()
    with pytest.raises(CommandError, match="sides must be"):
        decode_photo(bomb, 4096, 1 << 20)
    with pytest.raises(CommandError, match="JPEG or PNG"):
        decode_photo(base64.b64encode(b"GIF89a....").decode(), 4096, 1 << 20)
    with pytest.raises(CommandError, match="JPEG or PNG"):
        decode_photo(base64.b64encode(b"BM" + b"\0" * 40).decode(), 4096, 1 << 20)
    truncated = base64.b64encode(jpeg[:len(jpeg) // 3]).decode()
    with pytest.raises(CommandError):
        decode_photo(truncated, 4096, 1 << 20)


# -- commands against a real broker --------------------------------------------------------

def test_enrolled_over_mqtt_then_recognised_at_the_door(tmp_path, broker, key_file, pipeline):
    from facegate_host.emulator import RelayEmulator
    from appliance.service import build_service

    clip = tmp_path / "visitor.mp4"
    subprocess.run([sys.executable, str(ROOT / "tools" / "make-demo-video"), str(clip),
                    str(SEED / "probes" / "obama.jpg"), "--seconds", "1.5"], check=True)
    emulator = RelayEmulator()
    raw = door_settings(tmp_path, broker, key_file, camera={"source": str(clip), "loop": True},
                        relay={"port": emulator.path})
    service = build_service(from_dict(raw), pipeline=pipeline)
    runner = threading.Thread(target=service.run)
    runner.start()
    admin = admin_for(broker, key_file)
    try:
        assert service.agent.link.wait_connected(10)
        time.sleep(1.0)  # the door sees an unknown face first
        assert not any(e.on for e in emulator.events)
        body = {"person_id": "obama-1", "name": "obama",
                "photos": [encode_photo(SEED / "gallery" / "obama" / "obama_1.jpg")]}
        replies = admin.send("door1", "enroll", body)
        assert replies and replies[0]["ok"], replies
        assert replies[0]["result"]["templates"] == 1
        assert emulator.wait_for(lambda e: e.is_on(), timeout=10)
        # the status carries the decision rule as the door applies it, for the gallery it has now
        status = admin.send("door1", "status", {})[0]["result"]["matching"]
        assert status["people"] == 1 and status["templates"] == 1 and status["source"] == "target"
        assert status["distance_threshold"] == status["from_target"] and not status["looser_than_target"]
    finally:
        service.stop()
        runner.join(timeout=10)
        admin.close()
        emulator.close()
    grants = AuditStore(raw["audit"]["path"]).events(kind="grant")
    assert grants and grants[0].person_id == "obama-1"


def site_enrol(site, pipeline, config, name, photos):
    report = Enroller(config, pipeline, site.store).enrol(name, photos)
    person = report.enrolled[0][0]
    ids, matrix, _ = site.store.matrix()
    body = {"person_id": person.id, "name": name, "model_id": pipeline.embedder.model_id,
            "photos": [encode_photo(p) for p in photos],
            "embeddings": [matrix[i].tolist() for i, pid in enumerate(ids) if pid == person.id]}
    return body, site.record("enroll", body)


def test_a_door_offline_during_changes_converges_to_the_site_gallery(tmp_path, broker, key_file, pipeline):
    site = SiteGallery(str(tmp_path / "site.db"), pipeline.embedder.model_id)
    door = Door(door_settings(tmp_path, broker, key_file), pipeline)
    door.close()  # the door goes offline; its persistent session keeps its subscriptions
    admin = admin_for(broker, key_file)
    try:
        for name in ("obama", "刘德华", "黎明"):
            photos = sorted((SEED / "gallery" / name).iterdir())[:1]
            body, number = site_enrol(site, pipeline, pipeline.config, name, photos)
            admin.send("all", "enroll", dict(body, change=number), expect=[])
        removed = site.store.find("刘德华")
        site.store.remove(removed.id)
        number = site.record("remove", {"person_id": removed.id})
        admin.send("all", "remove", {"person_id": removed.id, "change": number}, expect=[])
        expected = sorted((p.id, p.name, p.enabled) for p in site.store.people())
        assert len(expected) == 2

        door = Door(door_settings(tmp_path, broker, key_file), pipeline)  # back online
        deadline = time.monotonic() + 20
        while door.people() != expected and time.monotonic() < deadline:
            time.sleep(0.1)
        assert door.people() == expected
        assert door.agent.store.site_version == site.version == 4
        door.close()

        # a door installed now, with no session at all, catches up by asking for the changes
        admin.serve(site)
        fresh = Door(door_settings(tmp_path, broker, key_file, device="door2"), pipeline)
        deadline = time.monotonic() + 20
        while fresh.people() != expected and time.monotonic() < deadline:
            time.sleep(0.1)
        assert fresh.people() == expected
        fresh.close()
    finally:
        admin.close()
        site.close()


def publish_raw(broker, topic, payload, retain=False):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()


def test_bad_commands_are_refused_with_a_reply_and_change_nothing(tmp_path, broker, key_file):
    door = Door(door_settings(tmp_path, broker, key_file, mqtt={"max_payload_kb": 64}))
    replies = Listener(broker.port, "facegate/%s/door1/reply/#" % SITE)
    key = key_file.admin
    other_key = PrivateKey.generate()
    topic = "facegate/%s/door1/cmd/" % SITE
    embedding = [1.0] + [0.0] * 127
    enrol = {"person_id": "p1", "name": "P", "model_id": "mobilefacenet_128d", "embeddings": [embedding]}
    good = sign(key, "enroll", "door1", enrol)
    cases = [
        ("unsigned", topic + "enroll", good[good.index(b'"signed":') + 9:-1], False),
        ("unsigned", topic + "enroll", b"{not json", False),
        ("unknown_key", topic + "enroll", sign(other_key, "enroll", "door1", enrol), False),
        ("bad_signature", topic + "enroll", good.replace(b'"name":"P"', b'"name":"Q"'), False),
        ("expired", topic + "enroll", sign(key, "enroll", "door1", enrol, issued=time.time() - 40 * 86400), False),
        ("expired", topic + "unlock", sign(key, "unlock", "door1", {}, issued=time.time() - 30), False),
        ("retained", topic + "enroll", sign(key, "enroll", "door1", enrol), True),
        ("too_large", topic + "enroll", sign(key, "enroll", "door1", dict(enrol, note="x" * 70000)), False),
        ("malformed", topic + "enroll", seal(key, {"request_id": "r", "verb": "enroll"}), False),
        ("malformed", topic + "enroll", seal(key, dict(envelope("enroll", "door1", enrol), issued=float("nan"))),
         False),
        ("wrong_target", topic + "enroll", sign(key, "enroll", "door2", enrol), False),
        ("wrong_topic", topic + "unlock", sign(key, "enroll", "door1", enrol), False),
    ]
    try:
        for number, (code, where, payload, retain) in enumerate(cases, 1):
            publish_raw(broker, where, payload, retain=retain)
            assert replies.wait(lambda m: len(m) >= number), "no reply for %s" % code
            reply = reply_body(replies.messages[-1][1])
            assert reply["ok"] is False and reply["code"] == code, (code, reply)
        assert door.people() == []
        assert door.audit.events() == []

        # replayed: applied once, answered twice; a replayed unlock never opens the door twice
        unlock = sign(key, "unlock", "door1", {})
        publish_raw(broker, topic + "unlock", unlock)
        publish_raw(broker, topic + "unlock", unlock)
        assert replies.wait(lambda m: len(m) >= len(cases) + 2)
        first, second = (reply_body(p) for _, p, _ in replies.messages[-2:])
        assert first["ok"] and "duplicate" not in first
        assert second["ok"] and second["duplicate"] is True
        assert [e.kind for e in door.audit.events()] == ["remote_unlock"]
    finally:
        replies.close()
        door.close()


def test_events_made_while_the_broker_is_down_all_arrive(tmp_path, broker, key_file):
    events = Listener(broker.port, "facegate/%s/door1/events" % SITE, client_id="centre", persistent=True)
    time.sleep(0.5)
    door = Door(door_settings(tmp_path, broker, key_file))
    try:
        broker.stop()
        for number in range(500):
            door.controller.emit(Event("deny", frames=[number]))
        broker.start()
        events.close()
        events = Listener(broker.port, "facegate/%s/door1/events" % SITE, client_id="centre", persistent=True)
        assert events.wait(lambda m: len({json.loads(p)["uid"] for _, p, _ in m}) >= 500, timeout=60)
        received = events.payloads()
        assert sorted({e["sequence"] for e in received}) == list(range(1, 501))
        deadline = time.monotonic() + 10
        while door.audit.unsent_count() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert door.audit.unsent_count() == 0
    finally:
        events.close()
        door.close()


def run_door_process(config_path, events=0):
    process = subprocess.Popen([sys.executable, str(ROOT / "tests" / "mqtt_door.py"), str(config_path),
                                str(events)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "started"
    return process


def test_killed_while_publishing_the_rest_arrive_after_restart(tmp_path, broker, key_file):
    raw = door_settings(tmp_path, broker, key_file)
    config_path = tmp_path / "door.json"
    config_path.write_text(json.dumps(raw))
    events = Listener(broker.port, "facegate/%s/door1/events" % SITE)
    total = 3000
    process = run_door_process(config_path, total)
    try:
        assert events.wait(lambda m: len(m) >= 50, timeout=30)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        after_kill = len({e["uid"] for e in events.payloads()})
        assert after_kill < total, "the kill came too late to test anything"
        process = run_door_process(config_path)
        assert events.wait(lambda m: len({json.loads(p)["uid"] for _, p, _ in m}) >= total, timeout=90)
        assert sorted({e["sequence"] for e in events.payloads()}) == list(range(1, total + 1))
    finally:
        process.terminate()
        process.wait(timeout=20)
        events.close()


def test_the_last_will_marks_a_dead_door_offline(tmp_path, broker, key_file):
    raw = door_settings(tmp_path, broker, key_file)
    config_path = tmp_path / "door.json"
    config_path.write_text(json.dumps(raw))
    statuses = Listener(broker.port, "facegate/%s/door1/status" % SITE)
    process = run_door_process(config_path)
    try:
        assert statuses.wait(lambda m: any(json.loads(p)["state"] == "online" for _, p, _ in m if p))
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert statuses.wait(lambda m: json.loads(m[-1][1])["state"] == "offline", timeout=20)
    finally:
        statuses.close()
    # and a door that stops cleanly says so itself
    process = run_door_process(config_path)
    statuses = Listener(broker.port, "facegate/%s/door1/status" % SITE)
    assert statuses.wait(lambda m: m and json.loads(m[-1][1])["state"] == "online")
    process.terminate()
    assert process.wait(timeout=20) == 0
    assert statuses.wait(lambda m: json.loads(m[-1][1])["state"] == "offline", timeout=10)
    statuses.close()


def test_the_board_config_is_valid_and_uses_tls():
    from appliance.config import load

    config = load(ROOT / "rootfs_overlay" / "etc" / "facegate" / "config.toml")
    assert config.mqtt.enabled and config.mqtt.tls and config.mqtt.ca_file and config.mqtt.signing_key_file


def test_tls_with_client_certificates(tmp_path, key_file):
    from broker import make_certificates

    certs_dir = tmp_path / "certs"
    certs_dir.mkdir()
    certs = make_certificates(certs_dir)
    folder = tmp_path / "tls-broker"
    folder.mkdir()
    tls_broker = Broker(folder, tls=certs)
    try:
        raw = door_settings(tmp_path, tls_broker, key_file,
                            mqtt={"tls": True, "ca_file": certs["ca.crt"], "cert_file": certs["door.crt"],
                                  "key_file": certs["door.key"]})
        door = Door(raw)  # asserts the broker accepted the TLS connection
        assert door.agent.status()["state"] == "online"
        door.close()
        os.chmod(certs["door.key"], 0o644)
        with pytest.raises(ConfigError, match="readable by others"):
            Door(raw)
        os.chmod(certs["door.key"], 0o600)
        raw["mqtt"]["cert_file"] = raw["mqtt"]["key_file"] = ""  # no client certificate: refused
        config = from_dict(raw)
        from appliance.mqtt.link import MqttLink

        link = MqttLink(config.mqtt, "no-certificate")
        link.start()
        assert not link.wait_connected(3)
        link.stop()
    finally:
        tls_broker.stop()


def test_tune_apply_sends_the_threshold_to_a_remote_door(tmp_path, broker, key_file):
    from conftest import run_cli

    applied = []
    door = Door(door_settings(tmp_path, broker, key_file))
    door.agent.set_matching = lambda threshold, margin, force: applied.append((threshold, margin))
    admin_config = tmp_path / "admin.toml"
    admin_config.write_text(key_file.admin_toml(broker))
    try:
        result = run_cli("tune", "apply", "0.42", "--door", "door1", "--config", admin_config)
        assert result.returncode == 0, result.stdout + result.stderr
        assert applied == [(0.42, 0.05)]
        result = run_cli("tune", "apply", "0.42", "--door", "door9", "--config", admin_config, "--timeout", "2")
        # a door no status names is a typo: refused at once, with the doors there are
        assert result.returncode == 2 and "no door 'door9'" in result.stderr and "door1" in result.stderr
    finally:
        door.close()


def test_changes_and_remote_unlocks_are_audited_with_who_asked(tmp_path, broker, key_file):
    door = Door(door_settings(tmp_path, broker, key_file))
    admin = admin_for(broker, key_file)
    admin.operator = "alice"
    try:
        embedding = [1.0] + [0.0] * 127
        body = {"person_id": "p1", "name": "Ada", "model_id": "mobilefacenet_128d", "embeddings": [embedding]}
        assert admin.send("door1", "enroll", body)[0]["ok"]
        assert admin.send("door1", "disable", {"person_id": "p1"})[0]["ok"]
        assert admin.send("door1", "unlock", {"reason": "courier"})[0]["ok"]
        events = door.audit.events()
        changes = [e for e in events if e.kind == "change"]
        assert [(e.detail["action"], e.person_id) for e in changes] == [("enroll", "p1"), ("disable", "p1")]
        unlock = next(e for e in events if e.kind == "remote_unlock")
        key_id = key_file.admin.key_id
        for event in changes + [unlock]:
            origin = event.detail["origin"]
            assert origin["via"] == "mqtt" and origin["operator"] == "alice" and origin["key"] == key_id
            assert origin["signer"] == "admin" and origin["request_id"]
        assert len(key_id) == 16 and key_id not in key_file.admin_public.read_text()  # an id, not the key
    finally:
        admin.close()
        door.close()


def test_a_misspelt_door_is_refused_at_once_with_the_close_names(tmp_path, broker, key_file):
    from conftest import run_cli

    door = Door(door_settings(tmp_path, broker, key_file))
    config = tmp_path / "admin.toml"
    config.write_text(key_file.admin_toml(broker))
    try:
        started = time.monotonic()
        result = run_cli("admin", "ping", "--door", "dor1", "--config", config)
        assert result.returncode == 2 and "no door 'dor1'" in result.stderr and "did you mean door1" in result.stderr
        assert time.monotonic() - started < 8  # not the reply timeout
        assert run_cli("admin", "ping", "--door", "door1", "--config", config).returncode == 0
    finally:
        door.close()
