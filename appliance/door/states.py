"""The two state machines of a door, as tables: access (who may pass) and door (what the door does).

Both are `transitions` LockedMachines, because camera, serial, GPIO and MQTT events arrive on
different threads. Timed states (relock, cooldown, held-open alarm) use the Timeout feature.
A trigger not in the table raises MachineError; the controller decides which refusals are benign.
"""

import enum

from transitions.extensions import LockedMachine
from transitions.extensions.states import Timeout, add_state_features


class Access(enum.Enum):
    idle = "idle"
    detecting = "detecting"
    verifying = "verifying"
    granted = "granted"
    denied = "denied"
    cooldown = "cooldown"
    fault = "fault"


class Door(enum.Enum):
    closed = "closed"  # closed and locked
    unlocked = "unlocked"  # closed, relay released
    open = "open"  # opened after a release
    held_open = "held_open"  # open longer than allowed: alarm
    forced_open = "forced_open"  # opened while locked: alarm


_ANY_BUT_FAULT = [s for s in Access if s is not Access.fault]

# trigger, source(s), destination; conditions and callbacks are named methods of the model.
ACCESS_TRANSITIONS = [
    {"trigger": "face_appeared", "source": Access.idle, "dest": Access.detecting},
    {"trigger": "face_tracked", "source": Access.detecting, "dest": Access.verifying},
    {"trigger": "face_lost", "source": [Access.detecting, Access.verifying], "dest": Access.idle},
    {"trigger": "grant", "source": Access.verifying, "dest": Access.granted,
     "conditions": "release_relay"},
    {"trigger": "deny", "source": Access.verifying, "dest": Access.denied},
    {"trigger": "repeat", "source": Access.verifying, "dest": Access.cooldown},
    {"trigger": "exit_request",
     "source": [Access.idle, Access.detecting, Access.verifying, Access.granted, Access.denied,
                Access.cooldown],
     "dest": Access.granted, "conditions": "release_relay"},
    {"trigger": "relock", "source": Access.granted, "dest": Access.cooldown, "before": "lock_relay"},
    {"trigger": "denial_shown", "source": Access.denied, "dest": Access.cooldown},
    {"trigger": "ready", "source": Access.cooldown, "dest": Access.idle},
    {"trigger": "fail", "source": _ANY_BUT_FAULT, "dest": Access.fault, "before": "force_lock"},
    {"trigger": "recover", "source": Access.fault, "dest": Access.idle, "conditions": "healthy"},
]

DOOR_TRANSITIONS = [
    {"trigger": "release", "source": Door.closed, "dest": Door.unlocked},
    {"trigger": "secure", "source": Door.unlocked, "dest": Door.closed},
    {"trigger": "opened", "source": Door.unlocked, "dest": Door.open},
    {"trigger": "opened", "source": Door.closed, "dest": Door.forced_open},
    # a door shut while the relay is still released is ready to open again
    {"trigger": "shut", "source": [Door.open, Door.held_open, Door.forced_open], "dest": Door.unlocked,
     "conditions": "relay_released"},
    {"trigger": "shut", "source": [Door.open, Door.held_open, Door.forced_open], "dest": Door.closed},
    {"trigger": "held_too_long", "source": Door.open, "dest": Door.held_open},
]


@add_state_features(Timeout)
class TimedMachine(LockedMachine):
    pass


def access_machine(model, unlock_seconds: float, deny_seconds: float,
                   cooldown_seconds: float) -> TimedMachine:
    states = [{"name": state} for state in Access]
    timed = {Access.granted: (unlock_seconds, "relock"),
             Access.denied: (deny_seconds, "denial_shown"),
             Access.cooldown: (cooldown_seconds, "ready")}
    for entry in states:
        if entry["name"] in timed:
            seconds, trigger = timed[entry["name"]]
            # a zero timeout means "no timer" to transitions; a tiny one means "at once"
            entry.update(timeout=max(seconds, 0.001), on_timeout=trigger)
    return TimedMachine(model=model, states=states, transitions=ACCESS_TRANSITIONS,
                        initial=Access.idle, auto_transitions=False, model_attribute="access",
                        after_state_change="access_changed")


def door_machine(model, held_open_seconds: float) -> TimedMachine:
    states = [{"name": state} for state in Door]
    for entry in states:
        if entry["name"] is Door.open:
            entry.update(timeout=held_open_seconds, on_timeout="held_too_long")
    return TimedMachine(model=model, states=states, transitions=DOOR_TRANSITIONS,
                        initial=Door.closed, auto_transitions=False, model_attribute="door",
                        after_state_change="door_changed")
