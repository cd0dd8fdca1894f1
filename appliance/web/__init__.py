"""The door's web page (`web.enabled`): served by its own process, which `facegate run` starts and
restarts, so a crash or a hostile browser there never takes the door down or delays a decision.

Built on bottle (one pure-Python file, MIT, no dependencies) and the standard library's WSGI
server and TLS: nothing to compile for either board, a few MB of memory.
"""

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Optional

from appliance.config import Config

log = logging.getLogger(__name__)


def page_address(config: Config) -> str:
    host = config.web.address if config.web.address not in ("0.0.0.0", "::") else "localhost"
    return "%s://%s:%d/" % ("https" if config.web.https else "http", host, config.web.port)


def serve(config: Config, config_path: Optional[str]) -> None:
    """Run the page until the process is stopped."""
    from appliance.web.app import make_app
    from appliance.web.auth import Users, setup_code as read_setup_code
    from appliance.web.server import BoundedServer

    _yield_to_the_door()
    web = config.web
    context = None
    if web.https:
        from appliance.web.tls import fingerprint, server_context

        context, made = server_context(web.cert_file, web.key_file)
        log.warning("web page: certificate %s%s, SHA-256 %s", web.cert_file, " (made now)" if made else "",
                    fingerprint(Path(web.cert_file)))
    setup_code = None
    if not Users(web.users_file).any():
        code_file = Path(web.users_file).with_name("web-setup-code")
        setup_code = read_setup_code(code_file)
        log.warning("web page: no users yet; make the first at %ssetup with the code in %s, or run "
                    "'facegate web passwd USER'", page_address(config), code_file)
    app = make_app(config, config_path, setup_code)
    server = BoundedServer((web.address, web.port), app, web.max_connections, context)
    log.warning("web page: serving %s", page_address(config))
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()


def _yield_to_the_door() -> None:
    """The page runs only on CPU time the door leaves idle (SCHED_IDLE, inherited by its threads):
    a browser hammering it slows the page, not the door. Where that policy is missing, the lowest
    nice level."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.nice(19)
        except OSError:
            pass


class WebChild:
    """The page's process, started with the door and restarted (at most once a minute) if it
    dies; stopped with the door."""

    FIRST_RESTART_SECONDS = 1.0
    MAX_RESTART_SECONDS = 60.0  # a page that keeps failing costs the board one start a minute

    def __init__(self, argv: List[str]) -> None:
        self.argv = argv
        self.process: Optional[subprocess.Popen] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep, name="web-child", daemon=True)

    def start(self) -> "WebChild":
        self._thread.start()
        return self

    def _keep(self) -> None:
        delay = self.FIRST_RESTART_SECONDS
        while not self._stop.is_set():
            started = time.monotonic()
            self.process = subprocess.Popen(self.argv, preexec_fn=_end_with_parent)
            code = self.process.wait()
            if self._stop.is_set():
                return
            if time.monotonic() - started > self.MAX_RESTART_SECONDS:
                delay = self.FIRST_RESTART_SECONDS  # it had been running well: a fresh failure
            log.error("the web page's process ended (exit %s); the door goes on, the page restarts in %.0f s",
                      code, delay)
            self._stop.wait(delay)
            delay = min(delay * 2, self.MAX_RESTART_SECONDS)

    def close(self) -> None:
        self._stop.set()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _end_with_parent() -> None:
    """In the page's process before it starts: the kernel ends it if the door's process dies
    (even by SIGKILL), so no orphaned page holds the port the next door's page needs."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def child_argv(config_path: Optional[str], flags: List[str]) -> List[str]:
    return [sys.executable, "-m", "appliance", "web", "serve"] + (["--config", config_path] if config_path else []) \
        + flags
