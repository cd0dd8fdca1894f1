"""The administrator's view of a site: status with last seen and offline since, queued and
applied site changes, sync now, a door's past events, and Home Assistant discovery.

Real mosquitto on loopback, doors' MQTT sides in this process (test_mqtt.Door), the CLI in a
subprocess as an administrator runs it.
"""

import datetime
import json
import os
import re
import signal
import time

from conftest import SEED, run_cli, wait_until
from test_mqtt import SITE, Door, Listener, admin_for, broker, door_settings, key_file, run_door_process  # noqa: F401

from appliance.admin.site import SiteGallery
from appliance.door.states import Door as DoorState
from appliance.audit import Event



def admin_config(tmp_path, broker, key_file):
    path = tmp_path / "admin.toml"
    path.write_text(key_file.admin_toml(broker))
    return path


def status_json(config, *extra, code=0):
    """`admin status --json`: exit 0 only when every door is online and answered."""
    result = run_cli("admin", "status", "--json", "--config", config, *extra)
    assert result.returncode == code, result.stdout + result.stderr
    return {door["door"]: door for door in json.loads(result.stdout)["doors"]}


def utc(stamp):
    return datetime.datetime.fromisoformat(stamp).timestamp()


class Matching:
    """A door's decision rule as its status reports it, changeable as `set_threshold` does."""

    def __init__(self, threshold):
        self.state = {"distance_threshold": threshold, "source": "target"}

    def set(self, threshold, margin):
        self.state = {"distance_threshold": threshold, "source": "override"}


def with_matching(door, threshold):
    matching = Matching(threshold)
    door.agent.matching_state = lambda: matching.state
    door.agent.set_matching = matching.set
    return matching


def test_status_shows_threshold_last_seen_and_offline_since_within_two_seconds(tmp_path, broker, key_file):
    config = admin_config(tmp_path, broker, key_file)
    door1 = Door(door_settings(tmp_path, broker, key_file, "door1"))
    door2 = Door(door_settings(tmp_path, broker, key_file, "door2"))
    matching = with_matching(door1, 0.41)
    with_matching(door2, 0.38)
    statuses = Listener(broker.port, "facegate/%s/+/status" % SITE)
    try:
        doors = status_json(config)
        assert doors["door1"]["state"] == doors["door2"]["state"] == "online"
        assert doors["door1"]["matching"]["distance_threshold"] == 0.41
        assert doors["door2"]["matching"]["distance_threshold"] == 0.38
        for door in doors.values():
            assert abs(utc(door["last_seen"]) - time.time()) < 5 and door["online_since"]

        # a change on the door reaches its retained status within 2 s, without anyone asking
        matching.set(0.30, 0.05)
        changed = time.monotonic()
        assert statuses.wait(lambda m: any(json.loads(p).get("matching", {}) and
                                           json.loads(p)["matching"]["distance_threshold"] == 0.30
                                           for t, p, _ in m if t.endswith("door1/status")), timeout=2)
        assert time.monotonic() - changed < 2

        door2.close()
        stopped = time.time()
        doors = status_json(config, code=1)
        assert doors["door2"]["state"] == "offline" and doors["door2"]["offline_reason"] == "stopped"
        assert abs(utc(doors["door2"]["offline_since"]) - stopped) < 2
        assert abs(utc(doors["door2"]["last_seen"]) - stopped) < 62  # its last status, kept past the will
        result = run_cli("admin", "status", "--config", config)
        text = result.stdout
        assert result.returncode == 1  # README: 1 when a door is offline or did not answer
        assert re.search(r"door2: OFFLINE since .* last seen", text), text
        assert re.search(r"door1: online since .*\n  door closed, access idle; threshold 0\.300 \(set by hand\)",
                         text), text
    finally:
        statuses.close()
        door1.close()


