"""The broker's side of a site's security: an account per door, the administrator's and a
read-only one for Home Assistant, and the rules of who may publish and read where.

Written for mosquitto (a password file with PBKDF2-SHA512 hashes, an ACL file, a listener
snippet with TLS on and anonymous clients refused); README maps the same rules onto any
other MQTT 5 broker. Signatures already make a forged command useless; these rules keep a
stranger on the broker from reading the doors' commands (people's photos and embeddings),
filling a door's inbox or speaking as a door.
"""

import base64
import hashlib
import os
import re
import secrets
from pathlib import Path
from typing import Dict, List, Tuple

from appliance.mqtt import home_assistant, topics

ADMIN_ACCOUNT = "facegate-admin"
HOME_ASSISTANT_ACCOUNT = "homeassistant"
PBKDF2_ITERATIONS = 101  # mosquitto_passwd's own default for its "$7$" hashes


def door_account(door: str) -> str:
    return "door-" + re.sub(r"[^A-Za-z0-9_.-]", "_", door)


def password_hash(password: str, salt: bytes = b"") -> str:
    """A line's hash as mosquitto 2 writes it: $7$iterations$salt$PBKDF2-HMAC-SHA512."""
    salt = salt or os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, PBKDF2_ITERATIONS, 64)
    return "$7$%d$%s$%s" % (PBKDF2_ITERATIONS, base64.b64encode(salt).decode(), base64.b64encode(digest).decode())


def door_rules(site: str, door: str, ha_prefix: str) -> List[str]:
    base = topics.base(site, door)
    return ["user %s" % door_account(door),
            "topic read %s" % topics.commands(site, door),
            "topic read %s" % topics.commands(site, topics.ALL),
            "topic write %s/status" % base,
            "topic write %s/seen" % base,
            "topic write %s/decision" % base,
            "topic write %s/events" % base,
            "topic write %s/snapshot" % base,
            "topic write %s/reply/+" % base,
            "topic write %s/sync/request" % base,
            # an administrator's reply topic (its name is chosen per run); replies are signed
            "topic write %s/%s/+/reply" % (topics.ROOT, site),
            "topic write %s/+/%s/+/config" % (ha_prefix, home_assistant.node_id(site, door))]


def acl(site: str, doors: List[str], ha_prefix: str = home_assistant.DEFAULT_PREFIX) -> str:
    root = "%s/%s" % (topics.ROOT, site)
    lines = ["# FaceGate site %s: who may publish and read where (facegate admin broker-rules)" % site,
             "# anonymous clients have no rules here, so they may do nothing", "",
             "# the administrator: everything under the site",
             "user %s" % ADMIN_ACCOUNT, "topic readwrite %s/#" % root, "",
             "# Home Assistant: read-only (statuses and decisions, its discovery messages), no commands, "
             "no events (their snapshots are faces)",
             "user %s" % HOME_ASSISTANT_ACCOUNT,
             "topic read %s/+/status" % root, "topic read %s/+/seen" % root, "topic read %s/+/decision" % root,
             "# the last decision's picture, for doors that opt in (mqtt.home_assistant_snapshots)",
             "topic read %s/+/snapshot" % root,
             "topic read %s/#" % ha_prefix, "topic readwrite %s/status" % ha_prefix, ""]
    for door in doors:
        lines += ["# door %s: its own topics only" % door] + door_rules(site, door, ha_prefix) + [""]
    return "\n".join(lines)


def listener_snippet(folder: Path, port: int = 8883) -> str:
    return ("# FaceGate: include in mosquitto.conf (per_listener_settings false). Put the broker's\n"
            "# certificate and key and the site CA where the three tls lines say.\n"
            "listener %d\n"
            "cafile /etc/mosquitto/certs/ca.crt\ncertfile /etc/mosquitto/certs/broker.crt\n"
            "keyfile /etc/mosquitto/certs/broker.key\n"
            "allow_anonymous false\npassword_file %s\nacl_file %s\n"
            % (port, folder.resolve() / "passwd", folder.resolve() / "acl"))


def write(folder: Path, site: str, doors: List[str], ha_prefix: str = home_assistant.DEFAULT_PREFIX,
          ) -> Dict[str, Path]:
    """Write passwd, acl, mosquitto.conf and one password file per account into `folder`.
    An account's password is kept when its file exists, so rewriting after a door is added or
    revoked changes nobody else's; a revoked door's account and password file go."""
    folder.mkdir(parents=True, exist_ok=True)
    accounts = [ADMIN_ACCOUNT, HOME_ASSISTANT_ACCOUNT] + [door_account(d) for d in doors]
    hashes: List[Tuple[str, str]] = []
    written: Dict[str, Path] = {}
    for account in accounts:
        secret_file = folder / ("%s.password" % account)
        if secret_file.exists():
            password = secret_file.read_text().strip()
        else:
            password = secrets.token_urlsafe(24)
            descriptor = os.open(str(secret_file), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(password + "\n")
        hashes.append((account, password_hash(password)))
        written[account] = secret_file
    for stale in folder.glob("door-*.password"):
        if stale.name[:-len(".password")] not in accounts:
            stale.unlink()  # a revoked or removed door: its account goes with it
    _replace(folder / "passwd", "".join("%s:%s\n" % pair for pair in hashes), 0o600)
    _replace(folder / "acl", acl(site, doors, ha_prefix) + "\n", 0o644)
    _replace(folder / "mosquitto.conf", listener_snippet(folder), 0o644)
    return written


def _replace(path: Path, text: str, mode: int) -> None:
    partial = path.with_name(path.name + ".partial")
    descriptor = os.open(str(partial), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.chmod(partial, mode)
    os.replace(partial, path)
