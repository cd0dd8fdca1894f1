"""`facegate schedules`, `facegate groups`: who may use which door when, at this door's console.

Each change is one call into gallery/commands.py (as the MQTT verbs and the administrator's
site changes are), audited with who made it. `facegate people groups WHO GROUP...` puts a
person in groups.
"""

from appliance.cli.common import add_config_options, add_gallery_option, load_config, open_gallery, record_change


def register(commands) -> None:
    schedules = commands.add_parser("schedules", help="named weekly schedules for access groups")
    actions = schedules.add_subparsers(dest="schedules_action", metavar="ACTION")
    actions.required = True
    sub = actions.add_parser("set", help="add or change a schedule")
    sub.add_argument("name")
    sub.add_argument("periods", help="weekly periods in the site's time zone, e.g. 'mon-fri 08:00-18:00; sat 09:00-12:00'")
    sub.add_argument("--holidays", default="", help="dates it is closed, e.g. 2026-12-25,2026-12-26")
    sub.set_defaults(handler=_change, verb="schedule_set")
    sub = actions.add_parser("remove", help="remove a schedule no group uses")
    sub.add_argument("name")
    sub.set_defaults(handler=_change, verb="schedule_remove")
    actions.add_parser("list", help="every schedule").set_defaults(handler=_list, what="schedules")
    groups = commands.add_parser("groups", help="access groups: a set of doors and a schedule")
    actions_g = groups.add_subparsers(dest="groups_action", metavar="ACTION")
    actions_g.required = True
    sub = actions_g.add_parser("set", help="add or change an access group")
    sub.add_argument("name")
    sub.add_argument("--doors", required=True, help="door names (mqtt.device) separated by commas, or '*' for all")
    sub.add_argument("--schedule", required=True, help="a schedule's name, or 'always'")
    sub.set_defaults(handler=_change, verb="group_set")
    sub = actions_g.add_parser("remove", help="remove an access group (its members leave it)")
    sub.add_argument("name")
    sub.set_defaults(handler=_change, verb="group_remove")
    actions_g.add_parser("list", help="every group and who is in it").set_defaults(handler=_list, what="groups")
    for parser in (actions.choices.values(), actions_g.choices.values()):
        for sub in parser:
            add_config_options(sub)
            add_gallery_option(sub)


def fields_of(args) -> dict:
    """The command's fields, as the MQTT verb and the site change carry them."""
    keys = {"schedule_set": ("name", "periods", "holidays"), "group_set": ("name", "doors", "schedule")}
    return {key: getattr(args, key) for key in keys.get(args.verb, ("name",))}


def _change(args) -> int:
    from appliance.gallery import commands

    config = load_config(args)
    with open_gallery(args, config) as store:
        result = commands.access_change(store, args.verb, fields_of(args))
    record_change(config, args.verb, **fields_of(args))
    print("%s: %s" % (args.verb.replace("_", " "), ", ".join("%s %s" % item for item in result.items())))
    return 0


def _list(args) -> int:
    config = load_config(args)
    with open_gallery(args, config) as store:
        if args.what == "schedules":
            rows = store.schedule_rows()
            for name, periods, holidays in rows:
                print("%-20s %s%s" % (name, periods, "; closed %s" % holidays if holidays else ""))
            if not rows:
                print("no schedules ('facegate schedules set NAME PERIODS'); 'always' is built in")
            return 0
        members = {}
        for person in store.people():
            for group in person.groups:
                members.setdefault(group, []).append(person.name)
        rows = store.group_rows()
        for name, doors, schedule in rows:
            print("%-20s doors %s, schedule %s; %d people: %s" % (name, doors, schedule, len(members.get(name, [])),
                                                                ", ".join(members.get(name, [])) or "-"))
        if not rows:
            print("no access groups: everyone enrolled may use every door at any time")
    return 0
