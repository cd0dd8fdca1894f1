"""`facegate admin ...`: the site administrator's commands, over MQTT with signed commands.

Gallery changes without --door go to the site gallery (the source of truth, numbered) and to
every door; with --door they go to that door only. Exit status 1 when a door replied with an
error, 2 for a local error (bad config, broker unreachable, a photo refused here).
"""

import datetime
import json
import signal
import threading
from pathlib import Path

from appliance.cli.common import (add_config_options, audit_line, known_name, load_config, local_time, plural,
                                  shown_time)
from appliance.errors import AdminError, FaceGateError, did_you_mean
from appliance.mqtt.history_verbs import HISTORY_PAGE  # the door's largest `events` reply

EXIT_ERROR_REPLY = 1


def register(commands) -> None:
    parser = commands.add_parser("admin", help="administer the site's doors over MQTT")
    verbs = parser.add_subparsers(dest="admin_command", metavar="ACTION")
    verbs.required = True

    def verb(name, help_text, door=True):
        sub = verbs.add_parser(name, help=help_text)
        add_config_options(sub)
        sub.add_argument("--site-gallery", help="the site gallery file, overriding gallery.path")
        sub.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for replies")
        if door:
            sub.add_argument("--door", help="one door by name (default: every door of the site)")
        return sub

    keygen = verbs.add_parser("keygen", help="write the administrator's signing key (mode 600) and its public "
                                             "half (FILE.pub, for every door's mqtt.trusted_keys_file)")
    keygen.add_argument("file")
    keygen.add_argument("--name", default="admin", help="the name doors know this key by (default: admin)")
    keygen.set_defaults(handler=_keygen)
    sub = verbs.add_parser("add-door", help="trust a door's own key (the line 'facegate keys init' printed)")
    add_config_options(sub)
    sub.add_argument("door")
    sub.add_argument("public_key", help="the door's public key, 64 hex digits")
    sub.set_defaults(handler=_add_door)
    sub = verbs.add_parser("revoke-door", help="stop trusting a door (stolen, replaced): its replies and sync "
                                               "requests are ignored from now on")
    add_config_options(sub)
    sub.add_argument("door")
    sub.set_defaults(handler=_revoke_door)
    sub = verbs.add_parser("broker-rules", help="write the broker's accounts and access rules for the trusted "
                                                "doors (mosquitto: passwd, acl, a TLS listener)")
    add_config_options(sub)
    sub.add_argument("--out", required=True, help="folder for passwd, acl, mosquitto.conf and the password files")
    sub.set_defaults(handler=_broker_rules)
    sub = verbs.add_parser("doors", help="the doors this administrator trusts, and the revoked ones")
    add_config_options(sub)
    sub.set_defaults(handler=_doors)
    sub = verb("enroll", "enrol a person from photos")
    sub.add_argument("name")
    sub.add_argument("photos", nargs="+")
    sub.add_argument("--note", default="")
    sub.add_argument("--force", action="store_true", help="enrol even if the face matches someone")
    sub.add_argument("--card", default="", help="the person's access card for a building's panel, FACILITY:NUMBER: "
                                                "with the person, refused whole when someone holds it")
    sub.set_defaults(handler=_enroll)
    for name, help_text in (("remove", "remove a person"), ("disable", "disable a person"),
                            ("enable", "enable a person")):
        sub = verb(name, help_text)
        sub.add_argument("who", help="name or person id")
        sub.set_defaults(handler=_person_change, verb=name)
    sub = verb("schedule-set", "add or change a named schedule, site-wide")
    sub.add_argument("name")
    sub.add_argument("periods", help="e.g. 'mon-fri 08:00-18:00; sat 09:00-12:00' (each door's door.time_zone)")
    sub.add_argument("--holidays", default="", help="dates it is closed, e.g. 2026-12-25,2026-12-26")
    sub.set_defaults(handler=_access_change, verb="schedule_set")
    sub = verb("schedule-remove", "remove a schedule no group uses")
    sub.add_argument("name")
    sub.set_defaults(handler=_access_change, verb="schedule_remove")
    sub = verb("group-set", "add or change an access group: doors and a schedule")
    sub.add_argument("name")
    sub.add_argument("--doors", required=True, help="door names separated by commas, or '*' for every door")
    sub.add_argument("--schedule", required=True, help="a schedule's name, or 'always'")
    sub.set_defaults(handler=_access_change, verb="group_set")
    sub = verb("group-remove", "remove an access group (its members leave it)")
    sub.add_argument("name")
    sub.set_defaults(handler=_access_change, verb="group_remove")
    sub = verb("person-groups", "put a person in access groups (none: every door, any time)")
    sub.add_argument("who", help="name or person id")
    sub.add_argument("groups", nargs="*")
    sub.set_defaults(handler=_access_change, verb="person_groups")
    sub = verb("person-card", "give a person their access card for a building's panel, or take it (--clear)")
    sub.add_argument("who", help="name or person id")
    sub.add_argument("card", nargs="?", help="FACILITY:NUMBER or NUMBER")
    sub.add_argument("--clear", action="store_true", help="take the person's card away")
    sub.set_defaults(handler=_access_change, verb="person_card")
    verb("list", "list people: the site gallery, or what one --door holds").set_defaults(handler=_list)
    sub = verb("status", "each door: online or offline since when, last seen, threshold, gallery", door=False)
    sub.add_argument("--json", action="store_true")
    sub.set_defaults(handler=_status)
    verb("sync", "send each online door the site changes it lacks, now").set_defaults(handler=_sync)
    sub = verb("history", "a door's past audit events, and their snapshots")
    sub.add_argument("--limit", type=int, default=50, help="the newest N events (at most %d)" % HISTORY_PAGE)
    sub.add_argument("--kind", help="only this kind (grant, deny, change, ...)")
    sub.add_argument("--person", help="only this person (id or name)")
    sub.add_argument("--since", help="from this time (local unless it has an offset)")
    sub.add_argument("--until", help="up to this time")
    sub.add_argument("--snapshots", metavar="DIR", help="also fetch each event's snapshot into DIR")
    sub.add_argument("--json", action="store_true")
    sub.set_defaults(handler=_history)
    sub = verb("events", "follow audit events live")
    sub.add_argument("--count", type=int, default=0, help="stop after this many (default: until Ctrl-C)")
    sub.add_argument("--json", action="store_true")
    sub.set_defaults(handler=_events)
    verb("ping", "ask doors to answer").set_defaults(handler=_simple, verb="ping")
    sub = verb("unlock", "open one door now (the door refuses commands older than a few seconds)")
    sub.set_defaults(handler=_simple, verb="unlock")
    sub = verb("set-threshold", "set the distance threshold at run time")
    sub.add_argument("threshold", type=float)
    sub.add_argument("--margin", type=float)
    sub.add_argument("--force", action="store_true",
                     help="apply a threshold looser than the false-accept target allows (it lets more strangers in)")
    sub.set_defaults(handler=_simple, verb="set_threshold")
    sub = verb("update", "update doors to a bundle served at a URL (each self-tests it, switches, and goes back "
                         "by itself if its door does not run)")
    sub.add_argument("bundle", help="the bundle file, to sign its SHA-256 and size")
    sub.add_argument("--url", required=True, help="where the doors download it (any web server on the site: the "
                                                  "signed hash, not the server, vouches for it)")
    sub.set_defaults(handler=_simple, verb="update")
    verb("serve", "answer doors' requests for site changes they missed", door=False).set_defaults(handler=_serve)


