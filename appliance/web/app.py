"""The door's web page: routes that check who asks, then call the same gallery, audit, tune and door
commands the CLI and MQTT call (no rules of its own), and render server-side templates.

Every change is a POST with the session's CSRF token, from a page of this origin, and is audited
with its origin {"via": "web", "user", "address"}, as the CLI's and MQTT's are.
"""

import hmac
import logging
import secrets
from pathlib import Path
from typing import Any, Dict, Optional

import bottle

from appliance.config import Config
from appliance.web.auth import Sessions, Throttle, Users
from appliance.web.door_link import DoorLink

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
COOKIE = "facegate_session"
PRE_COOKIE = "facegate_login"  # the login form's CSRF token, before there is a session
OPEN_PATHS = ("/login", "/setup", "/static/", "/favicon.ico")
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; frame-ancestors 'none'; "
                               "form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class Page:
    """What every route needs: the config, users, sessions, the door link and the audit trail."""

    def __init__(self, config: Config, config_path: Optional[str], setup_code: Optional[str]) -> None:
        web = config.web
        self.config = config
        self.config_path = config_path
        self.users = Users(web.users_file)
        self.sessions = Sessions(web.session_minutes * 60)
        self.throttle = Throttle(web.login_attempts, web.lockout_minutes * 60)
        self.door = DoorLink(web.live_dir)
        self.setup_code = setup_code
        self.secure_cookies = web.https
        self._pipeline = None

    # -- who is asking ---------------------------------------------------------------------------
    def session(self):
        return self.sessions.get(bottle.request.get_cookie(COOKIE))

    def origin(self) -> Dict[str, Any]:
        session = self.session()
        return {"via": "web", "user": session.user if session else None, "address": address()}

    def cookie(self, name: str, value: str, max_age: Optional[int] = None) -> None:
        options = {"max_age": max_age} if max_age else {}
        bottle.response.set_cookie(name, value, path="/", httponly=True, secure=self.secure_cookies,
                                   samesite="strict", **options)

    # -- the shared parts ------------------------------------------------------------------------
    def pipeline(self):
        """The models, loaded at the first photo (the page holds none until it needs them)."""
        if self._pipeline is None:
            from appliance.vision.pipeline import FacePipeline

            self._pipeline = FacePipeline.from_config(self.config)
        return self._pipeline

    def gallery(self, model_id=None):
        from appliance.gallery.store import GalleryStore

        return GalleryStore(self.config.gallery.path, model_id=model_id,
                            max_templates=self.config.gallery.max_templates)

    def audit(self):
        from appliance.audit import AuditStore

        return AuditStore(self.config.audit.path)

    def record(self, action: str, person=None, origin=None, **detail) -> None:
        """An audit event of a change made here; `origin` for work that outlives its request."""
        from appliance.cli.common import record_change

        record_change(self.config, action, person, origin=origin or self.origin(), **detail)


def address() -> str:
    return bottle.request.environ.get("REMOTE_ADDR", "?")


def render(name: str, **values) -> str:
    page = values.pop("page")
    session = page.session()
    values.setdefault("message", None)
    values.setdefault("error", None)
    return bottle.template(name, user=session.user if session else None, csrf=session.csrf if session else "",
                           status=page.door.status(), **values)