def test_a_door_that_dies_is_offline_since_its_will_arrived(tmp_path, broker, key_file):
    raw = door_settings(tmp_path, broker, key_file, "door3")
    config_path = tmp_path / "door3.json"
    config_path.write_text(json.dumps(raw))
    process = run_door_process(config_path)
    admin = admin_for(broker, key_file)
    try:
        assert admin.wait_for_status(lambda s: s.get("door3", {}).get("state") == "online", 10)
        os.kill(process.pid, signal.SIGKILL)
        killed = time.time()
        process.wait()
        # the broker notices after 1.5 keep-alives (5 s here) and publishes the last will
        assert admin.wait_for_status(lambda s: s["door3"].get("state") == "offline", 15)
        since = utc(admin.offline_since("door3"))
        assert killed < since + 1 < killed + 12
        assert utc(admin.seen["door3"]) <= killed + 1
        # an administrator who starts later, after the will was stored, still bounds it from both sides
        later = run_cli("admin", "status", "--config", admin_config(tmp_path, broker, key_file))
        found = re.search(r"door3: OFFLINE since between (\S+) and (\S+) \(lost", later.stdout)
        assert found and later.returncode == 1, later.stdout
        lost_before = utc(datetime.datetime.fromisoformat(found.group(2)).isoformat())
        assert killed <= lost_before <= killed + raw["mqtt"].get("status_seconds", 60) + 1.5 * 5 + 2
    finally:
        admin.close()


def test_site_wide_enrolment_with_a_door_offline_is_queued_then_applied(tmp_path, broker, key_file, pipeline):
    config = admin_config(tmp_path, broker, key_file)
    site = tmp_path / "site.db"
    door1 = Door(door_settings(tmp_path, broker, key_file, "door1"), pipeline)
    door2 = Door(door_settings(tmp_path, broker, key_file, "door2"), pipeline)
    door2.close()  # offline; its broker session keeps its subscriptions
    photo = sorted((SEED / "gallery" / "obama").iterdir())[0]
    try:
        result = run_cli("admin", "enroll", "obama", photo, "--card", "7:12345", "--config", config,
                         "--site-gallery", site)  # the person and their card for a panel, in one change
        assert result.returncode == 0, result.stdout + result.stderr
        assert "site change 1: enrolled obama" in result.stdout
        assert re.search(r"door1: ok", result.stdout), result.stdout
        assert re.search(r"door2: offline since .*, queued: it applies site change 1 when it reconnects",
                         result.stdout), result.stdout
        doors = status_json(config, "--site-gallery", site, code=1)  # a door is offline
        assert doors["door1"]["site_changes_queued"] == 0 and doors["door2"]["state"] == "offline"

        door2 = Door(door_settings(tmp_path, broker, key_file, "door2"), pipeline)  # back online
        assert wait_until(lambda: door2.agent.store.site_version == 1, 20)
        doors = status_json(config, "--site-gallery", site)
        assert doors["door2"]["state"] == "online" and doors["door2"]["site_changes_queued"] == 0
        assert [p[1] for p in door2.people()] == ["obama"]
        assert door2.agent.store.find("obama").card == (7, 12345) == door1.agent.store.find("obama").card
        text = run_cli("admin", "status", "--config", config, "--site-gallery", site).stdout
        assert re.search(r"door2: online.*\n.*\n  gallery: site change 1 of 1, up to date", text), text
    finally:
        door1.close()
        door2.close()