def _keygen(args) -> int:
    from appliance.keys import PrivateKey, valid_name, write_private

    if not valid_name(args.name):
        raise FaceGateError("--name must be 1-64 characters without / + # or control characters")
    key = PrivateKey.generate()
    try:
        write_private(args.file, key)
    except FileExistsError:
        raise FaceGateError("%s exists: a signing key is never overwritten (remove it first if you mean it)"
                            % args.file) from None
    public = Path(args.file + ".pub")
    public.write_text("admin %s %s\n" % (args.name, key.public.hex))
    print("wrote the administrator's signing key to %s (mode 600; it stays on this machine) and its public "
          "half to %s:\ncopy %s to every door as its mqtt.trusted_keys_file" % (args.file, public, public))
    return 0


def _door_registry(args):
    from appliance.keys import TrustedKeys

    config = load_config(args)
    if not config.mqtt.trusted_keys_file:
        raise FaceGateError("mqtt.trusted_keys_file is empty in the administrator's config: name the file that "
                            "keeps the doors' public keys")
    return TrustedKeys.load(config.mqtt.trusted_keys_file, missing_ok=True)


def _add_door(args) -> int:
    from appliance.keys import PublicKey, Trusted, valid_name

    if not valid_name(args.door):
        raise FaceGateError("a door name is 1-64 characters without / + # or control characters")
    registry = _door_registry(args)
    key = PublicKey.from_hex(args.public_key)
    revoked = registry.revoked(key.key_id)
    if revoked is not None:
        raise FaceGateError("door %s's key %s was revoked and is never trusted again, under any name: run 'facegate "
                            "keys init' on the door after removing its key file, and add the new key"
                            % (revoked.name, key.key_id))
    if any(e.key_id == key.key_id and e.name != args.door for e in registry.entries):
        raise FaceGateError("key %s already belongs to another name in %s" % (key.key_id, registry.path))
    registry.with_entry(Trusted("door", args.door, key)).save()
    print("door %s: trusting key %s (%s)" % (args.door, key.key_id, registry.path))
    return 0