def make_app(config: Config, config_path: Optional[str] = None, setup_code: Optional[str] = None) -> bottle.Bottle:
    from appliance.web import routes_door, routes_people

    bottle.TEMPLATE_PATH[:] = [str(HERE / "views")]
    bottle.BaseRequest.MEMFILE_MAX = 256 * 1024
    app = bottle.Bottle(catchall=True)
    page = Page(config, config_path, setup_code)
    app.config["facegate.page"] = page
    max_body = int(config.web.max_upload_mb * (1 << 20))

    @app.hook("before_request")
    def guard() -> None:
        request = bottle.request
        if request.method == "POST" and (request.get_header("Transfer-Encoding") or request.content_length < 0):
            bottle.abort(411, "refused: a request body without its length")  # or a body without end
        length = request.content_length
        # a version's bundle is the one upload larger than photos (update.download_max_mb)
        limit = int(config.update.download_max_mb * (1 << 20)) if request.path == "/door/update" else max_body
        if length > limit:
            bottle.abort(413, "at most %g MB per request" % (limit / (1 << 20)))
        path = request.path
        if path.startswith(OPEN_PATHS):
            return
        session = page.session()
        if session is None:
            if request.method == "GET" and not path.endswith((".json", ".jpg", ".png", ".csv")):
                bottle.redirect("/login")
            bottle.abort(401, "log in first")
        if request.method == "POST":
            check_same_origin()
            token = request.forms.get("csrf") or request.get_header("X-CSRF-Token") or ""
            if not same(token, session.csrf):
                log.warning("web page: a change without a valid CSRF token from %s refused", address())
                bottle.abort(403, "refused: this form is stale or did not come from this page (reload it and try again)")

    @app.hook("after_request")
    def headers() -> None:
        for name, value in HEADERS.items():
            bottle.response.set_header(name, value)
        if config.web.https:
            bottle.response.set_header("Strict-Transport-Security", "max-age=31536000")

    @app.error(400)
    @app.error(401)
    @app.error(403)
    @app.error(404)
    @app.error(411)
    @app.error(413)
    @app.error(500)
    def error(err):
        for name, value in HEADERS.items():
            bottle.response.set_header(name, value)
        from appliance.errors import FaceGateError

        if err.status_code == 500 and isinstance(err.exception, FaceGateError):
            bottle.response.status = 400  # a mistyped name, a refused change: said, not a failure
            return bottle.template("error.tpl", user=None, csrf="", status={}, error=str(err.exception),
                                   message=None)
        if err.status_code == 500:
            log.error("web page: %s %s failed: %s\n%s", bottle.request.method, bottle.request.path,
                      err.exception, err.traceback or "")
            return bottle.template("error.tpl", user=None, csrf="", status={}, error="the page failed: %s"
                                   % (err.exception or err.body), message=None)
        return bottle.template("error.tpl", user=None, csrf="", status={}, error=err.body, message=None)

    @app.get("/favicon.ico")
    def favicon():
        bottle.response.status = 204

    @app.route("/static/<name:path>")
    def static(name):
        return bottle.static_file(name, root=str(HERE / "static"))

    @app.get("/login")
    def login_form():
        if not page.users.any():
            bottle.redirect("/setup")
        # kept while it lasts: a second tab, or the browser's own requests, must not void the first form
        token = bottle.request.get_cookie(PRE_COOKIE) or secrets.token_urlsafe(24)
        page.cookie(PRE_COOKIE, token, max_age=3600)
        return bottle.template("login.tpl", user=None, csrf=token, status={}, error=None, message=None)

    @app.post("/login")
    def login():
        request = bottle.request
        token = request.get_cookie(PRE_COOKIE) or ""
        if not token or not same(request.forms.get("csrf") or "", token):
            bottle.abort(403, "refused: the login form is stale (reload it and try again)")
        user = request.forms.getunicode("user") or ""
        password = request.forms.getunicode("password") or ""
        keys = ("user:" + user, "address:" + address())
        wait = page.throttle.locked(*keys)
        error = None
        if wait > 0:
            error = "too many wrong passwords: try again in %d minutes" % (wait // 60 + 1)
        elif page.users.check(user, password):
            page.throttle.succeeded(*keys)
            session_token, _ = page.sessions.start(user, address())
            page.cookie(COOKIE, session_token)
            log.warning("web page: %s logged in from %s", user, address())
            bottle.redirect("/live")
        else:
            if page.throttle.failed(*keys):
                log.warning("web page: %d wrong passwords in a row for %r or from %s: locked out for %g minutes",
                            config.web.login_attempts, user, address(), config.web.lockout_minutes)
                page.record("login_lockout", user=user, address=address())
                error = "too many wrong passwords: try again in %d minutes" % config.web.lockout_minutes
            else:
                error = "wrong user name or password"
        bottle.response.status = 403
        new_token = secrets.token_urlsafe(24)
        page.cookie(PRE_COOKIE, new_token, max_age=3600)
        return bottle.template("login.tpl", user=None, csrf=new_token, status={}, error=error, message=None)

    @app.route("/setup", method=["GET", "POST"])
    def setup():
        """The first user, made with the one-time code the page wrote where only the door's user can read it."""
        if page.users.any() or not page.setup_code:
            bottle.redirect("/login")
        error = None
        if bottle.request.method == "POST":
            forms = bottle.request.forms
            keys = ("setup", "address:" + address())
            if page.throttle.locked(*keys) > 0:
                error = "too many wrong setup codes: wait, then try again"
            elif not same((forms.get("code") or "").strip(), page.setup_code):
                page.throttle.failed(*keys)
                error = "wrong setup code: it is in the file the door's log names"
            else:
                from appliance.errors import FaceGateError

                try:
                    page.users.set(forms.getunicode("user") or "", forms.getunicode("password") or "")
                except FaceGateError as err:
                    error = str(err)
                else:
                    page.setup_code = None
                    page.record("web_user", user=forms.getunicode("user"), how="setup code")
                    bottle.redirect("/login")
        return bottle.template("setup.tpl", user=None, csrf="", status={}, error=error, message=None)

    @app.post("/logout")
    def logout():
        page.sessions.end(bottle.request.get_cookie(COOKIE))
        bottle.response.delete_cookie(COOKIE, path="/")
        bottle.redirect("/login")

    @app.get("/")
    def home():
        bottle.redirect("/live")

    routes_door.register(app, page)
    routes_people.register(app, page)
    return app


def same(given: str, expected: str) -> bool:
    """A secret compared in constant time; any text at all may arrive (compare_digest refuses
    non-ASCII str), so as bytes."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))


def check_same_origin() -> None:
    """A browser names the page a form came from; a change from any other site is refused even
    before its token is looked at."""
    request = bottle.request
    origin = request.get_header("Origin")
    if origin and origin != "null":
        host = request.get_header("Host") or ""
        if origin.split("://", 1)[-1] != host:
            bottle.abort(403, "refused: a change from another site (%s)" % origin)
