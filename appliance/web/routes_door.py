"""The live view, the door's status, relay test, audit trail and tuning pages."""

import argparse
import contextlib
import csv
import io
import json

import bottle

from appliance.errors import FaceGateError
from appliance.web.app import render


def register(app: bottle.Bottle, page) -> None:
    config = page.config

    @app.get("/live")
    def live():
        page.door.watch()
        return render("live.tpl", page=page, fps=config.web.live_fps)

    @app.get("/live/frame.jpg")
    def frame():
        page.door.watch()
        data = page.door.frame()
        if data is None:
            bottle.abort(404, "no frame yet: the door publishes one within a second of a viewer arriving")
        bottle.response.content_type = "image/jpeg"
        return data

    @app.get("/live/state.json")
    def state():
        page.door.watch()
        bottle.response.content_type = "application/json"
        return json.dumps({"status": page.door.status(), "faces": page.door.faces()}, ensure_ascii=False)

    @app.get("/door")
    def door():
        query = bottle.request.query
        filters = {key: query.getunicode(key) or "" for key in ("kind", "person", "since", "until")}
        events, error = _events(page, filters, 100)
        return render("door.tpl", page=page, events=events, filters=filters, error=error,
                      message=query.getunicode("message"), csv_query=_query(**filters), update=_update_state(),
                      rules=_access_rules(page), selftest=None)

    @app.post("/door/update")
    def update():
        """A new version from a bundle the installer uploads: the same updater a fleet update
        starts (self-test, switch, prove, or go back), apart from the door and this page."""
        import hashlib

        from appliance.errors import CommandError
        from appliance.update import running_installation
        from appliance.update.fleet import launch_bundle

        found = running_installation()
        upload = bottle.request.files.get("bundle")
        if found is None:
            message = "this door runs from a development checkout: install.sh installs versions here"
        elif upload is None or not (upload.raw_filename or "").endswith(".tar.gz"):
            message = "choose a bundle, facegate-BOARD-VERSION.tar.gz ('make bundle' makes one)"
        else:
            installation = found[0]
            target = installation.lib / "download" / "web-upload.tar.gz"  # where a fleet update downloads to
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            with open(target, "wb") as handle:
                while True:
                    chunk = upload.file.read(1 << 20)
                    if not chunk:
                        break
                    digest.update(chunk)
                    handle.write(chunk)
            page.record("update", None, bundle=upload.raw_filename, sha256=digest.hexdigest(),
                        size=target.stat().st_size)
            try:
                launch_bundle(installation, target, page.config_path or "/etc/facegate/config.toml")
                message = ("update to %s started: it is self-tested, then the door restarts on it and keeps it once "
                           "it has run %g s (or goes back by itself); this page returns with the door"
                           % (upload.raw_filename, config.update.confirm_seconds))
            except CommandError as err:
                message = "not started: %s" % err
        bottle.redirect("/door?" + _query(message=message))

    @app.post("/door/selftest")
    def selftest():
        """The door's self-test beside the running door: models, reference face, gallery, disk,
        config; the relay and camera belong to the door, so they are left to it."""
        import subprocess
        import sys

        argv = [sys.executable, "-m", "appliance", "selftest", "--no-relay", "--no-camera"]
        argv += ["--config", page.config_path] if page.config_path else []
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
            text = (done.stdout + done.stderr).strip()
        except subprocess.TimeoutExpired:
            text = "the self-test did not finish within 10 minutes"
        filters = {key: "" for key in ("kind", "person", "since", "until")}
        events, error = _events(page, filters, 100)
        return render("door.tpl", page=page, events=events, filters=filters, error=error, message=None,
                      csv_query="", update=_update_state(), rules=_access_rules(page), selftest=text)

    @app.get("/door/audit.csv")
    def audit_csv():
        query = bottle.request.query
        filters = {key: query.getunicode(key) or "" for key in ("kind", "person", "since", "until")}
        events, error = _events(page, filters, 100000)
        if error:
            bottle.abort(404, error)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["id", "time_utc", "kind", "person_id", "person_name", "distance", "liveness", "reason",
                         "origin"])
        for event in events:
            detail = event.detail
            origin = detail.get("origin") or {}
            writer.writerow([event.id, event.time, event.kind, event.person_id or "", event.person_name or "",
                             "" if event.distance is None else event.distance, detail.get("liveness", ""),
                             detail.get("reason") or detail.get("message") or detail.get("action") or "",
                             _origin_text(origin)])
        bottle.response.content_type = "text/csv; charset=utf-8"
        bottle.response.set_header("Content-Disposition", 'attachment; filename="audit.csv"')
        return out.getvalue()

    @app.post("/door/relay-test")
    def relay_test():
        reply = page.door.ask("relay_test", page.origin())
        message = "the relay opened and will lock again" if reply.get("ok") else "not opened: %s" % reply.get("error")
        bottle.redirect("/door?" + _query(message=message))

    plots = {}  # the session's last report's plot: one `tune report` run makes the page and its picture

    @app.get("/tune")
    def tune():
        return render("tune.tpl", page=page, report=_report_text(page, plots), preview=None)

    @app.get("/tune/plot.png")
    def plot():
        data = plots.get(page.session().user)
        if data is None:
            bottle.abort(404, "no plot: the gallery needs at least two people")
        bottle.response.content_type = "image/png"
        return data

    @app.post("/tune/preview")
    def preview():
        from appliance.cli.tune import threshold_preview

        forms = bottle.request.forms
        try:
            new = float(forms.get("threshold") or "")
            if not 0 < new < 2:
                raise ValueError
        except ValueError:
            return render("tune.tpl", page=page, report=_report_text(page, plots), preview=None,
                          error="a threshold is a cosine distance between 0 and 2, like 0.45")
        status = page.door.status()
        current = _current_threshold(page)
        rows = threshold_preview(config, [current, new]) if current is not None else threshold_preview(config, [new])
        return render("tune.tpl", page=page, report=None, preview={
            "current": current, "new": new, "rows": rows, "force": bool(forms.get("force")),
            "door": status.get("decision")})

    @app.post("/tune/apply")
    def apply():
        from appliance.cli.tune import _apply

        forms = bottle.request.forms
        try:
            threshold = float(forms.get("threshold") or "")
        except ValueError:
            bottle.abort(400, "no threshold given: preview one first")
        force = bool(forms.get("force"))
        messages = []
        if page.config_path:
            args = argparse.Namespace(threshold=threshold, door=None, config=page.config_path, force=force,
                                      origin=page.origin())
            out = io.StringIO()
            try:
                with contextlib.redirect_stdout(out):
                    _apply(args)
            except FaceGateError as err:
                return render("tune.tpl", page=page, report=_report_text(page, plots), preview=None, error=str(err))
            messages.append(out.getvalue().strip())
        reply = page.door.ask("set_threshold", page.origin(), distance_threshold=threshold, force=force)
        if reply.get("ok"):
            messages.append("the door now decides with %s" % reply["decision"])
        elif page.config_path:
            messages.append("the running door was not changed (%s): it takes the file's threshold at its next "
                            "start" % reply.get("error"))
        else:
            return render("tune.tpl", page=page, report=_report_text(page, plots), preview=None, error=reply.get("error"))
        return render("tune.tpl", page=page, report=_report_text(page, plots), preview=None, message="; ".join(messages))


