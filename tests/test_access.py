"""Schedules and access groups: who may use which door when, in the site's time zone."""

import contextlib
import datetime
import shutil

import numpy as np
import pytest

from conftest import run_cli
from test_mqtt import key_file  # noqa: F401  (the site's keys)
from test_service import gallery_path  # noqa: F401  (the seed gallery, enrolled once)

from appliance.door.access_rules import AccessRules, Group, local_now, schedule_from_text, zone
from appliance.errors import ConfigError, GalleryError
from appliance.gallery.store import GalleryStore, Template

UTC = datetime.timezone.utc


def rules():
    office = schedule_from_text("office", "mon-fri 08:00-18:00", "2026-12-25")
    return AccessRules({"office": office}, {"staff": Group("staff", frozenset({"front"}), "office"),
                                            "guards": Group("guards", frozenset({"*"}), "always")})


def test_a_group_admits_at_its_doors_in_its_hours_and_says_why_not_otherwise():
    berlin = zone("Europe/Berlin")
    monday, saturday = datetime.datetime(2026, 12, 7, 10, 0, tzinfo=berlin), datetime.datetime(2026, 12, 5, 10, 0,
                                                                                                tzinfo=berlin)
    christmas = datetime.datetime(2026, 12, 25, 10, 0, tzinfo=berlin)  # a Friday, but a holiday
    access = rules()
    assert access.refusal((), "front", saturday) is None  # in no group: every door, any time
    assert access.refusal(("staff",), "front", monday) is None
    assert access.refusal(("staff",), "front", saturday) == "outside schedule 'office'"
    assert access.refusal(("staff",), "front", christmas) == "outside schedule 'office'"
    assert access.refusal(("staff",), "back", monday) == "not in an access group for door 'back' (groups: staff)"
    assert access.refusal(("staff", "guards"), "back", saturday) is None  # any one group is enough
    evening = datetime.datetime(2026, 12, 7, 18, 0, tzinfo=berlin)
    assert access.refusal(("staff",), "front", evening) == "outside schedule 'office'"  # a period ends before its end


def test_the_sites_time_zone_decides_not_the_machines():
    instant = datetime.datetime(2026, 12, 7, 2, 0, tzinfo=UTC)  # a Monday: 02:00 in London, 10:00 in Shanghai
    access = rules()
    assert access.refusal(("staff",), "front", instant.astimezone(zone("Asia/Shanghai"))) is None
    assert access.refusal(("staff",), "front", instant.astimezone(zone("Europe/London"))) is not None
    assert local_now("Asia/Shanghai").utcoffset() == datetime.timedelta(hours=8)
    with pytest.raises(ConfigError, match="not a time zone"):
        zone("Mars/Olympus")
    for bad, message in (("mon-fry 08:00-09:00", "bad days"), ("", "no periods")):
        with pytest.raises(ConfigError, match=message):
            schedule_from_text("x", bad)
    with pytest.raises(ConfigError, match="not a date"):
        schedule_from_text("x", "daily 08:00-09:00", "christmas")


def test_the_store_keeps_rules_whole_and_refuses_dangling_names(tmp_path):
    store = GalleryStore(tmp_path / "g.db", model_id="m")
    person = store.enrol("Ada", [Template(np.eye(1, 128, dtype=np.float32)[0])], "m")
    store.set_schedule("office", "mon-fri 08:00-18:00")
    with pytest.raises(GalleryError, match="no schedule 'ofice'.*did you mean 'office'"):
        store.set_group("staff", "front", "ofice")
    store.set_group("staff", "front,back", "office")
    with pytest.raises(GalleryError, match="no access group 'staf'"):
        store.set_person_groups(person.id, ["staf"])
    assert store.find("Ada").groups == ()  # refused whole: nothing half-set
    store.set_person_groups("Ada", ["staff"])
    assert store.find("Ada").groups == ("staff",)
    with pytest.raises(GalleryError, match="used by access group staff"):
        store.remove_schedule("office")
    store.remove_group("staff")
    assert store.find("Ada").groups == ()  # its members leave it
    store.close()


