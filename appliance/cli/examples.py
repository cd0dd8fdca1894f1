"""Examples shown at the end of each command's --help, kept in one table.

A test parses every example with the real parser, so an example cannot drift from the options.
"""

import argparse

EXAMPLES = {
    "": ["facegate enroll Ada photos/ada1.jpg photos/ada2.jpg",
         "facegate run --config /etc/facegate/config.toml",
         "facegate admin status --config admin.toml"],
    "models install": ["facegate models install", "facegate models install --mirror /srv/models"],
    "models list": ["facegate models list"],
    "detect": ["facegate detect group.jpg --out faces.jpg", "facegate detect portrait.jpg --json"],
    "compare": ["facegate compare ada1.jpg ada2.jpg"],
    "enroll": ["facegate enroll Ada ada1.jpg ada2.jpg --note 'night shift'",
               "facegate enroll Ada ada1.jpg --card 7:12345   # with her card for the access panel",
               "facegate enroll Ada ada3.jpg --add",
               "facegate enroll --from-dir people/   # one folder per person, named after them"],
    "people": ["facegate people list", "facegate people show Ada", "facegate people disable Ada",
               "facegate people remove Ada --yes", "facegate people groups Ada staff   # Ada: the staff doors, in "
                                                   "office hours",
               "facegate people card Ada 7:12345   # facility 7, card 12345: what a reader door sends its panel",
               "facegate people validity Ada 2026-12-01 2026-12-31   # the last day included; '-' leaves a side open"],
    "gallery": ["facegate gallery info", "facegate gallery export backup.json",
                "facegate gallery import backup.json --gallery new.db"],
    "identify": ["facegate identify group.jpg --out named.jpg", "facegate identify --video entrance.mp4"],
    "eval-lfw": ["facegate eval-lfw --json lfw.json"],
    "eval-identification": ["facegate eval-identification --cache .eval-cache --json eval-identification.json"],
    "eval-liveness": ["facegate eval-liveness --cache .eval-cache --json liveness.json"],
    "eval-calibrate": ["facegate eval-calibrate --cache .eval-cache/mobilefacenet_ms1m.npz",
                       "facegate eval-calibrate --cache .eval-cache/mobilefacenet_ms1m.npz --validate 10"],
    "quantise-embedder": ["facegate quantise-embedder", "facegate quantise-embedder --check --json int8.json"],
    "schedules set": ["facegate schedules set office 'mon-fri 07:30-19:00' --holidays 2026-12-25,2026-12-26"],
    "schedules remove": ["facegate schedules remove office"],
    "schedules list": ["facegate schedules list"],
    "groups set": ["facegate groups set staff --doors front,back --schedule office",
                   "facegate groups set security --doors '*' --schedule always"],
    "groups remove": ["facegate groups remove staff"],
    "groups list": ["facegate groups list"],
    "config": ["facegate config > door.toml", "facegate config --check door.toml"],
    "run": ["facegate run --config door.toml",
            "facegate run --camera entrance.mp4 --no-relay   # try it on a video, no relay",
            "facegate run --config door.toml --relay-port /dev/ttyUSB0"],
    "audit": ["facegate audit --limit 20", "facegate audit --kind deny --since 2026-11-25T08:00",
              "facegate audit --person Ada --csv > ada.csv", "facegate audit --snapshot 42 --out attempt42.jpg"],
    "web serve": ["facegate web serve --config /etc/facegate/config.toml   # what 'run' starts when web.enabled"],
    "web passwd": ["facegate web passwd ada   # asks twice; at least 10 characters",
                   "facegate web passwd ada --password-stdin   # a script's way: the password on standard input"],
    "web cert": ["facegate web cert --config /etc/facegate/config.toml   # once, at install: prints its fingerprint"],
    "web setup-code": ["facegate web setup-code --config door.toml   # make the first user at the page with it"],
    "update": ["facegate update facegate-rv1126b-0.2.0.tar.gz   # on the board: self-test, switch, prove",
               "facegate update --status", "facegate update --rollback"],
    "selftest": ["facegate selftest   # on the board, with its config", "facegate selftest --no-relay --no-camera"],
    "relay lock": ["facegate relay lock --port /dev/ttyUSB0"],
    "relay test": ["facegate relay test --port /dev/ttyUSB0 --seconds 2"],
    "tune capture": ["facegate tune capture Ada --count 10 --config door.toml"],
    "tune label": ["facegate tune label 57 --person Ada", "facegate tune label 58 --stranger"],
    "tune report": ["facegate tune report --config door.toml --plot tuning.png"],
    "tune replay": ["facegate tune replay --threshold 0.38 --config door.toml   # what a threshold would have done"],
    "eval-threshold": ["facegate eval-threshold --fit-folds 1-3 --test-folds 4-5"],
    "tune undo": ["facegate tune undo --config door.toml   # back to the file before the last apply"],
    "tune apply": ["facegate tune apply 0.42 --config door.toml",
                   "facegate tune apply 0.42 --config admin.toml --door front"],
    "admin keygen": ["facegate admin keygen admin.key   # also admin.key.pub, for every door's trusted keys"],
    "admin add-door": ["facegate admin add-door front 3f0c...e91a --config admin.toml   # the line 'keys init' printed"],
    "admin revoke-door": ["facegate admin revoke-door front --config admin.toml   # a stolen door"],
    "admin doors": ["facegate admin doors --config admin.toml"],
    "admin broker-rules": ["facegate admin broker-rules --out broker/ --config admin.toml"],
    "keys init": ["facegate keys init --config /etc/facegate/config.toml"],
    "keys show": ["facegate keys show --config /etc/facegate/config.toml"],
    "admin enroll": ["facegate admin enroll Ada ada1.jpg ada2.jpg --config admin.toml",
                     "facegate admin enroll Ada ada1.jpg --door front --config admin.toml"],
    "admin remove": ["facegate admin remove Ada --config admin.toml"],
    "admin disable": ["facegate admin disable Ada --config admin.toml"],
    "admin enable": ["facegate admin enable Ada --config admin.toml"],
    "admin schedule-set": ["facegate admin schedule-set office 'mon-fri 07:30-19:00' --config admin.toml"],
    "admin schedule-remove": ["facegate admin schedule-remove office --config admin.toml"],
    "admin group-set": ["facegate admin group-set staff --doors front,back --schedule office --config admin.toml"],
    "admin group-remove": ["facegate admin group-remove staff --config admin.toml"],
    "admin person-groups": ["facegate admin person-groups Ada staff --config admin.toml"],
    "admin person-card": ["facegate admin person-card Ada 7:12345 --config admin.toml",
                          "facegate admin person-card Ada --clear --config admin.toml"],
    "admin list": ["facegate admin list --config admin.toml", "facegate admin list --door front --config admin.toml"],
    "admin status": ["facegate admin status --config admin.toml", "facegate admin status --json --config admin.toml"],
    "admin sync": ["facegate admin sync --config admin.toml", "facegate admin sync --door front --config admin.toml"],
    "admin history": ["facegate admin history --door front --kind deny --since 2026-11-25 --config admin.toml",
                      "facegate admin history --door front --limit 10 --snapshots attempts/ --config admin.toml"],
    "admin events": ["facegate admin events --config admin.toml", "facegate admin events --door front --json"],
    "admin ping": ["facegate admin ping --config admin.toml"],
    "admin unlock": ["facegate admin unlock --door front --config admin.toml"],
    "admin update": ["facegate admin update facegate-rv1126b-0.2.0.tar.gz --url http://10.0.0.5/facegate.tar.gz "
                     "--config admin.toml   # every door", "facegate admin update bundle.tar.gz --url "
                     "https://files.example/b.tar.gz --door front --config admin.toml"],
    "admin set-threshold": ["facegate admin set-threshold 0.40 --door front --config admin.toml"],
    "admin serve": ["facegate admin serve --config admin.toml"],
}


def attach(parser: argparse.ArgumentParser, path: str = "") -> None:
    """Give `parser` and every command under it its examples as the help's epilog."""
    lines = EXAMPLES.get(path)
    if lines:
        parser.epilog = "examples:\n" + "\n".join("  " + line for line in lines)
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
    for name, sub in commands_of(parser):
        attach(sub, (path + " " + name).strip())


def commands_of(parser: argparse.ArgumentParser):
    for action in parser._actions:  # argparse offers no public way to walk its subcommands
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()
