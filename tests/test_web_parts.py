"""The web page's parts without a browser: passwords, lockouts, sessions, the folder the door and
the page share, and a server that a silent client cannot hold up."""

import io
import json
import os
import socket
import ssl
import threading
import time
import urllib.request

import numpy as np
import pytest

from appliance.errors import FaceGateError
from appliance.web.auth import Sessions, Throttle, Users, check_password, hash_password
from appliance.web.door_link import DoorLink
from appliance.web.live import LiveFeed
from conftest import wait_until


def test_a_phone_photo_stored_sideways_is_decoded_upright_and_a_truncated_one_is_still_refused():
    from PIL import Image

    from appliance.vision.images import ImageError, decode

    upright = Image.new("RGB", (120, 200), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(stored, "JPEG", exif=exif.tobytes())
    assert decode(stored.getvalue()).shape == (200, 120, 3)
    with pytest.raises(ImageError, match="not a readable image"):
        decode(stored.getvalue()[: len(stored.getvalue()) // 2], "half.jpg")


def test_passwords_are_scrypt_hashes_checked_in_full_and_weak_ones_refused(tmp_path):
    stored = hash_password("a long passphrase")
    assert stored.startswith("scrypt$16384$8$1$") and "a long passphrase" not in stored
    assert check_password("a long passphrase", stored)
    assert not check_password("a long passphrasE", stored) and not check_password("", stored)
    assert not check_password("a long passphrase", "md5$whatever")
    users = Users(str(tmp_path / "users.json"))
    with pytest.raises(FaceGateError, match="at least 10"):
        users.set("ada", "short")
    with pytest.raises(FaceGateError, match="user name"):
        users.set("ada lovelace", "a long passphrase")
    assert not users.any()
    users.set("ada", "a long passphrase")
    assert os.stat(tmp_path / "users.json").st_mode & 0o777 == 0o600
    assert users.check("ada", "a long passphrase") and not users.check("ada", "a wrong passphrase")
    assert not users.check("nobody", "a long passphrase")


def test_wrong_passwords_lock_out_the_user_and_the_address_until_the_lockout_ends():
    throttle = Throttle(attempts=3, lockout_seconds=0.3)
    keys = ("user:ada", "address:10.0.0.9")
    assert not throttle.failed(*keys) and not throttle.failed(*keys)
    throttle.succeeded(*keys)  # a right password starts the count again
    assert not throttle.failed(*keys) and not throttle.failed(*keys)
    assert throttle.failed(*keys)  # the third in a row
    assert throttle.locked("user:ada") > 0 and throttle.locked("address:10.0.0.9") > 0
    assert throttle.locked("user:bob", "address:10.0.0.9") > 0  # another name from that address too
    assert throttle.locked("user:bob", "address:10.0.0.10") == 0
    assert wait_until(lambda: throttle.locked(*keys) == 0, timeout=2)


def test_sessions_end_when_idle_or_logged_out_and_a_flood_of_logins_stays_bounded():
    sessions = Sessions(idle_seconds=0.3, limit=4)
    token, session = sessions.start("ada", "10.0.0.9")
    assert sessions.get(token) is session and len(session.csrf) >= 24
    assert sessions.get("forged") is None and sessions.get(None) is None
    sessions.end(token)
    assert sessions.get(token) is None
    tokens = [sessions.start("ada", "10.0.0.9")[0] for _ in range(10)]
    assert sum(sessions.get(t) is not None for t in tokens) == 4  # the oldest went first
    newest = sessions.get(tokens[-1])
    assert wait_until(lambda: time.monotonic() - newest.last > 0.35, timeout=2)  # idle, untouched
    assert sessions.get(tokens[-1]) is None


def test_the_door_publishes_frames_only_while_watched_and_answers_the_pages_requests(tmp_path):
    from types import SimpleNamespace

    asked = []

    def handle(request):
        asked.append(request)
        if request["verb"] == "explode":
            raise ValueError("no such thing")
        return {"ok": True}

    feed = LiveFeed(str(tmp_path / "live"), fps=10, status=lambda: {"running": True, "time": time.time()},
                    handle_request=handle)
    link = DoorLink(str(tmp_path / "live"))
    try:
        image = np.full((480, 640, 3), 90, np.uint8)
        face = SimpleNamespace(box=np.array([100.0, 120.0, 220.0, 260.0, 0.99]))
        outcome = SimpleNamespace(kind="tracking", track=SimpleNamespace(face=face), decision=None,
                                  result=SimpleNamespace(quality=SimpleNamespace(passed=False,
                                                                                 reasons=["blurred: sharpness 3"]),
                                                         live_score=None))
        assert wait_until(lambda: (feed.offer(image, outcome), link.status().get("running"))[1], timeout=3)
        assert link.frame() is None  # nobody watches: no frame written
        assert os.stat(tmp_path / "live").st_mode & 0o777 == 0o700
        link.watch()
        feed._next_watch_check = 0.0  # noqa: SLF001 - the next offer looks at `watching` again
        assert wait_until(lambda: (feed.offer(image, outcome), link.frame())[1] is not None, timeout=3)
        faces = link.faces()["faces"]
        assert faces == [{"box": [100.0, 120.0, 220.0, 260.0], "name": None, "reasons": ["blurred: sharpness 3"]}]
        replies = {}

        def ask(verb):
            replies[verb] = link.ask(verb, {"via": "web", "user": "ada"}, timeout=5)
        asking = [threading.Thread(target=ask, args=(verb,)) for verb in ("relay_test", "explode")]
        for thread in asking:
            thread.start()
        while any(thread.is_alive() for thread in asking):
            feed.offer(None)
            time.sleep(0.05)
        assert replies["relay_test"] == {"ok": True}
        assert replies["explode"] == {"ok": False, "error": "no such thing"}
        assert {r["verb"] for r in asked} == {"relay_test", "explode"} and asked[0]["origin"]["user"] == "ada"
    finally:
        feed.close()
    assert link.status()["running"] is False


def test_a_page_whose_door_is_silent_says_so_and_asks_nothing(tmp_path):
    link = DoorLink(str(tmp_path / "nowhere"))
    assert "has not started" in link.status()["why"]
    (tmp_path / "stale").mkdir()
    (tmp_path / "stale" / "status.json").write_text(json.dumps({"running": True, "time": time.time() - 60}))
    stale = DoorLink(str(tmp_path / "stale"))
    assert stale.status()["running"] is False and "60 s" in stale.status()["why"]
    assert stale.ask("relay_test", {}) == {"ok": False, "error": "the door is not running"}


def test_a_silent_client_holding_the_tls_handshake_does_not_hold_up_the_next_browser(tmp_path):
    from appliance.web.server import BoundedServer
    from appliance.web.tls import server_context

    context, made = server_context(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    assert made and os.stat(tmp_path / "key.pem").st_mode & 0o777 == 0o600

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["wsgi.url_scheme"].encode()]
    server = BoundedServer(("127.0.0.1", 0), app, max_connections=3, tls_context=context)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    port = server.server_address[1]
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]  # connect, then say nothing
    try:
        unverified = ssl._create_unverified_context()
        with urllib.request.urlopen("https://127.0.0.1:%d/" % port, context=unverified, timeout=5) as answer:
            assert answer.read() == b"https"
    finally:
        for client in silent:
            client.close()
        server.shutdown()
        server.server_close()


def test_half_a_certificate_pair_is_an_error_that_says_what_to_do(tmp_path):
    from appliance.web.tls import server_context

    (tmp_path / "cert.pem").write_text("not a certificate")
    with pytest.raises(FaceGateError, match="go together"):
        server_context(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))


@pytest.fixture
def page_server(tmp_path):
    """The page's app without a door behind it, on its real server over HTTPS."""
    from appliance.config import from_dict
    from appliance.web.app import make_app
    from appliance.web.server import BoundedServer
    from appliance.web.tls import server_context

    config = from_dict({"web": {"users_file": str(tmp_path / "users.json"), "live_dir": str(tmp_path / "live")},
                        "gallery": {"path": str(tmp_path / "gallery.db")}, "audit": {"path": str(tmp_path / "a.db")}})
    Users(config.web.users_file).set("ada", "a long passphrase")
    context, _ = server_context(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    server = BoundedServer(("127.0.0.1", 0), make_app(config), 4, context)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def raw(port, request: bytes) -> bytes:
    """One request as bytes on the wire, and the whole answer."""
    context = ssl._create_unverified_context()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:
        with context.wrap_socket(plain) as tls:
            tls.sendall(request)
            answer = b""
            while True:
                chunk = tls.recv(65536)
                if not chunk:
                    return answer
                answer += chunk


def test_hostile_requests_are_refused_before_they_cost_anything(page_server):
    chunked = raw(page_server, b"POST /login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                               b"Content-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n\r\n"
                               b"ffffffff\r\n" + b"a" * 1000)
    assert chunked.startswith(b"HTTP/1.0 411")  # a body without end never reaches the disk
    huge = raw(page_server, b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n"
                            b"Connection: close\r\n\r\n")
    assert huge.startswith(b"HTTP/1.0 413")  # refused from the header, nothing read
    odd = "user=ada&password=x&csrf=\u00e9\u00e9".encode()
    strange = raw(page_server, b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
                               b"\r\nContent-Length: %d\r\nCookie: facegate_login=abc\r\nConnection: close\r\n\r\n"
                               % len(odd) + odd)
    assert strange.startswith(b"HTTP/1.0 403")  # not a failure of the page: a refusal
    anonymous = raw(page_server, b"GET /live/state.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert anonymous.startswith(b"HTTP/1.0 401")
    page = raw(page_server, b"GET /people HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert page.startswith(b"HTTP/1.0 303") and b"Location: https://x/login" in page
    for header in (b"Content-Security-Policy: default-src 'self'", b"X-Frame-Options: DENY",
                   b"Strict-Transport-Security"):
        assert header in page


def test_every_pages_header_and_the_door_page_show_what_the_access_panel_tells_this_reader():
    """In reader mode the panel decides, and its answer is the LED and buzzer it commands."""
    import bottle

    from appliance.web.app import HERE

    bottle.TEMPLATE_PATH[:] = [str(HERE / "views")]  # as make_app sets it
    status = {"running": True, "door": "locked", "access": "idle", "faults": {},
              "panel": {"led": "green flashing", "buzzer": True}}
    values = dict(user="ada", csrf="x", message=None, error=None, events=[], csv_query="", update=None,
                  rules={"schedules": [], "groups": []}, selftest=None,
                  filters={key: "" for key in ("kind", "person", "since", "until")})
    html = bottle.template("door.tpl", status=status, **values)
    assert 'id="panel-state" class="state panel" data-led="green">panel: green flashing · buzzer<' in html
    assert "the access panel shows green flashing on this reader's LED and sounds its buzzer" in html
    quiet = bottle.template("door.tpl", status=dict(status, panel={"led": "red", "buzzer": False}), **values)
    assert 'data-led="red">panel: red<' in quiet and "sounds its buzzer" not in quiet
    relay_door = bottle.template("door.tpl", status=dict(status, panel=None), **values)
    assert "panel-state" not in relay_door and "access panel shows" not in relay_door