def _revoke_door(args) -> int:
    from appliance.keys import Trusted

    registry = _door_registry(args)
    entries = [e for e in registry.named(args.door) if e.role == "door"]
    if not entries:
        known = sorted({e.name for e in registry.of_role("door")})
        raise FaceGateError("no trusted door %r in %s%s" % (args.door, registry.path, did_you_mean(args.door, known)))
    registry.with_entry(Trusted("revoked", args.door, entries[0].key)).save()
    print("door %s: key %s revoked. Its replies and sync requests are ignored from now on. Also: run 'facegate "
          "admin broker-rules' and reload the broker so its account goes, and remove its people's access if the "
          "door was stolen with its gallery" % (args.door, entries[0].key_id))
    return 0


def _broker_rules(args) -> int:
    from appliance.admin import broker_rules

    config = load_config(args)
    doors = sorted(e.name for e in _door_registry(args).of_role("door"))
    if not doors:
        raise FaceGateError("no trusted doors yet: add each with 'facegate admin add-door NAME KEY' first")
    folder = Path(args.out)
    written = broker_rules.write(folder, config.mqtt.site, doors, config.mqtt.home_assistant_prefix)
    print("wrote %s, %s and %s for site %s: %d door account%s, %s (everything under the site), %s (read-only)"
          % (folder / "passwd", folder / "acl", folder / "mosquitto.conf", config.mqtt.site, len(doors),
             "" if len(doors) == 1 else "s", broker_rules.ADMIN_ACCOUNT, broker_rules.HOME_ASSISTANT_ACCOUNT))
    for door in doors:
        account = broker_rules.door_account(door)
        print("  door %s: username %s, password file %s (copy to the door's mqtt.password_file, mode 600)"
              % (door, account, written[account]))
    print("reload the broker to apply (mosquitto: kill -HUP its pid, or systemctl reload mosquitto)")
    return 0


def _doors(args) -> int:
    registry = _door_registry(args)
    for entry in sorted(registry.entries, key=lambda e: e.name):
        if entry.role in ("door", "revoked"):
            print("%-20s %-8s key %s" % (entry.name, "REVOKED" if entry.role == "revoked" else "trusted", entry.key_id))
    if not registry.of_role("door") and not registry.of_role("revoked"):
        print("no doors in %s: add each with 'facegate admin add-door NAME KEY'" % registry.path)
    return 0


