"""A door's past events over MQTT: `events` (the trail kept on this door, without snapshots) and
`snapshot` (one event's JPEG), for `facegate admin history`. Reads only."""

import base64
import datetime
from typing import Any, Callable, Dict

from appliance.audit import AuditStore
from appliance.errors import CommandError
from appliance.mqtt.payload import text_field, whole_number

HISTORY_PAGE = 200  # most events in one `events` reply


class HistoryVerbs:
    def __init__(self, audit: AuditStore) -> None:
        self.audit = audit

    def handlers(self) -> Dict[str, Callable]:
        return {"events": self.events, "snapshot": self.snapshot}

    def events(self, body) -> Dict[str, Any]:
        """Past audit events in order, after a sequence number (or with `newest` the last `limit`):
        the trail kept on this door, without snapshots (`snapshot` fetches one)."""
        after = whole_number(body, "after", 0, 0, 2 ** 62)
        limit = whole_number(body, "limit", 100, 1, HISTORY_PAGE)
        kind, person = text_field(body, "kind", False), text_field(body, "person", False)
        bounds = []
        for key in ("since", "until"):
            text = text_field(body, key, False)
            try:
                moment = datetime.datetime.fromisoformat(text) if text else None
            except ValueError:
                raise CommandError("malformed", "%s must be an ISO time with its offset" % key) from None
            if moment is not None and moment.tzinfo is None:
                raise CommandError("malformed", "%s must carry its offset (a door's clock is UTC)" % key)
            bounds.append(moment)
        newest = body.get("newest", False)
        if not isinstance(newest, bool):
            raise CommandError("malformed", "newest must be true or false")
        events = self.audit.events(limit=limit, kind=kind, since_id=after, after=bounds[0], before=bounds[1],
                                   person=person, newest=newest)
        return {"events": [dict(e.summary(), sequence=e.id) for e in events],
                "more": len(events) == limit, "last": events[-1].id if events else after}

    def snapshot(self, body) -> Dict[str, Any]:
        sequence = whole_number(body, "sequence", 0, 1, 2 ** 62)
        found = self.audit.events(limit=1, since_id=sequence - 1)
        if not found or found[0].id != sequence:
            raise CommandError("not_found", "no event %d on this door" % sequence)
        if found[0].snapshot is None:
            raise CommandError("not_found", "event %d has no snapshot (none taken, or pruned for space)" % sequence)
        return {"sequence": sequence, "jpeg": base64.b64encode(found[0].snapshot).decode("ascii")}
