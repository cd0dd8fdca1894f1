"""The package's one exception family.

Every error a user can cause or fix derives from FaceGateError and carries a message that says
what to do; the CLI, the state machine and the MQTT replies translate it once at their boundary.
"""


def did_you_mean(value: str, choices, quoted: bool = False, cutoff: float = 0.5) -> str:
    """' (did you mean X or Y?)' for the choices close to a mistyped `value`, or ''."""
    import difflib

    close = difflib.get_close_matches(value, list(choices), n=3, cutoff=cutoff)
    if not close:
        return ""
    return " (did you mean %s?)" % " or ".join(repr(c) if quoted else c for c in close)


class FaceGateError(Exception):
    """Base of every error FaceGate raises on purpose."""


class ConfigError(FaceGateError):
    """A config file or setting is invalid."""


class ModelError(FaceGateError):
    """A model file is missing, corrupt, or does not match its manifest."""


class BackendError(FaceGateError):
    """An inference runtime is missing or failed."""


class ImageError(FaceGateError):
    """An image could not be read or decoded."""


class GalleryError(FaceGateError):
    """The gallery database refused an operation."""


class CameraError(FaceGateError):
    """A camera source cannot be opened or read."""


class RelayError(FaceGateError):
    """The relay cannot be reached or did not take a command."""


class CommandError(FaceGateError):
    """A remote command was refused; `code` is the machine-readable reason sent in the reply."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__("%s: %s" % (code, message))
        self.code = code
        self.message = message


class AuditError(FaceGateError):
    """The audit trail cannot be opened or written."""


class InputError(FaceGateError):
    """A GPIO input (door contact, exit button) cannot be read."""


class LinkError(FaceGateError):
    """The MQTT broker cannot be reached."""


class AdminError(FaceGateError):
    """The administrator's tools cannot do what was asked (broker unreachable ...)."""


class StorageError(FaceGateError):
    """A record (command ledger, audit trail) could not be written: the disk may be full."""


class UpdateError(FaceGateError):
    """An update that cannot be staged, tested or switched to (the running version stays)."""