class AdminSession:
    """Config, key and a connected AdminClient for one command."""

    def __init__(self, args) -> None:
        from appliance.admin.client import AdminClient
        from appliance.keys import TrustedKeys, load_private

        self.args = args
        self.config = load_config(args)
        self.site_path = args.site_gallery or self.config.gallery.path
        doors = TrustedKeys.load(self.config.mqtt.trusted_keys_file, missing_ok=True)
        self.client = AdminClient(self.config.mqtt, load_private(self.config.mqtt.signing_key_file), doors)
        self.client.connect(timeout=min(args.timeout, 10.0))

    def site_gallery(self, model_id=None):
        from appliance.admin.site import SiteGallery

        return SiteGallery(self.site_path, model_id)

    def send(self, verb, body, door=None) -> int:
        target = door or getattr(self.args, "door", None) or "all"
        self.check_door(target)
        replies = self.client.send(target, verb, body, timeout=self.args.timeout)
        expected = [target] if target != "all" else self.client.online_doors()
        status = _print_replies(replies, expected)
        if target == "all":
            change = body.get("change")
            for device, state in sorted(self.client.statuses.items()):
                if state.get("state") != "online":  # its broker session keeps the command, or it syncs
                    since = self.client.offline_since(device)
                    print("%s: offline%s, queued: it applies %s when it reconnects ('facegate admin status' "
                          "shows when it has)" % (device, " since %s" % shown_time(since) if since else "",
                                                  "site change %d" % change if change else "this"))
        return status

    def send_to_door(self, verb, body):
        """A read from one door: its reply, or AdminError when it gave none."""
        self.check_door(self.args.door)
        replies = self.client.send(self.args.door, verb, body, timeout=self.args.timeout)
        if not replies:
            raise AdminError("%s gave no reply within %.0f s (is it online? 'facegate admin status')"
                             % (self.args.door, self.args.timeout))
        return replies

    def check_door(self, target) -> None:
        known = sorted(self.client.statuses)
        if target != "all" and known and target not in known:
            # every door that ever connected left a retained status: a name without one is a typo
            raise AdminError("no door %r on site %s%s; doors: %s"
                             % (target, self.config.mqtt.site, did_you_mean(target, known), ", ".join(known)))

    def close(self) -> None:
        self.client.close()


def _print_replies(replies, expected) -> int:
    status = 0
    for reply in sorted(replies, key=lambda r: r.get("device") or ""):
        device = reply.get("device", "?")
        if reply.get("ok"):
            result = reply.get("result")
            note = " (already applied)" if reply.get("duplicate") else ""
            print("%s: ok%s %s" % (device, note, json.dumps(result, ensure_ascii=False) if result else ""))
        else:
            status = EXIT_ERROR_REPLY
            print("%s: error %s: %s" % (device, reply.get("code"), reply.get("message")))
    silent = sorted(set(expected) - {r.get("device") for r in replies})
    for device in silent:
        status = EXIT_ERROR_REPLY
        print("%s: no reply in time" % device)
    if not expected and not replies:
        print("no door is online; site changes wait for the doors to sync")
    return status


def _enroll(args) -> int:
    from appliance.gallery.enrol import Enroller
    from appliance.mqtt.payload import encode_photo
    from appliance.vision.pipeline import FacePipeline

    session = AdminSession(args)
    pipeline = FacePipeline.from_config(session.config)
    try:
        photos = [Path(p) for p in args.photos]
        body = {"name": args.name, "note": args.note,
                "photos": [encode_photo(p) for p in photos]}
        if args.card:
            body["card"] = args.card
        if args.door:
            from appliance.gallery.store import person_id_for

            body["person_id"] = person_id_for(args.name)
            return session.send("enroll", body)
        site = session.site_gallery(pipeline.embedder.model_id)
        try:
            with site.store.transaction():  # the person and the site change that records them, or neither
                report = Enroller(session.config, pipeline, site.store).enrol(args.name, photos, force=args.force,
                                                                              note=args.note, card=args.card)
                for photo, reason in report.skipped:
                    print("skipped %s: %s" % (photo, reason))
                if report.already:
                    raise FaceGateError("%s is already in the site gallery: nothing sent (remove them first to "
                                        "enrol them afresh)" % args.name)
                if not report.enrolled:
                    raise FaceGateError("%s was not enrolled in the site gallery (reasons above)" % args.name)
                person = report.enrolled[0][0]
                matrix_ids, matrix, _ = site.store.matrix()
                body.update(person_id=person.id, model_id=pipeline.embedder.model_id,
                            embeddings=[matrix[i].round(6).tolist() for i, pid in enumerate(matrix_ids)
                                        if pid == person.id])
                number = site.record("enroll", body)
            print("site change %d: enrolled %s (%s) from %d photo(s)" % (number, person.name, person.id,
                                                                         report.enrolled[0][1]))
            return session.send("enroll", dict(body, change=number))
        finally:
            site.close()
    finally:
        pipeline.close()
        session.close()


