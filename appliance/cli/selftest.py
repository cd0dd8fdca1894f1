"""`facegate selftest`: check that this device can run its door (appliance/selftest.py)."""

from pathlib import Path

from appliance.cli.common import add_config_options, add_door_options, load_config


def register(commands) -> None:
    parser = commands.add_parser("selftest", help="check the models, a reference face, the relay and the camera")
    add_config_options(parser)
    add_door_options(parser)
    parser.add_argument("--reference", help="folder with the recorded reference face (default: <models.dir>/selftest)")
    parser.add_argument("--no-relay", action="store_true", help="do not open the relay (a door without one)")
    parser.add_argument("--no-camera", action="store_true", help="do not open the camera")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from appliance.selftest import run_checks

    config = load_config(args)
    checks = run_checks(config, Path(args.reference) if args.reference else None,
                        relay=not args.no_relay, camera=not args.no_camera)
    for check in checks:
        word = "FAIL" if not check.ok else "WARN" if check.warning else "ok"
        print("%-15s %s%s" % (check.name, word, ": " + check.detail if check.detail else ""))
    failed = [c.name for c in checks if not c.ok]
    if failed:
        print("selftest failed: %s" % ", ".join(failed))
        return 1
    print("selftest passed")
    return 0
