"""The broker connection, shared by the door and the administrator's tools.

paho-mqtt 2.x on its own network thread. MQTT 5 with a session that outlives a disconnect;
with protocol "auto" a broker that refuses version 5 gets 3.1.1 (with a clean session: see _make_client).
"Connected" means the broker accepted us (a CONNACK with success), never just a TCP socket.
"""

import logging
import socket
import ssl
import threading
import time
from typing import Callable, List, Optional, Tuple

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from appliance.config import MqttConfig
from appliance.errors import ConfigError, LinkError
from appliance.mqtt import topics
from appliance.keys import read_secret_file

log = logging.getLogger(__name__)

# CONNACK codes that mean "this broker does not speak MQTT 5"
_UNSUPPORTED_VERSION = {1, 132}



class MqttLink:
    def __init__(self, config: MqttConfig, client_id: str, will: Optional[Tuple[str, bytes]] = None,
                 persistent: bool = True) -> None:
        self.config = config
        self.client_id = client_id
        self.will = will
        self.persistent = persistent
        self.connected = threading.Event()
        # connected and every standing subscription acknowledged: before this a command or a reply
        # sent to us could be dropped by the broker
        self.ready = threading.Event()
        self._awaiting_subacks = set()
        self.refused: Optional[str] = None  # why the broker said no, when it did
        self.on_connected: List[Callable[[], None]] = []
        self.on_disconnected: List[Callable[[], None]] = []
        self.on_message: Optional[Callable[[mqtt.MQTTMessage], None]] = None
        self.on_published: Optional[Callable[[int], None]] = None
        self.subscriptions: List[str] = []
        self.version5 = config.protocol != "3.1.1"
        self._lock = threading.Lock()
        self._pending_subscriptions = {}
        self._stopping = False
        self._failures = 0
        self._next_failure_log = 0.0
        self._client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        protocol = mqtt.MQTTv5 if self.version5 else mqtt.MQTTv311
        # MQTT 3.1.1 hands a door the commands queued in its session without their retain flag,
        # so a retained command would pass as a live one: on 3.1.1 a door keeps no session, and
        # what it missed comes through its signed sync request instead
        kwargs = {} if self.version5 else {"clean_session": True}
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=protocol,
                             **kwargs)
        config = self.config
        if config.username:
            password = read_secret_file(config.password_file, "MQTT password file").decode() \
                if config.password_file else None
            client.username_pw_set(config.username, password)
        if config.tls:
            if not config.ca_file:
                raise ConfigError("mqtt.tls is on but mqtt.ca_file is empty: give the CA certificate "
                                  "that signed the broker's certificate (or set mqtt.tls = false on a "
                                  "trusted network)")
            if config.key_file:
                read_secret_file(config.key_file, "MQTT client key")  # refuses a world-readable key
            try:
                client.tls_set(ca_certs=config.ca_file, certfile=config.cert_file or None,
                               keyfile=config.key_file or None, cert_reqs=ssl.CERT_REQUIRED,
                               tls_version=ssl.PROTOCOL_TLS_CLIENT)
            except (OSError, ssl.SSLError, ValueError) as err:
                raise ConfigError("MQTT TLS files: %s" % err) from err
        if self.will:
            client.will_set(self.will[0], self.will[1], qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.max_inflight_messages_set(100)
        client.on_connect = self._connected
        client.on_connect_fail = self._connect_failed
        client.on_disconnect = self._disconnected
        client.on_message = self._message
        client.on_publish = self._published
        client.on_subscribe = self._subscribed
        return client

    def start(self) -> None:
        properties = None
        kwargs = {}
        if self.version5:
            properties = Properties(PacketTypes.CONNECT)
            if self.persistent:
                properties.SessionExpiryInterval = int(self.config.session_expiry_hours * 3600)
            kwargs["clean_start"] = not self.persistent
        try:
            self._client.connect_async(self.config.host, self.config.port, self.config.keepalive,
                                       properties=properties, **kwargs)
        except (OSError, ValueError) as err:
            raise LinkError("cannot reach MQTT broker %s:%d: %s" % (self.config.host, self.config.port, err)) from err
        self._client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        """True once the broker accepted us and acknowledged the standing subscriptions."""
        return self.ready.wait(timeout)

    def _connected(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            code = reason_code.value
            if self.version5 and self.config.protocol == "auto" and code in _UNSUPPORTED_VERSION:
                log.warning("broker refuses MQTT 5: falling back to 3.1.1")
                threading.Thread(target=self._fall_back, daemon=True).start()
                return
            self.refused = str(reason_code)
            log.error("MQTT broker %s refused the connection: %s", self.config.host, reason_code)
            return
        self.refused = None
        with self._lock:
            self._awaiting_subacks = {self._subscribe_on(client, topic)[1] for topic in self.subscriptions}
            if not self._awaiting_subacks:
                self.ready.set()
        self.connected.set()
        log.info("MQTT connected to %s:%d", self.config.host, self.config.port)
        for callback in self.on_connected:
            callback()

    def _connect_failed(self, client, userdata) -> None:
        """paho retries on its own and says nothing: say why, and when it tries again (once a minute
        at most, so a broker that is down for hours does not flood the log)."""
        self._failures += 1
        now = time.monotonic()
        if now < self._next_failure_log:
            return
        self._next_failure_log = now + 60
        log.warning("cannot connect to the MQTT broker %s:%d (%s); retrying every 1 to 30 s, attempt %d",
                    self.config.host, self.config.port, self._why_unreachable(), self._failures)

    def _why_unreachable(self) -> str:
        try:
            with socket.create_connection((self.config.host, self.config.port), timeout=3):
                return "it accepts TCP but not this MQTT connection: check mqtt.port, TLS and the credentials"
        except OSError as err:
            return err.strerror or str(err)

    def _fall_back(self) -> None:
        self._client.loop_stop()
        self.version5 = False
        self._client = self._make_client()
        self.start()

    def _disconnected(self, client, userdata, flags, reason_code, properties) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        self.ready.clear()
        if was_connected and not self._stopping:
            log.warning("MQTT disconnected (%s); reconnecting", reason_code)
            for callback in self.on_disconnected:
                callback()

    def _message(self, client, userdata, message) -> None:
        if self.on_message is not None:
            try:
                self.on_message(message)
            except Exception:  # a handler bug must not kill the network thread
                log.exception("handling MQTT message on %s", message.topic)

    def _published(self, client, userdata, mid, reason_code, properties) -> None:
        if self.on_published is not None and not reason_code.is_failure:
            try:
                self.on_published(mid)
            except Exception:  # as in _message: a handler bug must not kill the network thread
                log.exception("handling the acknowledgement of message %d", mid)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                correlation: Optional[bytes] = None) -> int:
        """Publish; returns the message id (its acknowledgement arrives through on_published),
        or -1 when the topic is one the broker would refuse: such a PUBLISH makes the broker drop
        the connection, and paho would send it again after every reconnect."""
        if not topics.publishable(topic):
            log.error("not publishing to the malformed topic %r", topic)
            return -1
        properties = None
        if correlation is not None and self.version5:
            properties = Properties(PacketTypes.PUBLISH)
            properties.CorrelationData = correlation
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        return info.mid

    def request_properties(self, response_topic: str, correlation: bytes) -> Optional[Properties]:
        if not self.version5:
            return None
        properties = Properties(PacketTypes.PUBLISH)
        properties.ResponseTopic = response_topic
        properties.CorrelationData = correlation
        return properties

    def publish_request(self, topic: str, payload: bytes, response_topic: str, correlation: bytes) -> int:
        info = self._client.publish(topic, payload, qos=1,
                                    properties=self.request_properties(response_topic, correlation))
        return info.mid

    def subscribe(self, topic: str, timeout: float = 5.0) -> bool:
        """Subscribe now (and on every reconnect); True once the broker acknowledged it."""
        self.subscriptions.append(topic)
        if not self.connected.is_set():
            return False
        done = threading.Event()
        with self._lock:
            _, mid = self._subscribe_on(self._client, topic)
            self._pending_subscriptions[mid] = done
        return done.wait(timeout)

    def _subscribe_on(self, client: mqtt.Client, topic: str):
        if not self.version5:  # 3.1.1 flags retained messages only when delivered on subscription
            return client.subscribe(topic, qos=1)
        # retain-as-published: a retained command keeps its flag even when delivered live
        return client.subscribe(topic, options=SubscribeOptions(qos=1, retainAsPublished=True))

    def _subscribed(self, client, userdata, mid, reason_codes, properties) -> None:
        with self._lock:
            done = self._pending_subscriptions.pop(mid, None)
            if mid in self._awaiting_subacks:
                self._awaiting_subacks.discard(mid)
                if not self._awaiting_subacks:
                    self.ready.set()
        if done is not None:
            done.set()

    def stop(self, final: Optional[Tuple[str, bytes]] = None) -> None:
        """Disconnect cleanly, first publishing `final` (e.g. a retained offline status)."""
        self._stopping = True
        if final is not None and self.connected.is_set():
            info = self._client.publish(final[0], final[1], qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=2)
            except (RuntimeError, ValueError):
                pass
        self._client.disconnect()
        self._client.loop_stop()
        self.connected.clear()
        self.ready.clear()
