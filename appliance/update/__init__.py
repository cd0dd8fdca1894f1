"""Updates with a way back: versions side by side, a self-test gate, an atomic switch, and a
fall back to the previous version when the new one does not run its door.

On a device, /usr/lib/facegate holds `versions/VERSION-ID/` (packages, models, manifest),
`current` and `previous` (symlinks, replaced by rename), `trial` while an update is unproven,
`rolled-back` after the launcher went back, and `update.json`, the updater's record. The
launcher (board/launcher, outside every version) does the going back, so a version that cannot
even start Python cannot stop it; the door's own service marks a version proven once it has run
its door for `update.confirm_seconds` (see `Installation.confirm`).
"""

from appliance.update.layout import Installation, running_installation

__all__ = ["Installation", "running_installation"]