def test_a_door_denies_an_enrolled_person_outside_their_schedule_with_the_reason(tmp_path, gallery_path, pipeline):
    from test_service import PROBES, door_config, make_clip

    from appliance.audit import AuditStore
    from appliance.service import build_service

    gallery = tmp_path / "gallery.db"
    shutil.copy(gallery_path, gallery)
    today = datetime.date.today().isoformat()
    for command in (["schedules", "set", "office", "daily 00:00-24:00", "--holidays", today],
                    ["groups", "set", "staff", "--doors", "door", "--schedule", "office"],
                    ["people", "groups", "obama", "staff"]):
        result = run_cli(*command, "--gallery", gallery)
        assert result.returncode == 0, result.stdout + result.stderr
    listed = run_cli("groups", "list", "--gallery", gallery).stdout
    assert "staff" in listed and "obama" in listed
    clip = make_clip(tmp_path / "obama.mp4", [PROBES / "obama.jpg"], seconds=2.0)
    config = door_config(tmp_path, gallery, clip, "")
    service = build_service(config, pipeline=pipeline, use_relay=False)
    service.run()
    events = AuditStore(tmp_path / "audit.db").events()
    denials = [e for e in events if e.kind == "deny"]
    assert [e.kind for e in events if e.kind in ("grant", "deny")] == ["deny"]
    assert denials[0].detail["reason"] == "obama: outside schedule 'office'"
    # back in no group: every door, any time
    assert run_cli("people", "groups", "obama", "--gallery", gallery).returncode == 0
    service = build_service(door_config(tmp_path, gallery, clip, "", audit={"path": str(tmp_path / "b.db")}),
                            pipeline=pipeline, use_relay=False)
    service.run()
    assert [e.kind for e in AuditStore(tmp_path / "b.db").events() if e.kind in ("grant", "deny")] == ["grant"]


@contextlib.contextmanager
def site_and_door(tmp_path, key_file, names):  # noqa: F811
    """mosquitto, a site gallery holding `names` and door1 holding them too (as after an earlier
    sync); yields the door and the admin command's common options."""
    from broker import Broker
    from test_mqtt import Door, door_settings

    from appliance.admin.site import SiteGallery

    folder = tmp_path / "broker"
    folder.mkdir()
    broker = Broker(folder)
    site_path = tmp_path / "site.db"
    site = SiteGallery(str(site_path), "mobilefacenet_128d")
    templates = [[Template(np.eye(1, 128, k=i, dtype=np.float32)[0])] for i in range(len(names))]
    people = [site.store.enrol(name, vectors, "mobilefacenet_128d") for name, vectors in zip(names, templates)]
    site.close()
    door = Door(door_settings(tmp_path, broker, key_file))
    for person, vectors in zip(people, templates):
        door.agent.store.replace(person.id, person.name, vectors, "mobilefacenet_128d")
    config = tmp_path / "admin.toml"
    config.write_text(key_file.admin_toml(broker))
    try:
        yield door, ["--config", config, "--site-gallery", site_path]
    finally:
        door.close()
        broker.stop()


def test_the_administrator_sets_groups_site_wide_and_doors_apply_them(tmp_path, key_file):  # noqa: F811
    with site_and_door(tmp_path, key_file, ["Ada"]) as (door, common):
        for command in (["schedule-set", "office", "mon-fri 08:00-18:00"],
                        ["group-set", "staff", "--doors", "door1", "--schedule", "office"],
                        ["person-groups", "Ada", "staff"]):
            result = run_cli("admin", *command, *common)
            assert result.returncode == 0 and "door1: ok" in result.stdout, result.stdout + result.stderr
        assert door.agent.store.find("Ada").groups == ("staff",)
        assert door.agent.store.site_version == 3
        typo = run_cli("admin", "person-groups", "Ada", "staf", *common)
        assert typo.returncode == 2 and "did you mean 'staff'" in typo.stderr  # refused before any door sees it
        changes = [e.detail for e in door.audit.events() if e.kind == "change"]
        assert [c["action"] for c in changes] == ["schedule_set", "group_set", "person_groups"]
        assert all(c["origin"]["via"] == "mqtt" for c in changes)

