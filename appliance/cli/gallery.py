"""`facegate enroll`, `facegate people`, `facegate gallery`: managing who may enter."""

import sys
from pathlib import Path

from appliance.cli.common import (Progress, add_config_options, add_gallery_option, load_config,
                                  confirmed, open_gallery, pad, plural, record_change)
from appliance.errors import FaceGateError


def register(commands) -> None:
    enroll = commands.add_parser("enroll", help="enrol a person from photos, or a folder of people")
    enroll.add_argument("name", nargs="?", help="the person's display name")
    enroll.add_argument("photos", nargs="*", help="photos of that person alone")
    enroll.add_argument("--from-dir", help="a folder with a sub-folder per person, or NAME_N.jpg files")
    enroll.add_argument("--add", action="store_true", help="add photos to an enrolled person")
    enroll.add_argument("--force", action="store_true",
                        help="enrol even when the face matches another person closely")
    enroll.add_argument("--note", default="", help="a note kept with the person")
    enroll.add_argument("--card", default="", help="the person's access card for a building's panel, FACILITY:NUMBER "
                                                   "(one person only): given with the photos, or nothing is")
    add_config_options(enroll)
    add_gallery_option(enroll)
    enroll.set_defaults(handler=run_enroll)

    people = commands.add_parser("people", help="list, show, remove, disable or enable people")
    people.add_argument("action", choices=["list", "show", "remove", "disable", "enable", "groups", "card",
                                           "validity"])
    people.add_argument("person", nargs="?", help="name or id (all but list)")
    people.add_argument("groups", nargs="*", help="with groups: every access group the person is in (none: every "
                                                  "door, any time); with card: FACILITY:NUMBER or NUMBER; with "
                                                  "validity: FROM UNTIL, dates or times, '-' for open")
    people.add_argument("--clear", action="store_true", help="with card: take the person's card away")
    people.add_argument("--yes", action="store_true", help="remove without asking (asked only at a terminal)")
    add_config_options(people)
    add_gallery_option(people)
    people.set_defaults(handler=run_people)

    gallery = commands.add_parser("gallery", help="export, import or re-embed the whole gallery")
    gallery.add_argument("action", choices=["export", "import", "reembed", "info"])
    gallery.add_argument("file", nargs="?", help="the export file (export and import)")
    add_config_options(gallery)
    add_gallery_option(gallery)
    gallery.set_defaults(handler=run_gallery)


def _print_report(report, folder: bool = False) -> int:
    for person, count in report.enrolled:
        print("enrolled %s (%s): %s" % (person.name, person.id, plural(count, "photo")))
    for item, reason in report.skipped:
        print("skipped %s: %s" % (item, reason))
    if report.already and folder:
        print("%s already enrolled, left as they are (a second run goes on where the first stopped; --add "
              "adds these photos to them)" % plural(len(report.already), "person was", "people were"))
    elif report.already:
        print("%s is already enrolled: nothing changed ('facegate enroll %s PHOTO... --add' adds photos to them; "
              "'facegate people remove' first to start them afresh)" % (report.already[0], report.already[0]))
    photos = sum(count for _, count in report.enrolled)
    print("%s enrolled from %s, %d skipped"
          % (plural(len(report.enrolled), "person", "people"), plural(photos, "photo"), len(report.skipped)))
    return 0 if report.enrolled or (folder and report.already and not report.skipped) else 1


def run_enroll(args) -> int:
    from appliance.gallery.enrol import EnrolReport, Enroller, group_photos
    from appliance.vision.pipeline import FacePipeline

    if bool(args.from_dir) == bool(args.name):
        raise FaceGateError("give either NAME PHOTO... or --from-dir DIR")
    if args.name and not args.photos:
        raise FaceGateError("no photos given for %s" % args.name)
    if args.card and args.from_dir:
        raise FaceGateError("--card is one person's: give NAME PHOTO... --card, or 'facegate people card' later")
    config = load_config(args)
    pipeline = FacePipeline.from_config(config)
    store = open_gallery(args, config, pipeline.embedder.model_id, create=True)
    report = EnrolReport()
    interrupted = False
    try:
        enroller = Enroller(config, pipeline, store)
        if args.from_dir:
            total = sum(len(p) for p in group_photos(Path(args.from_dir)).values())
            progress = Progress(total, "enrolling")
            enroller.enrol_folder(Path(args.from_dir), args.force, args.add, progress.step, report=report)
        else:
            report = enroller.enrol(args.name, [Path(p) for p in args.photos], args.force, args.add, args.note,
                                    card=args.card)
    except KeyboardInterrupt:  # each person is one transaction: who was enrolled stays enrolled
        interrupted = True
        print()
    finally:
        store.close()
        pipeline.close()
    for person, count in report.enrolled:
        record_change(config, "add_photos" if args.add else "enroll", person, templates=count,
                      **({"card": "%d:%d" % person.card} if args.card else {}))
    status = _print_report(report, folder=bool(args.from_dir))
    if interrupted:
        print("interrupted: the %s enrolled above %s kept; run the same command again to go on (it skips who is "
              "enrolled)" % (plural(len(report.enrolled), "person", "people"),
                             "is" if len(report.enrolled) == 1 else "are"), file=sys.stderr)
        return 130
    return status


