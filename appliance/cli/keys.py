"""`facegate keys`: this door's own key pair, made on the door, and the line that tells the
administrator its public half."""

from pathlib import Path

from appliance.cli.common import add_config_options, load_config
from appliance.errors import FaceGateError


def register(commands) -> None:
    parser = commands.add_parser("keys", help="this door's own signing key")
    actions = parser.add_subparsers(dest="keys_command", metavar="ACTION")
    actions.required = True
    sub = actions.add_parser("init", help="make this door's key (mqtt.signing_key_file) if it has none, "
                                          "replacing an old shared site key; print its public line")
    add_config_options(sub)
    sub.set_defaults(handler=_init)
    sub = actions.add_parser("show", help="print this door's public line for 'facegate admin add-door'")
    add_config_options(sub)
    sub.set_defaults(handler=_show)


def _public_line(config, key) -> str:
    return "door %s %s" % (config.mqtt.device, key.public.hex)


def _init(args) -> int:
    from appliance.keys import PrivateKey, is_legacy_key, load_private, read_secret_file, write_private

    config = load_config(args)
    path = config.mqtt.signing_key_file
    if not config.mqtt.enabled:
        print("MQTT is off in this config: this door signs nothing and needs no key")
        return 0
    if not path:
        raise FaceGateError("mqtt.signing_key_file is empty in the config: name the file for this door's key")
    if Path(path).exists():
        if not is_legacy_key(read_secret_file(path, "mqtt.signing_key_file")):
            key = load_private(path)  # refuses a key file it cannot read, says why
            print("%s already holds this door's key (id %s); nothing changed" % (path, key.key_id))
            print(_public_line(config, key))
            return 0
        # the old shared site key signs for every door: once this door has its own, it goes
        write_private(path, PrivateKey.generate(), replace=True)
        print("replaced the old shared site key in %s with this door's own key" % path)
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_private(path, PrivateKey.generate())
        print("wrote this door's key to %s (mode 600; it never leaves the door)" % path)
    key = load_private(path)
    print("tell the administrator:  facegate admin add-door %s %s" % (config.mqtt.device, key.public.hex))
    print(_public_line(config, key))
    return 0


def _show(args) -> int:
    from appliance.keys import load_private

    config = load_config(args)
    print(_public_line(config, load_private(config.mqtt.signing_key_file)))
    return 0
