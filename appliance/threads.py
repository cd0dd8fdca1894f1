"""Worker threads that report their own death.

An uncaught exception ends a Python thread quietly and the rest of the program runs on: a door
could go on blind (no camera), deaf (no exit button) or mute (no MQTT). Every long-lived thread
of the door runs through `start`, so its death is logged with the exception and handed to
`on_death`, which the service turns into a fault and a stop.
"""

import logging
import threading
from typing import Callable, Optional

log = logging.getLogger(__name__)

DeathCallback = Callable[[str, BaseException], None]


def start(name: str, target: Callable[[], None], on_death: Optional[DeathCallback] = None) -> threading.Thread:
    def guarded() -> None:
        try:
            target()
        except Exception as err:  # anything at all: the point is that it is reported
            log.exception("the %s thread stopped on an error", name)
            if on_death is not None:
                on_death(name, err)

    thread = threading.Thread(target=guarded, name=name, daemon=True)
    thread.start()
    return thread
