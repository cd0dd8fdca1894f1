"""`facegate update`: install a bundle beside the running version, with the way back."""

import json
import os
import sys
from pathlib import Path

from appliance.errors import UpdateError

DEFAULT_CONFIG = "/etc/facegate/config.toml"


def register(commands) -> None:
    parser = commands.add_parser("update", help="install a new version from a bundle; it goes back by itself "
                                                "if the new one fails its self-test or does not run its door")
    parser.add_argument("bundle", nargs="?", help="the bundle (make bundle BOARD=...), a .tar.gz")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="the door's config (default %(default)s)")
    parser.add_argument("--status", action="store_true", help="show the versions and the last update's state")
    parser.add_argument("--json", action="store_true", help="--status as JSON")
    parser.add_argument("--rollback", action="store_true", help="go back to the previous version")
    parser.add_argument("--service", choices=("auto", "systemd", "init", "none"), default="auto",
                        help="how the door is stopped and started (default: what this device has)")
    parser.set_defaults(handler=run)


def installation():
    from appliance.update import running_installation

    found = running_installation()
    if found is None:
        raise UpdateError("this FaceGate is not installed from a bundle (a development checkout or a pip install): "
                          "there is no version to update; install a bundle with its install.sh")
    return found


def run(args) -> int:
    from appliance.update.apply import PROOF_MARGIN_SECONDS, ServiceManager, Updater

    install, running = installation()
    if args.status or not (args.bundle or args.rollback):
        return _status(install, running, args.json)
    if args.bundle and args.rollback:
        raise UpdateError("give a bundle or --rollback, not both")
    if args.bundle and not Path(args.bundle).is_file():
        raise UpdateError("no bundle %s (make bundle BOARD=... makes one)" % args.bundle)
    from appliance.config import load

    config = load(Path(args.config))  # a mistyped config fails here, before anything moves
    updater = Updater(install, args.config, ServiceManager(install.root, args.service),
                      python=os.environ.get("FACEGATE_PYTHON", sys.executable),
                      say=lambda line: print(line, flush=True),
                      proof_seconds=config.update.confirm_seconds + PROOF_MARGIN_SECONDS)
    if args.rollback:
        print("back to %s" % updater.roll_back())
        return 0
    updater.update(Path(args.bundle))
    return 0


def _status(install, running: str, as_json: bool) -> int:
    state = install.state()
    state["running_code"] = running
    if as_json:
        print(json.dumps(state, sort_keys=True))
        return 0
    print("current   %s" % (state.get("current") or "-"))
    print("previous  %s" % (state.get("previous") or "-"))
    line = "update    %s" % state["state"]
    if state.get("version") and state["state"] not in ("installed", "none"):
        line += " (%s)" % state["version"]
    if state.get("starts") is not None:
        line += ", started %d time(s) on trial" % state["starts"]
    if state.get("reason"):
        line += ": %s" % state["reason"]
    print(line)
    return 0
