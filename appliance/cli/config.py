"""`facegate config`: print the documented defaults or check a config file."""

from appliance import config as config_module


def register(commands) -> None:
    parser = commands.add_parser("config", help="print the default config or check a file")
    parser.add_argument("--check", metavar="FILE", help="validate FILE and exit")
    parser.set_defaults(handler=run)


def run(args) -> int:
    if args.check:
        # every rule `facegate run` applies, files included, so the two never disagree
        config = config_module.load(args.check)
        config_module.validate(config, args.check)
        for note in config_module.notes(config):
            print("note: %s" % note)
        print("%s: ok" % args.check)
    else:
        print(config_module.defaults_toml(), end="")
    return 0
