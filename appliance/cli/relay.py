"""`facegate relay`: lock the door by hand (init scripts after a forced stop) or test the wiring."""

import time

from appliance import signals
from appliance.cli.common import add_config_options, load_config
from appliance.errors import FaceGateError


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

    if args.relay_action == "test" and not 0 < args.seconds <= 600:
        raise FaceGateError("--seconds must be more than 0 and at most 600, got %g" % args.seconds)
    config = load_config(args)  # --port is relay.port (config.FLAGS)
    signals.raise_on_terminating()  # any signal that would end us ends the pulse, and `finally` locks
    relay = Relay.from_config(config.relay)  # opening it drives it locked
    stopped = None
    try:
        if args.relay_action == "test":
            # the relay takes the bytes without answering: only the strike itself can say it moved
            print("relay %s: sent the unlock command; holding %.1f s (this relay does not answer: listen for the "
                  "strike; silence means a wrong port, wiring or relay.protocol)" % (config.relay.port, args.seconds),
                  flush=True)
            relay.unlock()
            time.sleep(args.seconds)
    except signals.Stopped as signal_stop:
        stopped = signal_stop
    finally:
        relay.close()
    print("relay %s: sent the lock command%s" % (config.relay.port,
                                                 " (stopped early by %s)" % stopped if stopped else ""))
    return 130 if stopped else 0
