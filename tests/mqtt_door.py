"""A door's MQTT side in its own process, for kill tests: `python mqtt_door.py CONFIG.json [EVENTS]`.

It records EVENTS new audit events (if given) and publishes until killed. No camera and no
models: this process exercises the outbox, the last will and the command path only.
"""

import json
import signal
import sys
import threading

from appliance.audit import AuditStore, Event
from appliance.config import from_dict
from appliance.door.controller import DoorController
from appliance.door.relay import NoRelay
from appliance.mqtt.device import DeviceAgent


def main() -> int:
    config = from_dict(json.loads(open(sys.argv[1]).read()), sys.argv[1])
    audit = AuditStore(config.audit.path)
    for number in range(int(sys.argv[2]) if len(sys.argv) > 2 else 0):
        audit.record(Event("deny", frames=[number]))
    controller = DoorController(config.door, NoRelay(), audit)
    agent = DeviceAgent(config, controller, audit, config.gallery.path, "mobilefacenet_128d")
    agent.start()
    print("started", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    agent.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
