"""Every MQTT topic FaceGate uses, built in one place for the door and the administrator.

  facegate/<site>/<device>/status            retained; "offline" through the last will
  facegate/<site>/<device>/seen              retained; when the door last published a status
  facegate/<site>/<device>/decision          grants and denials as they happen (Home Assistant)
  facegate/<site>/<device>/events            audit events, QoS 1, id + sequence number
  facegate/<site>/<device>/cmd/<verb>        commands for this door
  facegate/<site>/all/cmd/<verb>             commands for every door of the site
  facegate/<site>/<device>/reply/<request>   replies to requests without a usable response topic
  facegate/<site>/<client>/reply             an administrator's own reply topic (MQTT 5)
  facegate/<site>/<device>/sync/request      "send me the site's changes after N"

Text from the network never reaches a topic unchecked: a topic with a NUL, a wildcard or a
broken character makes the broker drop the connection, and paho would send it again after
every reconnect.
"""

import re
from typing import Optional

ROOT = "facegate"
ALL = "all"  # the device name that addresses every door of a site

# what a request id may hold to name a reply topic (a UUID, a ULID, a counter with a prefix)
_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9._:-]{1,100}")
MAX_TOPIC_BYTES = 1024


def base(site: str, device: str) -> str:
    return "%s/%s/%s" % (ROOT, site, device)


def status(site: str, device: str) -> str:
    return base(site, device) + "/status"


def seen(site: str, device: str) -> str:
    """Outlives the last will, which replaces the status: when an offline door was last heard."""
    return base(site, device) + "/seen"


def decision(site: str, device: str) -> str:
    return base(site, device) + "/decision"


def events(site: str, device: str) -> str:
    return base(site, device) + "/events"


def command(site: str, device: str, verb: str) -> str:
    return "%s/cmd/%s" % (base(site, device), verb)


def commands(site: str, device: str) -> str:
    """The filter for every command to `device`."""
    return base(site, device) + "/cmd/+"


def reply(site: str, device: str, request_id: Optional[str]) -> str:
    """Where a door answers a request: under its own tree, named by a safe form of the id."""
    return "%s/reply/%s" % (base(site, device), safe_segment(request_id))


def client_reply(site: str, client: str) -> str:
    """An administrator's own reply topic, given to doors as the MQTT 5 response topic."""
    return "%s/reply" % base(site, client)


def sync_request(site: str, device: str) -> str:
    return base(site, device) + "/sync/request"


def safe_segment(text: Optional[str]) -> str:
    """`text` when it is a plain name, else "invalid": never a wildcard, a slash or a control."""
    if isinstance(text, str) and _SAFE_SEGMENT.fullmatch(text):
        return text
    return "invalid" if text else "unknown"


def is_safe_request_id(text: object) -> bool:
    return isinstance(text, str) and _SAFE_SEGMENT.fullmatch(text) is not None


def response_topic_allowed(site: str, topic: Optional[str]) -> bool:
    """An MQTT 5 response topic a door may publish to: an administrator's own reply topic under
    this site, nothing else (not another door's events, commands or status)."""
    if not isinstance(topic, str):
        return False
    parts = topic.split("/")
    return (len(parts) == 4 and parts[0] == ROOT and parts[1] == site and parts[3] == "reply"
            and _SAFE_SEGMENT.fullmatch(parts[2]) is not None)


def publishable(topic: str) -> bool:
    """A topic the broker will accept in a PUBLISH: UTF-8, no wildcards, no NUL, not too long."""
    if not isinstance(topic, str) or not topic or "+" in topic or "#" in topic or "\0" in topic:
        return False
    try:
        encoded = topic.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return len(encoded) <= MAX_TOPIC_BYTES and not any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in topic)