def run_people(args) -> int:
    from appliance.gallery import commands

    config = load_config(args)
    with open_gallery(args, config) as store:
        if args.action == "list":
            people = store.people()
            for person in people:
                print("%s %s %s %s%s" % (pad(person.id, 28), pad(person.name, 28), plural(person.templates, "template"),
                                         "card %d:%d " % person.card if person.card else "",
                                         "" if person.enabled else "(disabled)"))
            counts = [person.templates for person in people if person.templates]
            if store.model_id:
                from appliance.recognition.decision import threshold_for

                print("%s; the door's %s" % (plural(len(people), "person", "people"),
                                             threshold_for(config, store.model_id, counts).describe()))
            else:
                print(plural(len(people), "person", "people"))
            return 0
        if not args.person:
            raise FaceGateError("'people %s' needs a person's name or id" % args.action)
        if args.action == "show":
            person = commands.get(store, args.person)
            for key in ("id", "name", "note", "enabled", "valid_from", "valid_until", "created",
                        "templates"):
                print("%-12s %s" % (key, getattr(person, key)))
            print("%-12s %s" % ("groups", ", ".join(person.groups) or "none: every door, any time"))
            print("%-12s %s" % ("card", "%d:%d" % person.card if person.card else "none"))
        elif args.action == "card":
            if args.clear == bool(args.groups) or len(args.groups) > 1:
                raise FaceGateError("'people card WHO' needs one card (FACILITY:NUMBER or NUMBER) or --clear")
            result = commands.access_change(store, "person_card", {"person_id": args.person,
                                                                   "card": args.groups[0] if args.groups else None})
            person = commands.get(store, result["person_id"])
            record_change(config, "person_card", person, card=result["card"])
            print("%s: %s" % (person.name, "card %d:%d" % person.card if person.card else "no card"))
        elif args.action == "validity":
            if len(args.groups) != 2:
                raise FaceGateError("'people validity WHO FROM UNTIL' needs two dates or times ('-' leaves one open)")
            dates = [None if value == "-" else value for value in args.groups]
            person = commands.set_validity(store, args.person, *dates)
            record_change(config, "validity", person, valid_from=person.valid_from, valid_until=person.valid_until)
            print("%s: valid from %s until %s" % (person.name, person.valid_from or "any time",
                                                 person.valid_until or "any time"))
        elif args.action == "groups":
            result = commands.access_change(store, "person_groups", {"person_id": args.person, "groups": args.groups})
            person = commands.get(store, result["person_id"])
            record_change(config, "person_groups", person, groups=list(person.groups))
            print("%s: %s" % (person.name, "groups " + ", ".join(person.groups) if person.groups
                              else "in no group: every door, any time"))
        elif args.action == "remove":
            found = commands.get(store, args.person)
            if not confirmed("remove %s (%s) and their %s?" % (found.name, found.id, plural(found.templates, "template")),
                             args.yes):
                print("nothing removed")
                return 1
            person = commands.remove(store, found.id)
            record_change(config, "remove", person)
            print("removed %s (%s)" % (person.name, person.id))
        else:
            person = commands.set_enabled(store, args.person, args.action == "enable")
            record_change(config, args.action, person)
            print("%s %s" % (args.action + "d", person.name))
    return 0


def run_gallery(args) -> int:
    from appliance.gallery import transfer

    config = load_config(args)
    if args.action in ("export", "import") and not args.file:
        raise FaceGateError("'gallery %s' needs a file" % args.action)
    if args.action == "reembed":
        from appliance.vision.pipeline import FacePipeline

        pipeline = FacePipeline.from_config(config)
        try:
            with open_gallery(args, config) as store:
                count = transfer.reembed(store, pipeline.embedder)
        finally:
            pipeline.close()
        print("re-embedded %s with %s" % (plural(count, "template"), pipeline.embedder.model_id))
        return 0
    with open_gallery(args, config, create=args.action == "import") as store:
        if args.action == "export":
            counts = transfer.export_gallery(store, Path(args.file))
            print("exported %(people)d people, %(templates)d templates to " % counts + args.file)
        elif args.action == "import":
            added, skipped = transfer.import_gallery(store, Path(args.file))
            if added:
                record_change(config, "import", people=added, file=str(args.file))
            print("imported %d people; %d already present, skipped" % (added, len(skipped)))
            for name in skipped:
                print("  skipped %s" % name, file=sys.stderr)
        else:
            for key, value in store.counts().items():
                print("%-10s %s" % (key, value))
    return 0
