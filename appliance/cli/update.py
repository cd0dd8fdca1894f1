"""`facegate update`: install a bundle beside the running version, with the way back."""

import json
import os
import shutil
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
    parser.add_argument("--url", help="download the bundle from here first (what a fleet update does)")
    parser.add_argument("--sha256", help="with --url: the bundle's SHA-256")
    parser.add_argument("--size", type=int, help="with --url: the bundle's size in bytes")
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
    from appliance.update.fleet import UpdateLock

    install, running = installation()
    if args.status or not (args.bundle or args.rollback or args.url):
        return _status(install, running, args.json)
    if sum(map(bool, (args.bundle, args.rollback, args.url))) > 1:
        raise UpdateError("give one of a bundle, --url or --rollback")
    lock = UpdateLock(install)
    if not lock.acquire():
        raise UpdateError("another update is under way on this device (%s)" % lock.path)
    try:
        return _carry_out(args, install)
    finally:
        lock.release()


def _carry_out(args, install) -> int:
    from appliance.config import load
    from appliance.update.apply import PROOF_MARGIN_SECONDS, ServiceManager, Updater

    if args.bundle and not Path(args.bundle).is_file():
        raise UpdateError("no bundle %s (make bundle BOARD=... makes one)" % args.bundle)
    config = load(Path(args.config))  # a mistyped config fails here, before anything moves
    updater = Updater(install, args.config, ServiceManager(install.root, args.service),
                      python=os.environ.get("FACEGATE_PYTHON", sys.executable),
                      say=lambda line: print(line, flush=True),
                      proof_seconds=config.update.confirm_seconds + PROOF_MARGIN_SECONDS)
    if args.rollback:
        print("back to %s" % updater.roll_back())
        return 0
    bundle = Path(args.bundle) if args.bundle else None
    if args.url:
        from appliance.errors import CommandError
        from appliance.update.fleet import check_request, download

        try:
            url, digest, size = check_request({"url": args.url, "sha256": args.sha256, "size": args.size},
                                              config.update.download_max_mb)
        except CommandError as err:
            raise UpdateError(err.message) from None
        install.record("downloading", url=url)
        try:
            bundle = download(url, digest, size, install.lib / "download" / "bundle.tar.gz")
        except UpdateError as err:
            install.record("failed", url=url, reason=str(err))
            raise
    try:
        updater.update(bundle)
    except UpdateError as err:
        if install.state().get("state") not in ("failed", "rolled_back"):
            install.record("failed", reason=str(err))
        raise
    finally:
        if args.url:
            shutil.rmtree(install.lib / "download", ignore_errors=True)
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
