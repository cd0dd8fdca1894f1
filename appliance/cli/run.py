"""`facegate run` (the door service) and `facegate audit` (read the local audit trail)."""

import json
import logging
import logging.handlers
import os
import sys
import time

from appliance import signals
from appliance.cli.common import (add_config_options, add_door_options, audit_line, known_name, load_config, local_time,
                                  shown_time)
from appliance.config import validate
from appliance.instance import InstanceLock
from appliance.errors import FaceGateError, did_you_mean


def register(commands) -> None:
    parser = commands.add_parser("run", help="run the door: camera, recognition, relay, audit")
    add_config_options(parser)
    add_door_options(parser)
    parser.add_argument("--gallery", help="gallery database file, overriding gallery.path")
    parser.add_argument("--audit", help="audit database file, overriding audit.path")
    parser.add_argument("--no-relay", action="store_true",
                        help="dry run without a relay: decisions are made and logged, no door moves")
    parser.add_argument("--quiet", action="store_true", help="print decisions and alarms only")
    parser.add_argument("--syslog", action="store_true",
                        help="log to the system log (/dev/log) instead of stdout: the board's init script uses it")
    parser.add_argument("--status-file", help="write 'running VERSION' here once the door runs, or 'failed: REASON' "
                                              "(the init script waits for one of them)")
    parser.set_defaults(handler=run)

    audit = commands.add_parser("audit", help="show the local audit trail")
    audit.add_argument("--audit", help="audit database file, overriding audit.path")
    audit.add_argument("--config", help="TOML config file")
    audit.add_argument("--kind", help="only events of this kind (grant, deny, exit, alarm, fault, change ...)")
    audit.add_argument("--person", help="only events of this person (name or id)")
    audit.add_argument("--since", help="only events from this local date or time on (2026-11-25, 2026-11-25T08:00)")
    audit.add_argument("--until", help="only events before this local date or time")
    audit.add_argument("--limit", type=int, default=50, help="most events shown (default 50)")
    audit.add_argument("--json", action="store_true", help="one JSON object per line")
    audit.add_argument("--csv", action="store_true", help="CSV with a header row (time in UTC and local)")
    audit.add_argument("--snapshot", type=int, metavar="ID", help="write event ID's snapshot to --out")
    audit.add_argument("--out", help="where --snapshot writes the JPEG")
    audit.set_defaults(handler=show_audit)


class _Clock(logging.Formatter):
    """Local time to the millisecond with its UTC offset (the audit trail and MQTT keep UTC)."""

    def format(self, record: logging.LogRecord) -> str:
        local = time.localtime(record.created)
        line = "%s.%03d%s %s" % (time.strftime("%H:%M:%S", local), record.msecs, time.strftime("%z", local),
                                 record.getMessage())
        if record.exc_info:  # an internal error's traceback, once, under its line
            line += "\n" + self.formatException(record.exc_info)
        return line


def _print_event(event) -> None:
    parts = [event.kind.upper()]
    if event.person_name:
        parts.append(event.person_name)
    elif event.detail.get("nearest"):
        parts.append("stranger (nearest: %s)" % event.detail["nearest"]["name"])
    if event.distance is not None:
        parts.append("distance %.3f" % event.distance)
    if event.margin is not None:
        parts.append("margin %.3f" % event.margin)
    if event.latency_ms is not None:
        parts.append("after %.0f ms" % event.latency_ms)
    reason = event.detail.get("reason") or event.detail.get("message") or event.detail.get("source")
    if reason and reason != "match":
        parts.append("(%s)" % reason)
    logging.getLogger("appliance.events").warning("%s", " ".join(parts))


def _log_handler(syslog: bool) -> logging.Handler:
    """stdout with a millisecond clock, or the system log whose daemon rotates and limits it."""
    if syslog and os.path.exists("/dev/log"):
        handler: logging.Handler = logging.handlers.SysLogHandler(address="/dev/log")
        handler.setFormatter(logging.Formatter("facegate[%(process)d]: %(message)s"))
        return handler
    if syslog:
        print("facegate: no /dev/log (is syslogd running?); logging to stdout", file=sys.stderr)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_Clock())
    return handler


def run(args) -> int:
    try:
        status = _serve(args)
    except FaceGateError as err:
        _write_status(args.status_file, "failed: %s" % err)
        raise
    _write_status(args.status_file, "stopped")
    return status


def _write_status(path, text: str) -> None:
    if path:
        partial = path + ".partial"
        with open(partial, "w") as handle:
            handle.write(text.replace("\n", " ") + "\n")
        os.replace(partial, path)  # a reader sees the old state or the new one, never half of it


