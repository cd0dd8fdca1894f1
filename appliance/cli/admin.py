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

from appliance.cli.common import add_config_options, load_config
from appliance.errors import AdminError, FaceGateError, did_you_mean

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

    keygen = verbs.add_parser("keygen", help="write a new site signing key (mode 600)")
    keygen.add_argument("file")
    keygen.set_defaults(handler=_keygen)
    sub = verb("enroll", "enrol a person from photos")
    sub.add_argument("name")
    sub.add_argument("photos", nargs="+")
    sub.add_argument("--note", default="")
    sub.add_argument("--force", action="store_true", help="enrol even if the face matches someone")
    sub.set_defaults(handler=_enroll)
    for name, help_text in (("remove", "remove a person"), ("disable", "disable a person"),
                            ("enable", "enable a person")):
        sub = verb(name, help_text)
        sub.add_argument("who", help="name or person id")
        sub.set_defaults(handler=_person_change, verb=name)
    verb("list", "list people: the site gallery, or what one --door holds").set_defaults(handler=_list)
    verb("status", "the doors' retained status", door=False).set_defaults(handler=_status)
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
    sub.set_defaults(handler=_simple, verb="set_threshold")
    verb("serve", "answer doors' requests for site changes they missed", door=False).set_defaults(handler=_serve)


def _keygen(args) -> int:
    from appliance.mqtt.signing import write_new_key

    try:
        write_new_key(args.file)
    except FileExistsError:
        raise FaceGateError("%s exists: a site key is never overwritten (remove it first if you mean it)"
                            % args.file) from None
    print("wrote a new site signing key to %s (mode 600); copy it to every door's mqtt.signing_key_file"
          % args.file)
    return 0


class _Session:
    """Config, key and a connected AdminClient for one command."""

    def __init__(self, args) -> None:
        from appliance.admin.client import AdminClient
        from appliance.mqtt.signing import load_site_key

        self.args = args
        self.config = load_config(args)
        self.site_path = args.site_gallery or self.config.gallery.path
        self.client = AdminClient(self.config.mqtt, load_site_key(self.config.mqtt.signing_key_file))
        self.client.connect(timeout=min(args.timeout, 10.0))

    def site_gallery(self, model_id=None):
        from appliance.admin.site import SiteGallery

        return SiteGallery(self.site_path, model_id)

    def send(self, verb, body, door=None) -> int:
        target = door or getattr(self.args, "door", None) or "all"
        known = sorted(self.client.statuses)
        if target != "all" and known and target not in known:
            # every door that ever connected left a retained status: a name without one is a typo
            raise AdminError("no door %r on site %s%s; doors: %s"
                             % (target, self.config.mqtt.site, did_you_mean(target, known), ", ".join(known)))
        replies = self.client.send(target, verb, body, timeout=self.args.timeout)
        expected = [target] if target != "all" else self.client.online_doors()
        status = _print_replies(replies, expected)
        if target == "all":
            for device, state in sorted(self.client.statuses.items()):
                if state.get("state") != "online":  # its broker session keeps the command, or it syncs
                    print("%s: offline, queued: it applies this when it reconnects" % device)
        return status

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

    session = _Session(args)
    pipeline = FacePipeline.from_config(session.config)
    try:
        photos = [Path(p) for p in args.photos]
        body = {"name": args.name, "note": args.note,
                "photos": [encode_photo(p) for p in photos]}
        if args.door:
            from appliance.gallery.store import _person_id_for

            body["person_id"] = _person_id_for(args.name)
            return session.send("enroll", body)
        site = session.site_gallery(pipeline.embedder.model_id)
        try:
            report = Enroller(session.config, pipeline, site.store).enrol(args.name, photos, force=args.force,
                                                                          note=args.note)
            for photo, reason in report.skipped:
                print("skipped %s: %s" % (photo, reason))
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
    session = _Session(args)
    try:
        if args.door:
            return session.send(args.verb, {"person_id": args.who})
        site = session.site_gallery()
        try:
            person = site.store.find(args.who)
            if args.verb == "remove":
                site.store.remove(person.id)
            else:
                site.store.set_enabled(person.id, args.verb == "enable")
            number = site.record(args.verb, {"person_id": person.id})
            print("site change %d: %s %s (%s)" % (number, args.verb, person.name, person.id))
            return session.send(args.verb, {"person_id": person.id, "change": number})
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
    session = _Session(args)
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


def _status(args) -> int:
    session = _Session(args)
    try:
        if not session.client.statuses:
            print("no door has published a status on site %s" % session.config.mqtt.site)
        for device, status in sorted(session.client.statuses.items()):
            gallery = status.get("gallery", {})
            print("%-16s %-7s door %-10s gallery v%s (site change %s, %s people) unsent events %s%s"
                  % (device, status.get("state"), status.get("door", "-"), gallery.get("version", "-"),
                     gallery.get("site_version", "-"), gallery.get("people", "-"),
                     status.get("unsent_events", "-"),
                     "  faults: %s" % status["faults"] if status.get("faults") else ""))
        return 0
    finally:
        session.close()


def _events(args) -> int:
    session = _Session(args)
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
        if args.margin is not None:
            body["min_margin"] = args.margin
    if args.verb == "unlock":
        if not args.door:
            raise FaceGateError("unlock needs --door: a site-wide unlock is not offered")
        body["reason"] = "admin at %s" % datetime.datetime.now().isoformat(timespec="seconds")
    session = _Session(args)
    try:
        return session.send(args.verb, body)
    finally:
        session.close()


def _serve(args) -> int:
    session = _Session(args)
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