def test_sync_now_sends_a_door_the_changes_it_lacks(tmp_path, broker, key_file):
    config = admin_config(tmp_path, broker, key_file)
    site_path = tmp_path / "site.db"
    site = SiteGallery(str(site_path))
    embedding = [1.0] + [0.0] * 127
    for number, name in enumerate(("Ada", "Grace", "Edsger"), 1):
        site.record("enroll", {"person_id": "p%d" % number, "name": name, "model_id": "mobilefacenet_128d",
                               "embeddings": [embedding]})
    site.record("disable", {"person_id": "p2"})
    site.close()
    door = Door(door_settings(tmp_path, broker, key_file, "door1"))
    try:
        assert door.agent.store.site_version == 0
        result = run_cli("admin", "sync", "--config", config, "--site-gallery", site_path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "door1: applied site changes 1-4; now at 4 of 4" in result.stdout
        assert door.people() == [("p1", "Ada", True), ("p2", "Grace", False), ("p3", "Edsger", True)]
        result = run_cli("admin", "sync", "--config", config, "--site-gallery", site_path)
        assert "door1: up to date at site change 4" in result.stdout
        result = run_cli("admin", "sync", "--config", config, "--site-gallery", tmp_path / "typo.db")
        assert result.returncode == 2 and "no site gallery at" in result.stderr
    finally:
        door.close()


def test_history_fetches_a_doors_past_events_and_snapshots(tmp_path, broker, key_file):
    config = admin_config(tmp_path, broker, key_file)
    door = Door(door_settings(tmp_path, broker, key_file, "door1"))
    jpeg = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4 + b"\xff\xd9"
    door.audit.record(Event("grant", person_id="p1", person_name="Ada", distance=0.21, margin=0.3,
                            snapshot=jpeg))
    door.audit.record(Event("deny", distance=0.9, detail={"reason": "stranger"}))
    door.audit.record(Event("grant", person_id="p2", person_name="Grace", distance=0.25, margin=0.2))
    try:
        result = run_cli("admin", "history", "--door", "door1", "--kind", "grant", "--snapshots",
                         tmp_path / "snaps", "--config", config)
        assert result.returncode == 0, result.stdout + result.stderr
        lines = [line for line in result.stdout.splitlines() if "grant" in line]
        assert len(lines) == 2 and "Ada" in lines[0] and "Grace" in lines[1] and "deny" not in result.stdout
        saved = list((tmp_path / "snaps").iterdir())
        assert [p.name for p in saved] == ["door1-000001.jpg"] and saved[0].read_bytes() == jpeg
        result = run_cli("admin", "history", "--door", "door1", "--limit", "1", "--json", "--config", config)
        assert [json.loads(line)["person_name"] for line in result.stdout.splitlines()] == ["Grace"]
        result = run_cli("admin", "history", "--door", "door1", "--kind", "grnt", "--config", config)
        assert result.returncode == 2 and "did you mean grant" in result.stderr
    finally:
        door.close()


# -- Home Assistant --------------------------------------------------------------------------

# what Home Assistant's MQTT discovery requires of each component, beyond a unique id and device
REQUIRED = {"sensor": ("state_topic",), "binary_sensor": ("state_topic", "device_class"),
            "event": ("state_topic", "event_types"), "image": ("image_topic", "content_type")}


def test_home_assistant_discovery_describes_the_door_and_follows_it(tmp_path, broker, key_file):
    discovery = Listener(broker.port, "homeassistant/#")
    door = Door(door_settings(tmp_path, broker, key_file, "front door", mqtt={"home_assistant": True}))
    statuses = Listener(broker.port, "facegate/%s/+/status" % SITE)
    decisions = Listener(broker.port, "facegate/%s/+/decision" % SITE)
    try:
        assert discovery.wait(lambda m: len(m) >= 11)
        assert statuses.wait(lambda m: m)
        status = statuses.payloads()[-1]
        status_topic = "facegate/%s/front door/status" % SITE
        configs = {}
        removed = [t for t, p, _ in discovery.messages if not p]
        assert removed == ["homeassistant/image/facegate_testsite_front_door/snapshot/config"]  # opt-in: a face
        for topic, payload, retained in discovery.messages:
            if not payload:
                continue
            prefix, component, node, object_id, last = topic.split("/")
            assert (prefix, last) == ("homeassistant", "config") and component in REQUIRED
            assert re.fullmatch(r"[A-Za-z0-9_-]+", node) and re.fullmatch(r"[A-Za-z0-9_-]+", object_id)
            config = json.loads(payload)
            for field in REQUIRED[component] + ("unique_id", "name", "device", "availability_topic"):
                assert config.get(field), (topic, field)
            assert config["device"]["identifiers"] == [node]
            assert config["availability_topic"] == status_topic
            assert config["availability_template"] == "{{ value_json.state }}"
            assert "command_topic" not in config  # nothing in Home Assistant can open the door
            for name in re.findall(r"value_json\.(\w+)", config.get("value_template", "")):
                assert name in status, (topic, name)  # every field a template reads is in the status
            configs[object_id] = config
        assert set(configs) == {"lock", "door", "door_state", "access", "last_person", "last_decision",
                                "last_decision_time", "unsent_events", "fault", "decision"}
        assert len({c["unique_id"] for c in configs.values()}) == 10
        assert configs["decision"]["state_topic"] == "facegate/%s/front door/decision" % SITE
        # the door as Home Assistant's own kinds of entity, not text
        assert (configs["lock"]["device_class"], configs["door"]["device_class"]) == ("lock", "door")
        assert configs["door_state"]["options"] == [d.value for d in DoorState]
        assert configs["access"]["device_class"] == "enum" and configs["access"]["options"] == ["ready", "granted",
                                                                                                "fault"]
        assert "detecting" not in configs["access"]["value_template"]  # transient states make no history
        assert configs["last_decision_time"]["device_class"] == "timestamp"
        assert {configs[k].get("entity_category") for k in ("fault", "unsent_events")} == {"diagnostic"}
        assert configs["access"]["device"]["suggested_area"] == "front door"  # the door's own name

        # the state topics follow the door
        assert door.controller.remote_unlock("courier", {"via": "test"})
        assert decisions.wait(lambda m: m)
        event = decisions.payloads()[0]
        assert event["event_type"] == "remote_unlock" and event["event_type"] in configs["decision"]["event_types"]
        assert statuses.wait(lambda m: any(json.loads(p).get("door") == "unlocked" and
                                           (json.loads(p).get("last_decision") or {}).get("kind") == "remote_unlock"
                                           for _, p, _ in m), timeout=3)
        door.controller.report_fault("camera", "no frames for 5 s")
        assert statuses.wait(lambda m: json.loads(m[-1][1]).get("faults") == {"camera": "no frames for 5 s"},
                             timeout=3)
        door.close()
        door = None
        assert statuses.wait(lambda m: json.loads(m[-1][1])["state"] == "offline")  # unavailable in HA
    finally:
        if door is not None:
            door.close()
        discovery.close()
        statuses.close()
        decisions.close()


def test_status_names_a_hung_door_at_once_and_a_door_that_differs_from_the_site(tmp_path, broker, key_file):
    config = admin_config(tmp_path, broker, key_file)
    site = SiteGallery(str(tmp_path / "site.db"))
    site.record("enroll", {"person_id": "p1", "name": "Ada", "model_id": "mobilefacenet_128d",
                           "embeddings": [[1.0] + [0.0] * 127]})
    site.close()
    door = Door(door_settings(tmp_path, broker, key_file, "door1"))
    raw = door_settings(tmp_path, broker, key_file, "door3", mqtt={"keepalive": 30})
    config_path = tmp_path / "door3.json"
    config_path.write_text(json.dumps(raw))
    hung = run_door_process(config_path)
    try:
        common = ["--config", config, "--site-gallery", tmp_path / "site.db"]
        assert run_cli("admin", "sync", "--door", "door1", *common).returncode == 0
        removed = run_cli("admin", "remove", "Ada", "--door", "door1", *common)
        assert removed.returncode == 0, removed.stdout + removed.stderr
        os.kill(hung.pid, signal.SIGSTOP)  # hung: its connection stays open, it answers nothing
        started = time.monotonic()
        result = run_cli("admin", "status", *common)
        assert time.monotonic() - started < 15  # not the broker's 45 s keep-alive
        assert result.returncode == 1, result.stdout
        assert re.search(r"door3: NOT ANSWERING \(its last status says online since", result.stdout), result.stdout
        assert "up to date" not in result.stdout
        assert "1 change made at this door only" in result.stdout and "differs from the site gallery" in result.stdout
        synced = run_cli("admin", "sync", "--door", "door1", *common)
        assert "differs from the site gallery" in synced.stdout and "up to date" not in synced.stdout
    finally:
        hung.kill()  # SIGKILL works on a stopped process
        hung.wait(timeout=20)
        door.close()


def test_home_assistant_snapshots_are_opt_in_and_the_area_is_the_sites_choice(tmp_path, broker, key_file):
    discovery = Listener(broker.port, "homeassistant/image/#")
    pictures = Listener(broker.port, "facegate/%s/+/snapshot" % SITE)
    door = Door(door_settings(tmp_path, broker, key_file, "door1",
                              mqtt={"home_assistant": True, "home_assistant_snapshots": True,
                                    "home_assistant_area": "Lobby"}))
    try:
        assert discovery.wait(lambda m: any(p for _, p, _ in m))
        image = json.loads(next(p for _, p, _ in discovery.messages if p))
        assert image["image_topic"] == "facegate/%s/door1/snapshot" % SITE and image["content_type"] == "image/jpeg"
        assert image["device"]["suggested_area"] == "Lobby" and "command_topic" not in image
        jpeg = (SEED / "gallery" / "obama" / sorted(os.listdir(SEED / "gallery" / "obama"))[0]).read_bytes()
        door.controller.emit(Event("grant", person_id="p1", person_name="obama", snapshot=jpeg))
        assert pictures.wait(lambda m: m)
        topic, payload, _ = pictures.messages[0]
        assert payload == jpeg  # raw JPEG bytes, as the image entity reads them
    finally:
        pictures.close()
        discovery.close()
        door.close()
