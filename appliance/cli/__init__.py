"""The `facegate` command: one module per command group, errors translated here, once."""

import argparse
import logging
import os
import sys
from typing import List, Optional

from appliance import __version__
from appliance.cli import examples
from appliance.errors import FaceGateError

# command group modules; each has register(subparsers) adding its commands.
COMMAND_MODULES = ("appliance.cli.models", "appliance.cli.detect", "appliance.cli.gallery",
                   "appliance.cli.identify", "appliance.cli.config", "appliance.cli.run", "appliance.cli.admin",
                   "appliance.cli.tune", "appliance.cli.relay", "appliance.cli.selftest", "appliance.cli.keys",
                   "appliance.cli.access", "appliance.cli.update", "appliance.cli.web")
# the host's evaluation commands, where the host tools are installed (never on a board)
HOST_COMMAND_MODULES = ("facegate_host.cli",)

EXIT_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    import importlib
    import importlib.util

    parser = argparse.ArgumentParser(prog="facegate", description="Face-recognition door access.")
    parser.add_argument("--version", action="version", version="facegate " + __version__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(commands)
    for name in HOST_COMMAND_MODULES:
        if importlib.util.find_spec(name.partition(".")[0]) is not None:
            importlib.import_module(name).register(commands)
    examples.attach(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # FFmpeg's own complaints about a bad video would come before our one-line explanation
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    try:
        return int(args.handler(args) or 0)
    except FaceGateError as err:
        print("facegate: error: %s" % err, file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`facegate audit | head`): not an error, and nothing more to print;
        # stdout is pointed at /dev/null so the interpreter's final flush does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