def _serve(args) -> int:
    from appliance.config import notes
    from appliance.service import build_service

    config = load_config(args)
    validate(config, args.config or "the built-in config", relay=not args.no_relay)
    handler = _log_handler(args.syslog)
    for name, level in (("appliance", logging.WARNING if args.quiet else logging.INFO),
                        ("appliance.events", logging.INFO)):
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG if args.verbose else level)
        logger.addHandler(handler)
        logger.propagate = False
    # both machines share one model, so transitions notes that `trigger` is bound once: not news
    logging.getLogger("transitions").setLevel(logging.ERROR)

    for note in notes(config):
        logging.getLogger("appliance").warning("%s", note)
    instance = InstanceLock()  # held until this process ends
    instance.hold(config.gallery.path, "gallery")
    instance.hold(config.audit.path, "audit trail")
    service = build_service(config, use_relay=not args.no_relay)
    service.controller.listeners.append(_print_event)
    if service.agent is not None:
        service.agent.allow_updates(os.path.abspath(args.config) if args.config else "/etc/facegate/config.toml")
    # any signal that would end the process ends the loop instead, which locks the relay on its way out
    signals.on_terminating(lambda signum: service.stop())
    logging.getLogger("appliance").info("running: camera %s, relay %s, gallery %s (%d templates)",
                                        config.camera.source,
                                        "none (dry run)" if args.no_relay else config.relay.port,
                                        config.gallery.path, len(service.verifier.index))
    service.version = _version_name()
    _write_status(args.status_file, "running %s" % service.version)
    _prove_update(service, config)
    if config.web.enabled:
        service.owned.append(_start_page(args, config))
    counters = service.run()
    if service.failure:
        raise FaceGateError("%s; the door is locked and the service stopped (restart it; the log above has "
                            "the details)" % service.failure)
    print("frames %d: detector ran on %d, idle-skipped %d, dropped %d stale; grants %d, denials %d"
          % (counters.frames, counters.detected, counters.skipped, service.reader.dropped,
             counters.decisions["grant"], counters.decisions["deny"]))
    return 0


def _start_page(args, config):
    """The web page in its own process, given the door's own paths and models."""
    from appliance.web import WebChild, child_argv, page_address

    flags = []
    for option, value in (("--gallery", config.gallery.path), ("--audit", config.audit.path),
                          ("--backend", args.backend), ("--models-dir", args.models_dir)):
        if value:
            flags += [option, value]
    print("the door's page: %s" % page_address(config), flush=True)
    return WebChild(child_argv(args.config, flags)).start()


def _version_name() -> str:
    """The installed version's name (VERSION-ID, as `update --status` shows it), else the code's."""
    from appliance import __version__
    from appliance.update import running_installation

    found = running_installation()
    return found[1] if found else __version__


def _prove_update(service, config) -> None:
    """A version on trial after an update stays once its door has run update.confirm_seconds."""
    from appliance.update import running_installation

    found = running_installation()
    if found is None or not found[0].trial_file.exists():
        return
    installation, version = found
    logging.getLogger("appliance").warning("version %s is on trial: it is kept once this door has run for %.0f s",
                                           version, config.update.confirm_seconds)

    def proven() -> None:
        try:
            if installation.confirm(version):
                logging.getLogger("appliance").warning("version %s has proven itself: the update is kept", version)
        except OSError as err:  # the trial goes on: the launcher counts the next start
            logging.getLogger("appliance").error("cannot keep version %s: %s", version, err)

    service.on_proven = (config.update.confirm_seconds, proven)


def show_audit(args) -> int:
    from pathlib import Path

    from appliance.audit import AuditStore

    config = load_config(args)
    if args.kind is not None:
        from appliance.audit import EVENT_KINDS

        known_name(args.kind, EVENT_KINDS, "event kind")
    path = config.audit.path  # --audit is in it
    if not Path(path).exists():
        raise FaceGateError("audit trail %s does not exist (give --audit or audit.path)" % path)
    store = AuditStore(path)
    try:
        if args.snapshot is not None:
            return _write_snapshot(store, args)
        events = store.events(limit=args.limit, kind=args.kind, newest=True, person=args.person,
                              after=local_time(args.since, "--since"), before=local_time(args.until, "--until"))
        if not events and args.person and args.person not in store.people():
            raise FaceGateError("no events of %r in %s%s" % (args.person, path, did_you_mean(args.person, store.people())))
        if args.csv:
            return _write_csv(events)
        for event in events:
            if args.json:
                print(json.dumps(event.summary(), ensure_ascii=False))
            else:
                print(audit_line(event.summary()))
    finally:
        store.close()
    return 0


def _write_csv(events) -> int:
    import csv

    writer = csv.writer(sys.stdout)
    writer.writerow(["id", "time_utc", "time_local", "kind", "person_id", "person_name", "distance", "margin",
                     "latency_ms", "reason"])
    for event in events:
        reason = event.detail.get("reason") or event.detail.get("message") or event.detail.get("action") or ""
        writer.writerow([event.id, event.time, shown_time(event.time), event.kind, event.person_id or "",
                         event.person_name or "", "" if event.distance is None else event.distance,
                         "" if event.margin is None else event.margin,
                         "" if event.latency_ms is None else event.latency_ms, reason])
    return 0


def _write_snapshot(store, args) -> int:
    events = store.events(limit=1, since_id=args.snapshot - 1)
    if not events or events[0].id != args.snapshot:
        raise FaceGateError("no audit event %d" % args.snapshot)
    if events[0].snapshot is None:
        raise FaceGateError("audit event %d has no snapshot (off, or dropped by retention)" % args.snapshot)
    if not args.out:
        raise FaceGateError("give --out FILE.jpg for the snapshot")
    with open(args.out, "wb") as handle:
        handle.write(events[0].snapshot)
    print("wrote %s" % args.out)
    return 0