def _person_change(args) -> int:
    from appliance.gallery import commands

    session = AdminSession(args)
    try:
        if args.door:
            return session.send(args.verb, {"person_id": args.who})
        site = session.site_gallery()
        try:
            person = commands.get(site.store, args.who)
            if args.verb == "remove":
                number = site.record(args.verb, {"person_id": person.id}, lambda: commands.remove(site.store, person.id))
            else:
                number = site.record(args.verb, {"person_id": person.id},
                                     lambda: commands.set_enabled(site.store, person.id, args.verb == "enable"))
            print("site change %d: %s %s (%s)" % (number, args.verb, person.name, person.id))
            return session.send(args.verb, {"person_id": person.id, "change": number})
        finally:
            site.close()
    finally:
        session.close()


def _access_change(args) -> int:
    """A schedule, group or membership change: to one --door, or site-wide as a numbered change
    the site gallery applies first (so a mistake is refused here, before any door sees it)."""
    from appliance.cli.access import fields_of
    from appliance.gallery import commands

    if args.verb == "person_groups":
        fields = {"person_id": args.who, "groups": args.groups}
    elif args.verb == "person_card":
        if args.clear == bool(args.card):
            raise FaceGateError("'admin person-card WHO' needs a card (FACILITY:NUMBER) or --clear")
        fields = {"person_id": args.who, "card": args.card}
    else:
        fields = fields_of(args)
    session = AdminSession(args)
    try:
        if args.door:
            return session.send(args.verb, fields)
        site = session.site_gallery()
        try:
            if args.verb in ("person_groups", "person_card"):
                fields["person_id"] = commands.get(site.store, args.who).id
            number = site.record(args.verb, fields, lambda: commands.access_change(site.store, args.verb, fields))
            print("site change %d: %s %s" % (number, args.verb.replace("_", " "),
                                             json.dumps(fields, ensure_ascii=False)))
            return session.send(args.verb, dict(fields, change=number))
        finally:
            site.close()
    finally:
        session.close()


def _list(args) -> int:
    if not args.door:
        from appliance.admin.site import SiteGallery

        config = load_config(args)
        site = SiteGallery(args.site_gallery or config.gallery.path)
        try:
            print("site gallery: change %d" % site.version)
            for person in site.store.people():
                print("  %-20s %-28s %s templates%s" % (person.id, person.name, person.templates,
                                                       "" if person.enabled else "  (disabled)"))
        finally:
            site.close()
        return 0
    session = AdminSession(args)
    try:
        page, status = 1, 0
        while True:
            replies = session.client.send(args.door, "list", {"page": page, "page_size": 200},
                                          timeout=args.timeout)
            if not replies or not replies[0].get("ok"):
                return _print_replies(replies, [args.door])
            result = replies[0]["result"]
            for person in result["people"]:
                print("  %-20s %-28s %s templates%s" % (person["person_id"], person["name"], person["templates"],
                                                       "" if person["enabled"] else "  (disabled)"))
            if page * result["page_size"] >= result["total"]:
                return status
            page += 1
    finally:
        session.close()