def _query(**values) -> str:
    from urllib.parse import urlencode

    return urlencode(values)


def _origin_text(origin) -> str:
    if not isinstance(origin, dict):
        return ""
    if origin.get("via") == "web":
        return "web:%s@%s" % (origin.get("user"), origin.get("address"))
    return ":".join(str(origin[key]) for key in ("via", "user", "operator", "key") if origin.get(key))


def _events(page, filters, limit):
    """Newest first, with the CLI's filters; (events, error)."""
    from pathlib import Path

    from appliance.audit import EVENT_KINDS
    from appliance.cli.common import local_time

    if filters["kind"] and filters["kind"] not in EVENT_KINDS:
        return [], "unknown kind %r: one of %s" % (filters["kind"], ", ".join(EVENT_KINDS))
    if not Path(page.config.audit.path).exists():
        return [], "no audit trail yet: the door has not run"
    try:
        after, before = local_time(filters["since"] or None, "since"), local_time(filters["until"] or None, "until")
    except FaceGateError as err:
        return [], str(err)
    store = page.audit()
    try:
        return store.events(limit=limit, kind=filters["kind"] or None, newest=True, person=filters["person"] or None,
                            after=after, before=before), None
    finally:
        store.close()


def _update_state():
    """This installation's versions and its last update, or None in a development checkout."""
    from appliance.update import running_installation

    found = running_installation()
    if found is None:
        return None
    installation, version = found
    return dict(installation.state(), running=version)


def _access_rules(page):
    """The schedules and access groups (who may enter when), as `facegate access` lists them."""
    from pathlib import Path

    if not Path(page.config.gallery.path).exists():
        return {"schedules": [], "groups": []}
    with page.gallery() as store:
        return {"schedules": store.schedule_rows(), "groups": store.group_rows()}


def _current_threshold(page):
    from appliance.recognition.decision import threshold_for

    try:
        with page.gallery() as store:
            model_id, counts = store.model_id, [p.templates for p in store.people() if p.templates]
        return threshold_for(page.config, model_id, counts).value if model_id else None
    except FaceGateError:
        return None


def _run_cli(page, argv):
    """A `facegate` command of the page's own config, its output as text (what the installer reads
    in a shell, here on the page)."""
    from appliance.cli import main

    argv = list(argv) + (["--config", page.config_path] if page.config_path else []) + [
        "--gallery", page.config.gallery.path, "--audit", page.config.audit.path]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        main(argv)
    return out.getvalue()


def _report_text(page, plots=None) -> str:
    """`tune report`'s text; with `plots`, its DET plot kept there for the page's picture."""
    if plots is None:
        return _run_cli(page, ["tune", "report"])
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = folder + "/det.png"
        text = _run_cli(page, ["tune", "report", "--plot", path])
        try:
            with open(path, "rb") as handle:
                plots[page.session().user] = handle.read()
        except OSError:
            plots.pop(page.session().user, None)
    return text
