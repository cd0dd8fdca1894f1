"""`facegate web ...`: the door's page (serve), its users (passwd) and its first-start code."""

import getpass
import sys
from pathlib import Path

from appliance.cli.common import add_config_options, add_gallery_option, load_config
from appliance.errors import FaceGateError


def register(commands) -> None:
    parser = commands.add_parser("web", help="the door's web page: serve it, set a user's password")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    serve = actions.add_parser("serve", help="serve the page (facegate run starts it when web.enabled)")
    add_config_options(serve)
    add_gallery_option(serve)
    serve.add_argument("--audit", help="audit database file, overriding audit.path")
    serve.set_defaults(handler=run_serve)
    passwd = actions.add_parser("passwd", help="add a user or set their password")
    add_config_options(passwd)
    passwd.add_argument("user")
    passwd.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    passwd.set_defaults(handler=run_passwd)
    cert = actions.add_parser("cert", help="make the page's certificate if there is none; print its fingerprint")
    add_config_options(cert)
    cert.set_defaults(handler=run_cert)
    code = actions.add_parser("setup-code", help="print the one-time code that makes the first user at the page")
    add_config_options(code)
    code.set_defaults(handler=run_setup_code)


def run_serve(args) -> int:
    import logging

    from appliance.web import serve

    logging.getLogger("appliance").setLevel(logging.INFO if args.verbose else logging.WARNING)
    config = load_config(args)
    serve(config, args.config)
    return 0


def run_passwd(args) -> int:
    from appliance.web.auth import Users

    config = load_config(args)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password for %s: " % args.user)
        if getpass.getpass("again: ") != password:
            raise FaceGateError("the two passwords differ: nothing changed")
    users = Users(config.web.users_file)
    known = args.user in users.names()
    users.set(args.user, password)
    print("%s %s in %s" % ("password changed for" if known else "added web user", args.user, config.web.users_file))
    return 0


def run_setup_code(args) -> int:
    from appliance.web.auth import Users, setup_code

    config = load_config(args)
    if Users(config.web.users_file).any():
        raise FaceGateError("the page has users already: 'facegate web passwd USER' adds or changes one")
    print(setup_code(Path(config.web.users_file).with_name("web-setup-code")))
    return 0


def run_cert(args) -> int:
    from appliance.web.tls import fingerprint, server_context

    config = load_config(args)
    if not config.web.enabled or not config.web.https:
        print("the web page is off or without HTTPS in this config: no certificate needed")
        return 0
    _, made = server_context(config.web.cert_file, config.web.key_file)
    print("%s the web page's certificate %s, SHA-256 %s" % ("made" if made else "kept", config.web.cert_file,
                                                         fingerprint(Path(config.web.cert_file))))
    return 0
