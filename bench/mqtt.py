"""MQTT figures on a real mosquitto on loopback: enrolment round trip, audit events delivered per second.

Round trip: the admin client signs an `enroll` with one seed JPEG (112 KB), the door checks it,
detects, aligns, embeds, stores it and replies; measured from publish to reply, 20 times.
Events: 2000 audit events recorded at once; time until a subscriber has received them all.
"""

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from appliance.admin.client import AdminClient
from appliance.audit import AuditStore, Event
from appliance.config import from_dict
from appliance.door.controller import DoorController
from appliance.door.relay import NoRelay
from appliance.mqtt.device import DeviceAgent
from appliance.mqtt.payload import encode_photo
from appliance.keys import PrivateKey, Trusted, TrustedKeys, write_private
from appliance.vision.pipeline import FacePipeline

from bench.harness import benchmark, summarise
from bench.vision import SHARED

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from broker import Broker  # noqa: E402  (the same broker helper the tests use)

PHOTO = SHARED / "data" / "seed-samples" / "gallery" / "obama" / "obama_1.jpg"


@benchmark("mqtt")
def mqtt_figures() -> dict:
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        broker = Broker(folder)
        admin_key, door_key = PrivateKey.generate(), PrivateKey.generate()
        write_private(str(folder / "door.key"), door_key)
        (folder / "admin.pub").write_text("admin admin %s\n" % admin_key.public.hex)
        config = from_dict({"models": {"dir": os.environ.get("FACEGATE_MODELS_DIR", "models")},
                            "gallery": {"path": str(folder / "gallery.db")},
                            "audit": {"path": str(folder / "audit.db")},
                            "mqtt": {"enabled": True, "host": "127.0.0.1", "port": broker.port, "tls": False,
                                     "site": "bench", "device": "door", "signing_key_file": str(folder / "door.key"),
                                     "trusted_keys_file": str(folder / "admin.pub"),
                                     "state_path": str(folder / "state.db")}})
        pipeline = FacePipeline.from_config(config)
        audit = AuditStore(config.audit.path, max_events=100000)
        controller = DoorController(config.door, NoRelay(), audit)
        agent = DeviceAgent(config, controller, audit, config.gallery.path, pipeline.embedder.model_id, pipeline)
        agent.start()
        agent.link.wait_connected(10)
        admin = AdminClient(config.mqtt, admin_key, TrustedKeys([Trusted("door", "door", door_key.public)]))
        admin.connect()
        try:
            photo = encode_photo(PHOTO)
            samples = []
            for number in range(20):
                started = time.perf_counter()
                replies = admin.send("door", "enroll", {"person_id": "p%d" % number, "name": "person %d" % number,
                                                        "photos": [photo]})
                samples.append((time.perf_counter() - started) * 1000)
                assert replies and replies[0]["ok"], replies
            events_per_second = _event_rate(broker.port, controller, 2000)
        finally:
            admin.close()
            agent.stop()
            controller.shutdown()
            pipeline.close()
            broker.stop()
    return {"protocol": "mosquitto 2.0 on loopback, MQTT 5, QoS 1; enroll with one %d KB JPEG, 20 runs; "
                        "2000 events to one subscriber" % (PHOTO.stat().st_size // 1024),
            "enroll_round_trip": summarise(samples), "audit_events_per_second": events_per_second}


def _event_rate(port: int, controller, count: int) -> float:
    received = set()
    done = threading.Event()

    def on_message(client, userdata, message) -> None:
        received.add(json.loads(message.payload)["uid"])
        if len(received) >= count:
            done.set()

    subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    subscriber.on_message = on_message
    subscriber.connect("127.0.0.1", port)
    subscriber.subscribe("facegate/bench/door/events", qos=1)
    subscriber.loop_start()
    time.sleep(0.5)
    started = time.perf_counter()
    for number in range(count):
        controller.emit(Event("deny", frames=[number]))
    done.wait(120)
    elapsed = time.perf_counter() - started
    subscriber.loop_stop()
    subscriber.disconnect()
    return round(len(received) / elapsed, 1)
