"""The web page beside the door: face-to-relay with the live view open (one browser-like viewer,
then a hostile one), and the page process's memory.

Latency: bench/door.py's clip and measure, three runs: the page off; on, with a viewer polling the
live state and frame at web.live_fps as live.js does; on, with four connections fetching frames
and pages as fast as they can. Memory: the page process's resident set after the pages were
served, and after a photo was tested (the page then holds its own models).
"""

import contextlib
import http.client
import os
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

from bench.door import ROOT, SEED, _memory_kib, measure_latency
from bench.harness import benchmark

PASSWORD = "bench passphrase"


class Client:
    """A logged-in browser, as far as the page can tell."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookie = ""
        status, headers, _ = self.request("GET", "/login")
        pre = headers.get("Set-Cookie", "").split(";")[0]
        token = pre.split("=", 1)[1]
        self.cookie = pre
        status, headers, _ = self.request("POST", "/login", {"user": "bench", "password": PASSWORD, "csrf": token})
        if status != 303:
            raise RuntimeError("the bench could not log in (%d)" % status)
        self.cookie = headers["Set-Cookie"].split(";")[0]

    def request(self, method, path, form=None, body=None, content_type=None):
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=30,
                                                 context=ssl._create_unverified_context())
        headers = {"Cookie": self.cookie} if self.cookie else {}
        if form is not None:
            body = urllib.parse.urlencode(form)
            content_type = "application/x-www-form-urlencoded"
        if content_type:
            headers["Content-Type"] = content_type
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        result = response.status, dict(response.getheaders()), response.read()
        connection.close()
        return result


def _page_config(config, folder: Path, port: int) -> Path:
    path = folder / "page.toml"
    path.write_text('[models]\ndir = "%s"\n[gallery]\npath = "%s"\n[audit]\npath = "%s"\n[web]\nenabled = true\n'
                    'address = "127.0.0.1"\nport = %d\nusers_file = "%s"\ncert_file = "%s"\nkey_file = "%s"\n'
                    'live_dir = "%s"\n' % (config.models.dir, config.gallery.path, config.audit.path, port,
                                           config.web.users_file, config.web.cert_file, config.web.key_file,
                                           config.web.live_dir))
    return path


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _web_sections(folder_name: str, port: int) -> dict:
    base = Path(os.environ.get("TMPDIR", "/tmp")) / folder_name
    base.mkdir(parents=True, exist_ok=True)
    return {"web": {"enabled": True, "address": "127.0.0.1", "port": port, "users_file": str(base / "users.json"),
                    "cert_file": str(base / "cert.pem"), "key_file": str(base / "key.pem"),
                    "live_dir": str(base / "live")}}


@contextlib.contextmanager
def _serving(config, folder: Path):
    """`facegate web serve` for `config` with a bench user, and a client logged in to it."""
    from appliance.web.auth import Users

    Users(config.web.users_file).set("bench", PASSWORD)
    process = subprocess.Popen([sys.executable, "-m", "appliance", "web", "serve", "--config",
                                str(_page_config(config, folder, config.web.port))], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client = Client(config.web.port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)  # the page's process is starting
        yield process, client
    finally:
        process.terminate()
        process.wait(timeout=20)


def _page_with(viewers: int, hostile: bool):
    """The page process beside the door, and its viewers while the door plays."""
    @contextlib.contextmanager
    def beside(config, folder):
        stop = threading.Event()
        counts = {"requests": 0}
        with _serving(config, folder) as (_, client):
            def viewer():
                period = 1.0 / config.web.live_fps
                while not stop.is_set():
                    client.request("GET", "/live/state.json")
                    client.request("GET", "/live/frame.jpg")
                    counts["requests"] += 2
                    stop.wait(period)

            def hammer():
                paths = ("/live/frame.jpg", "/attempts", "/people", "/live/state.json")
                index = 0
                while not stop.is_set():
                    client.request("GET", paths[index % len(paths)])
                    counts["requests"] += 1
                    index += 1
            threads = [threading.Thread(target=viewer, daemon=True) for _ in range(viewers)]
            threads += [threading.Thread(target=hammer, daemon=True) for _ in range(4 if hostile else 0)]
            for thread in threads:
                thread.start()
            yield counts
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
    return beside


@benchmark("web_beside_door")
def web_beside_door() -> dict:
    results = {"protocol": __doc__.strip().split("\n\n")[1].replace("\n", " ")}
    results["page_off"] = measure_latency()
    results["live_view_open"] = measure_latency(_web_sections("facegate-bench-web1", _free_port()),
                                                _page_with(1, False))
    results["hostile_browser"] = measure_latency(_web_sections("facegate-bench-web2", _free_port()),
                                                 _page_with(1, True))
    off = results["page_off"]["latency"]["median_ms"]
    for key in ("live_view_open", "hostile_browser"):
        latency = results[key]["latency"]
        results[key]["median_vs_page_off"] = round(latency["median_ms"] / off, 3)
    results["page_memory"] = page_memory()
    return results


def page_memory() -> dict:
    """The page process's resident memory: serving pages, then with its models after a photo test."""
    import tempfile

    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        port = _free_port()
        from appliance.config import from_dict

        config = from_dict({"models": {"dir": os.environ.get("FACEGATE_MODELS_DIR", "models")},
                            **{k: v for k, v in _web_sections("facegate-bench-web3", port).items()},
                            "gallery": {"path": str(folder / "gallery.db")}, "audit": {"path": str(folder / "a.db")}})
        subprocess.run([sys.executable, "-m", "appliance", "enroll", "--from-dir", str(SEED / "gallery"),
                        "--gallery", str(folder / "gallery.db")], cwd=ROOT, check=True, capture_output=True)
        with _serving(config, folder) as (process, client):
            for path in ("/people", "/attempts", "/door", "/live", "/tune"):
                client.request("GET", path)
            serving = _memory_kib(process.pid)
            photo = (SEED / "probes" / "obama.jpg").read_bytes()
            boundary = "facegatebench"
            body = client.request("GET", "/attempts")[2].decode()
            token = body.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            form = ("--%s\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n%s\r\n--%s\r\nContent-Disposition: "
                    "form-data; name=\"photo\"; filename=\"obama.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n"
                    % (boundary, token, boundary)).encode() + photo + ("\r\n--%s--\r\n" % boundary).encode()
            status, _, answer = client.request("POST", "/attempts/test", body=form,
                                               content_type="multipart/form-data; boundary=" + boundary)
            if status != 200 or b"ACCEPTED as obama" not in answer:
                raise RuntimeError("the page's photo test did not name obama (%d)" % status)
            with_models = _memory_kib(process.pid)
    return {"serving_rss_mib": round(serving["VmRSS"] / 1024, 1),
            "after_photo_test_rss_mib": round(with_models["VmRSS"] / 1024, 1),
            "peak_rss_mib": round(with_models["VmHWM"] / 1024, 1),
            "machine": "this x86-64 host, onnxruntime; the board's rknnlite runtime differs"}
