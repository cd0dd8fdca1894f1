"""The page's HTTP(S) server: the standard library's WSGI server with a thread per browser, at
most `web.max_connections` at once (more wait in the listen queue), each with a socket timeout,
and the TLS handshake on that thread, so a slow or silent browser holds only its own thread."""

import logging
import socketserver
import ssl
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

log = logging.getLogger(__name__)

SOCKET_SECONDS = 15.0


class _Handler(WSGIRequestHandler):
    timeout = SOCKET_SECONDS

    def get_environ(self):
        environ = super().get_environ()
        if isinstance(self.connection, ssl.SSLSocket):
            environ["HTTPS"] = "on"  # wsgiref's scheme: redirects stay on HTTPS
        return environ

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        log.debug("%s %s", self.address_string(), format % args)

    def handle(self) -> None:
        try:
            super().handle()
        except (OSError, ValueError) as err:  # a browser that went away or spoke no TLS
            log.debug("%s: %s", self.client_address[0], err)


class BoundedServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 32

    def __init__(self, address, app, max_connections: int, tls_context=None) -> None:
        super().__init__(address, _Handler)
        self.set_app(app)
        self._slots = threading.BoundedSemaphore(max_connections)
        if tls_context is not None:
            # the handshake runs on the browser's own thread (first read), never in the accept loop
            self.socket = tls_context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def process_request(self, request, client_address) -> None:
        self._slots.acquire()
        try:
            super().process_request(request, client_address)
        except Exception:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            request.settimeout(SOCKET_SECONDS)
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        log.warning("web page: request from %s failed", client_address[0], exc_info=True)
