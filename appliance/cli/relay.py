"""`facegate relay`: lock the door by hand (init scripts after a forced stop) or test the wiring."""

import time

from appliance.cli.common import add_config_options, load_config


def register(commands) -> None:
    parser = commands.add_parser("relay", help="lock the relay, or pulse it to check the wiring")
    actions = parser.add_subparsers(dest="relay_action", metavar="ACTION")
    actions.required = True
    lock = actions.add_parser("lock", help="drive the relay locked and exit")
    test = actions.add_parser("test", help="unlock for --seconds, then lock (the installer's wiring check)")
    test.add_argument("--seconds", type=float, default=3.0)
    for action in (lock, test):
        add_config_options(action)
        # --relay-port as `facegate run` spells it
        action.add_argument("--port", "--relay-port", dest="relay_port", help="relay serial port, overriding relay.port")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from appliance.door.relay import Relay

    config = load_config(args)  # --port is relay.port (config.FLAGS)
    relay = Relay.from_config(config.relay)  # opening it drives it locked
    try:
        if args.relay_action == "test":
            print("relay %s: unlocked for %.1f s" % (config.relay.port, args.seconds))
            relay.unlock()
            time.sleep(args.seconds)
    finally:
        relay.close()
    print("relay %s: locked" % config.relay.port)
    return 0