def _ago(stamp) -> str:
    try:
        seconds = (datetime.datetime.now(datetime.timezone.utc) - datetime.datetime.fromisoformat(stamp)).total_seconds()
    except (TypeError, ValueError):
        return "never"
    if seconds < 5:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return "%s (%d %s ago)" % (shown_time(stamp), seconds // size, unit)
    return "%s (%d s ago)" % (shown_time(stamp), seconds)


def _site_version(session):
    """The site gallery's change number, when this machine holds the site gallery."""
    if not Path(session.site_path).exists():
        return None
    site = session.site_gallery()
    try:
        return site.version
    finally:
        site.close()


def _lost_before(seen, within):
    """The latest a door whose status stopped can have been lost: its last status plus the time
    its next one was due (UTC ISO), or None."""
    try:
        last = datetime.datetime.fromisoformat(seen)
    except (TypeError, ValueError):
        return None
    return (last + datetime.timedelta(seconds=within)).isoformat(timespec="seconds") if within else None


def door_report(client, device: str, site_version) -> dict:
    """One door as `admin status` shows it (and --json prints it)."""
    status = client.statuses.get(device) or {}
    gallery = status.get("gallery") or {}
    report = {"door": device, "state": status.get("state", "unknown"), "last_seen": client.seen.get(device),
              "online_since": status.get("since") if status.get("state") == "online" else None,
              "offline_since": client.offline_since(device), "offline_reason": status.get("reason"),
              "lost_before": _lost_before(client.seen.get(device), client.seen_within.get(device)),
              "door_state": status.get("door"), "access": status.get("access"), "matching": status.get("matching"),
              "gallery": gallery or None, "unsent_events": status.get("unsent_events"),
              "faults": status.get("faults") or {}, "last_decision": status.get("last_decision"),
              "clock_synchronised": (status.get("clock") or {}).get("synchronised"),
              "version": status.get("version"), "update": status.get("update")}
    if site_version is not None and "site_version" in gallery:
        report["site_changes_queued"] = max(0, site_version - int(gallery["site_version"]))
    return report


def _status(args) -> int:
    session = AdminSession(args)
    try:
        answered = session.client.refresh(timeout=min(args.timeout, 3.0))
        site_version = _site_version(session)
        reports = [door_report(session.client, device, site_version) for device in sorted(session.client.statuses)]
        for report in reports:
            report["answered"] = report["door"] in answered
        if args.json:
            print(json.dumps({"site": session.config.mqtt.site, "site_version": site_version, "doors": reports},
                             ensure_ascii=False, indent=1))
            return 0 if all(r["answered"] for r in reports) else EXIT_ERROR_REPLY
        if not reports:
            print("no door has published a status on site %s" % session.config.mqtt.site)
        for report in reports:
            _print_door(report, report["door"] in answered, site_version)
        silent = [r["door"] for r in reports if r["state"] == "online" and r["door"] not in answered]
        return EXIT_ERROR_REPLY if silent or any(r["state"] != "online" for r in reports) else 0
    finally:
        session.close()


def _print_door(report: dict, answered: bool, site_version) -> None:
    device = report["door"]
    if report["state"] != "online":
        since = report["offline_since"]
        if since:
            when = "since %s" % _ago(since)
        elif report.get("lost_before"):
            # killed or cut off while nobody watched: its last status, and the time the next was due
            when = "since between %s and %s (lost: it stopped sending)" % (shown_time(report["last_seen"]),
                                                                          shown_time(report["lost_before"]))
        else:
            when = "since some time after it was last seen (its connection was lost)"
        print("%s: OFFLINE %s; last seen %s" % (device, when, _ago(report["last_seen"])))
        return
    if not answered:
        # its retained status says online, but it did not answer a signed request: hung, or cut off
        # and the broker has not noticed yet (it does within 1.5 x the door's keepalive)
        print("%s: NOT ANSWERING (its last status says online since %s); last seen %s"
              % (device, shown_time(report["online_since"]), _ago(report["last_seen"])))
        return
    print("%s: online since %s; last seen %s" % (device, shown_time(report["online_since"]),
                                                _ago(report["last_seen"])))
    matching = report["matching"] or {}
    threshold = "no threshold reported"
    if matching.get("distance_threshold") is not None:
        threshold = "threshold %.3f (%s)" % (matching["distance_threshold"], "set by hand" if matching.get("source")
                                            == "override" else "from the false-accept target")
    clock = "; clock NOT synchronised (set up NTP on it)" if report.get("clock_synchronised") is False else ""
    print("  door %s, access %s; %s%s" % (report["door_state"], report["access"], threshold, clock))
    gallery = report["gallery"] or {}
    sync = ""
    if site_version is not None and gallery:
        queued = report.get("site_changes_queued", 0)
        own = gallery.get("door_only_changes") or 0
        sync = ", up to date" if not queued and not own else ", %s queued for it" % plural(queued, "change") \
            if queued else ""
        if own:
            sync += ", and %s made at this door only (admin ... --door, or its console): it differs from the site " \
                    "gallery" % plural(own, "change")
    print("  gallery: site change %s of %s%s; %s, %s" % (
        gallery.get("site_version", "?"), site_version if site_version is not None else "?", sync,
        plural(gallery.get("people", 0), "person", "people"), plural(gallery.get("templates", 0), "template")))
    decision = report["last_decision"]
    print("  last decision: %s; unsent events %s; faults: %s" % (
        "%s %s at %s" % (decision.get("kind"), decision.get("person_name") or "-", shown_time(decision.get("time")))
        if decision else "none", report["unsent_events"],
        "; ".join("%s: %s" % item for item in sorted(report["faults"].items())) or "none"))
    print("  %s" % _version_line(report))


def _version_line(report: dict) -> str:
    update = report.get("update") or {}
    line = "version %s" % (update.get("current") or report.get("version") or "?")
    state = update.get("state")
    if state in ("staging", "downloading", "testing", "trial"):
        line += "; updating to %s (%s)" % (update.get("version") or "?", state)
    elif state in ("failed", "rolled_back"):
        line += "; LAST UPDATE %s: %s" % ("FAILED" if state == "failed" else "ROLLED BACK", update.get("reason") or "?")
    elif state == "confirmed":
        line += "; updated %s" % _ago(update.get("time"))
    return line


def _sync(args) -> int:
    session = AdminSession(args)
    if not Path(session.site_path).exists():
        session.close()
        raise FaceGateError("no site gallery at %s: sync sends the site gallery's changes (give --site-gallery)"
                            % session.site_path)
    site = session.site_gallery()
    status = 0
    try:
        answered = session.client.refresh(timeout=min(args.timeout, 3.0))
        doors = [args.door] if args.door else sorted(session.client.statuses)
        for device in doors:
            session.check_door(device)
            state = session.client.statuses.get(device) or {}
            if state.get("state") != "online":
                print("%s: offline; it asks for the changes after its own when it reconnects "
                      "(keep 'facegate admin serve' running)" % device)
                continue
            version = (state.get("gallery") or {}).get("site_version")
            if device not in answered or version is None:
                # only a door's signed answer says where it stands; a retained status anyone may write
                print("%s: did not answer a signed status request: not synced (is it a door this "
                      "administrator knows? 'facegate admin doors')" % device)
                status = EXIT_ERROR_REPLY
                continue
            status = max(status, _sync_door(session, site, device, version))
        return status
    finally:
        site.close()
        session.close()


def _sync_door(session, site, device: str, version: int) -> int:
    own = (session.client.statuses.get(device, {}).get("gallery") or {}).get("door_only_changes") or 0
    if version >= site.version:
        if own:
            print("%s: has every site change (%d), and %s made at this door only: it differs from the site gallery "
                  "(a site change for those people brings it back in line)" % (device, version, plural(own, "change")))
            return 0
        print("%s: up to date at site change %d" % (device, version))
        return 0
    applied, failed, stopped = [], [], None
    while version < site.version:
        changes = site.changes_after(version, max_bytes=session.config.mqtt.max_payload_kb * 512)
        replies = session.client.send(device, "sync", {"changes": changes}, timeout=session.args.timeout)
        if not replies or not replies[0].get("ok"):
            return _print_replies(replies, [device])
        result = replies[0]["result"]
        applied += result.get("applied", [])
        failed += result.get("failed", [])
        stopped = result.get("stopped")
        if stopped or result.get("site_version", version) <= version:
            version = result.get("site_version", version)
            break  # no progress: say where it stopped rather than loop
        version = result["site_version"]
    print("%s: applied site change%s %s; now at %d of %d%s%s" % (
        device, "" if len(applied) == 1 else "s", _ranges(applied) or "none", version, site.version,
        "".join("; change %s refused here: %s" % (f.get("change"), f.get("error")) for f in failed),
        "; STOPPED at change %s: %s (tried again at the next sync)" % (stopped.get("change"), stopped.get("error"))
        if stopped else ""))
    return EXIT_ERROR_REPLY if failed or version < site.version else 0


def _ranges(numbers) -> str:
    parts, start = [], None
    for index, number in enumerate(numbers):
        if start is None:
            start = number
        if index + 1 == len(numbers) or numbers[index + 1] != number + 1:
            parts.append(str(start) if start == number else "%d-%d" % (start, number))
            start = None
    return ", ".join(parts)


def _history(args) -> int:
    import base64

    from appliance.audit import EVENT_KINDS

    if not args.door:
        raise FaceGateError("history needs --door: each door keeps its own trail")
    if not 1 <= args.limit <= HISTORY_PAGE:
        raise FaceGateError("--limit must be 1 to %d" % HISTORY_PAGE)
    if args.kind:
        known_name(args.kind, EVENT_KINDS, "event kind")
    body = {"limit": args.limit, "newest": True}
    for key, option in (("since", "--since"), ("until", "--until")):
        moment = local_time(getattr(args, key), option)
        if moment is not None:
            body[key] = moment.isoformat()
    for key in ("kind", "person"):
        if getattr(args, key):
            body[key] = getattr(args, key)
    session = AdminSession(args)
    try:
        replies = session.send_to_door("events", body)
        if not replies[0].get("ok"):
            return _print_replies(replies, [args.door])
        events = replies[0]["result"]["events"]
        folder = Path(args.snapshots) if args.snapshots else None
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        for event in events:
            if args.json:
                print(json.dumps(event, ensure_ascii=False))
            else:
                print(audit_line(event))
            if folder is not None and event.get("has_snapshot"):
                answer = session.send_to_door("snapshot", {"sequence": event["sequence"]})[0]
                if answer.get("ok"):
                    path = folder / ("%s-%06d.jpg" % (args.door, event["sequence"]))
                    path.write_bytes(base64.b64decode(answer["result"]["jpeg"]))
                    print("      snapshot: %s" % path)
                else:
                    print("      snapshot: %s" % answer.get("message"))
        if not events:
            print("no events on %s match" % args.door)
        return 0
    finally:
        session.close()


def _events(args) -> int:
    session = AdminSession(args)
    done = threading.Event()
    seen = []

    def show(event) -> None:
        seen.append(event)
        if args.json:
            event.pop("snapshot_jpeg", None)
            print(json.dumps(event, ensure_ascii=False), flush=True)
        else:
            print("%s %-10s #%-6s %-13s %s %s" % (event.get("time"), event.get("device"), event.get("sequence"),
                                                 event.get("kind"), event.get("person_name") or "-",
                                                 (event.get("detail") or {}).get("reason", "")), flush=True)
        if args.count and len(seen) >= args.count:
            done.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    try:
        session.client.follow_events(show, args.door or "+")
        done.wait()
    finally:
        session.close()
    return 0


def _simple(args) -> int:
    body = {}
    if args.verb == "set_threshold":
        body["distance_threshold"] = args.threshold
        body["force"] = args.force
        if args.margin is not None:
            body["min_margin"] = args.margin
    if args.verb == "update":
        body.update(bundle_facts(args.bundle), url=args.url)
    if args.verb == "unlock":
        if not args.door:
            raise FaceGateError("unlock needs --door: a site-wide unlock is not offered")
        body["reason"] = "admin at %s" % datetime.datetime.now().isoformat(timespec="seconds")
    session = AdminSession(args)
    try:
        return session.send(args.verb, body)
    finally:
        session.close()


def bundle_facts(path: str) -> dict:
    """The size and SHA-256 a door checks its download against."""
    import os

    from appliance.models import sha256_of

    if not os.path.isfile(path):
        raise FaceGateError("no bundle %s (make bundle BOARD=... makes one)" % path)
    return {"sha256": sha256_of(path), "size": os.path.getsize(path)}


def _serve(args) -> int:
    session = AdminSession(args)
    site = session.site_gallery()
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    try:
        session.client.serve(site)
        print("answering sync requests for site %s (site gallery at change %d); Ctrl-C stops"
              % (session.config.mqtt.site, site.version), flush=True)
        done.wait()
    finally:
        session.close()
        site.close()
    return 0
