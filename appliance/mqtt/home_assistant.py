"""Home Assistant MQTT discovery: each door appears as a device with read-only entities.

Opt-in (`mqtt.home_assistant`). On every connection the door publishes retained discovery
messages under `<prefix>/<component>/<node>/<object>/config`. The entities read topics the door
publishes anyway: its retained status (lock and door as binary sensors, access and door state as
enum sensors, last decision and its time, faults and unsent events as diagnostics; also the
availability, from the status's "state", which the last will turns to offline), a `decision`
topic carrying each grant and denial as a Home Assistant event, and with snapshots on (opt-in:
a face) the last decision's picture for an image entity.

Nothing here can unlock: no entity has a command topic. A door opens from the network only by
a signed `unlock` (`facegate admin unlock`), which Home Assistant cannot make without the
administrator's private key.
"""

import json
import re
from typing import Any, Dict, List, Tuple

from appliance.mqtt import topics

DEFAULT_PREFIX = "homeassistant"
# the audit kinds the decision entity reports: someone was let in, refused, or let out
DECISION_KINDS = ("grant", "deny", "remote_unlock", "exit")

_OPEN = ("open", "held_open", "forced_open")  # the door contact says open
_RELEASED = ("unlocked", "open", "held_open")  # the strike released (forced_open: opened while locked)
ACCESS_SHOWN = ("ready", "granted", "fault")  # detecting, verifying, denied, cooldown pass in a second

# object id, component, name, value template, extra fields. Binary sensors for what is on or off
# (a lock entity would need a command topic, and nothing here may open the door); enum sensors
# with their options; a timestamp; fault and unsent events as diagnostics.
_ENTITIES = (
    ("lock", "binary_sensor", "Lock", "{{ 'ON' if value_json.door in %s else 'OFF' }}" % list(_RELEASED),
     {"device_class": "lock"}),  # ON means unlocked, as Home Assistant's lock class reads it
    ("door", "binary_sensor", "Door", "{{ 'ON' if value_json.door in %s else 'OFF' }}" % list(_OPEN),
     {"device_class": "door"}),
    ("door_state", "sensor", "Door state", "{{ value_json.door }}",
     {"device_class": "enum", "options": ["closed", "unlocked", "open", "held_open", "forced_open"],
      "icon": "mdi:door"}),
    # only the states that last: the camera-speed passage through detecting and verifying would
    # fill the history with entries nobody reads
    ("access", "sensor", "Access",
     "{{ value_json.access if value_json.access in ['granted', 'fault'] else 'ready' }}",
     {"device_class": "enum", "options": list(ACCESS_SHOWN), "icon": "mdi:face-recognition"}),
    ("last_person", "sensor", "Last person",
     "{{ (value_json.last_decision or {}).person_name or 'nobody' }}", {"icon": "mdi:account"}),
    ("last_decision", "sensor", "Last decision",
     "{{ (value_json.last_decision or {}).kind or 'none' }}",
     {"device_class": "enum", "options": ["none", "grant", "deny", "remote_unlock", "exit"],
      "icon": "mdi:shield-account"}),
    ("last_decision_time", "sensor", "Last decision time",
     "{{ (value_json.last_decision or {}).time or None }}", {"device_class": "timestamp"}),
    ("unsent_events", "sensor", "Unsent events", "{{ value_json.unsent_events }}",
     {"state_class": "measurement", "icon": "mdi:tray-full", "entity_category": "diagnostic"}),
    ("fault", "binary_sensor", "Fault", "{{ 'ON' if value_json.faults else 'OFF' }}",
     {"device_class": "problem", "entity_category": "diagnostic", "json_attributes_topic": None,
      "json_attributes_template": "{{ {'faults': value_json.faults} | to_json }}"}),
)


def node_id(site: str, device: str) -> str:
    """Home Assistant allows letters, digits, _ and - in a discovery topic's node id."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", "facegate_%s_%s" % (site, device))


def snapshot_topic(site: str, device: str) -> str:
    """The last decision's picture as raw JPEG bytes (opt-in: it is a face)."""
    return topics.base(site, device) + "/snapshot"


def discovery(site: str, device: str, version: str, prefix: str = DEFAULT_PREFIX, area: str = "",
              snapshots: bool = False) -> List[Tuple[str, bytes]]:
    """(topic, payload) for every entity of this door, to publish retained. With `snapshots`, an
    image entity shows the last decision's picture; without, any earlier one is removed."""
    node = node_id(site, device)
    status = topics.status(site, device)
    shared = {
        "availability_topic": status,
        "availability_template": "{{ value_json.state }}",
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": {"identifiers": [node], "name": "FaceGate %s" % device, "manufacturer": "FaceGate",
                   "model": "face-recognition door", "sw_version": version, "suggested_area": area or device},
        "origin": {"name": "FaceGate", "sw_version": version},
    }
    messages = []
    for object_id, component, name, template, extra in _ENTITIES:
        config: Dict[str, Any] = dict(shared, name=name, unique_id="%s_%s" % (node, object_id),
                                      state_topic=status, value_template=template)
        config.update({k: (status if v is None else v) for k, v in extra.items()})
        messages.append((_config_topic(prefix, component, node, object_id), _encode(config)))
    event = dict(shared, name="Decision", unique_id="%s_decision" % node, state_topic=topics.decision(site, device), event_types=list(DECISION_KINDS),
                 icon="mdi:door-open")
    messages.append((_config_topic(prefix, "event", node, "decision"), _encode(event)))
    image = dict(shared, name="Last snapshot", unique_id="%s_snapshot" % node,
                 image_topic=snapshot_topic(site, device), content_type="image/jpeg")
    # an empty retained config removes the entity: turning snapshots off takes the face away too
    messages.append((_config_topic(prefix, "image", node, "snapshot"), _encode(image) if snapshots else b""))
    return messages


def decision_payload(event) -> bytes:
    """A grant or denial as Home Assistant's event entity reads it: event_type plus attributes."""
    return _encode({"event_type": event.kind, "person_id": event.person_id, "person_name": event.person_name,
                    "distance": event.distance, "time": event.time,
                    "reason": (event.detail or {}).get("reason")})


def _config_topic(prefix: str, component: str, node: str, object_id: str) -> str:
    return "%s/%s/%s/%s/config" % (prefix, component, node, object_id)


def _encode(value: Dict[str, Any]) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")
