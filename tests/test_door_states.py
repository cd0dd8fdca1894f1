"""The access and door transitions tables: every trigger from every state, allowed or refused."""

import itertools

import pytest
from transitions import MachineError

from appliance.config import DoorConfig
from appliance.door.controller import DoorController
from appliance.door.relay import NoRelay
from appliance.door.states import Access, Door

A = Access
# (trigger, from) -> to, written out from the issue, independently of the tables in the code
ACCESS_EXPECTED = {("face_appeared", A.idle): A.detecting,
                   ("face_tracked", A.detecting): A.verifying,
                   ("face_lost", A.detecting): A.idle, ("face_lost", A.verifying): A.idle,
                   ("grant", A.verifying): A.granted,
                   ("deny", A.verifying): A.denied,
                   ("repeat", A.verifying): A.cooldown,
                   ("relock", A.granted): A.cooldown,
                   ("denial_shown", A.denied): A.cooldown,
                   ("ready", A.cooldown): A.idle,
                   ("recover", A.fault): A.idle}
for state in A:
    if state is not A.fault:
        ACCESS_EXPECTED[("fail", state)] = A.fault
        ACCESS_EXPECTED[("exit_request", state)] = A.granted
ACCESS_TRIGGERS = sorted({trigger for trigger, _ in ACCESS_EXPECTED})

D = Door
DOOR_EXPECTED = {("release", D.closed): D.unlocked, ("secure", D.unlocked): D.closed,
                 ("opened", D.unlocked): D.open, ("opened", D.closed): D.forced_open,
                 ("shut", D.open): D.closed, ("shut", D.held_open): D.closed,
                 ("shut", D.forced_open): D.closed, ("held_too_long", D.open): D.held_open}
DOOR_TRIGGERS = sorted({trigger for trigger, _ in DOOR_EXPECTED})


@pytest.fixture
def controller():
    # long timers: the timed states must not move on by themselves during a check
    built = DoorController(DoorConfig(unlock_seconds=600, deny_seconds=60, cooldown_seconds=60,
                                      held_open_seconds=3600), NoRelay())
    yield built
    built.shutdown()


@pytest.mark.parametrize("trigger,state", list(itertools.product(ACCESS_TRIGGERS, Access)))
def test_access_table(controller, trigger, state):
    controller.access_machine.set_state(state, model=controller)
    expected = ACCESS_EXPECTED.get((trigger, state))
    if expected is None:
        with pytest.raises(MachineError):
            getattr(controller, trigger)()
        assert controller.access is state
    else:
        assert getattr(controller, trigger)() is True
        assert controller.access is expected


@pytest.mark.parametrize("trigger,state", list(itertools.product(DOOR_TRIGGERS, Door)))
def test_door_table_with_relay_locked(controller, trigger, state):
    controller.door_machine.set_state(state, model=controller)
    expected = DOOR_EXPECTED.get((trigger, state))
    if expected is None:
        with pytest.raises(MachineError):
            getattr(controller, trigger)()
    else:
        getattr(controller, trigger)()
        assert controller.door is expected


@pytest.mark.parametrize("state", [D.open, D.held_open, D.forced_open])
def test_door_shut_while_released_is_ready_to_open_again(controller, state):
    controller.relay.unlock()
    controller.door_machine.set_state(state, model=controller)
    controller.shut()
    assert controller.door is D.unlocked


def test_recover_refused_while_a_fault_remains(controller):
    controller.report_fault("camera", "gone")
    controller.report_fault("relay", "gone")
    controller.clear_fault("camera")
    assert controller.access is A.fault
    controller.clear_fault("relay")
    assert controller.access is A.idle


def test_person_cooldown_suppresses_a_second_grant(controller):
    from appliance.audit import Event

    controller.access_machine.set_state(A.verifying, model=controller)
    assert controller.grant_person(Event("grant", person_id="p1", person_name="P"))
    controller.access_machine.set_state(A.verifying, model=controller)
    assert not controller.grant_person(Event("grant", person_id="p1", person_name="P"))
    assert controller.access is A.cooldown
    controller.access_machine.set_state(A.verifying, model=controller)
    assert controller.grant_person(Event("grant", person_id="p2", person_name="Q"))
