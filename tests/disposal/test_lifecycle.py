"""The transition table, exhaustively and as a state machine: every action from every status is either
the table's move or a 409 naming exactly the allowed actions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from citybrain.core.errors import Conflict
from citybrain.disposal.lifecycle import OPEN, TRANSITIONS, WORKING, Action, Status, allowed_actions, target


@pytest.mark.parametrize("status", list(Status))
@pytest.mark.parametrize("action", list(Action))
def test_every_action_from_every_status_moves_by_the_table_or_is_refused(action: Action, status: Status) -> None:
    sources, to = TRANSITIONS[action]
    if status in sources:
        result = target(action, status, suspended_from=Status.RECEIVED)
        assert result == (to if to is not None else Status.RECEIVED)
        assert action in allowed_actions(status)
    else:
        with pytest.raises(Conflict) as refused:
            target(action, status)
        allowed = ", ".join(allowed_actions(status)) or "none"
        assert refused.value.detail == f"a {status.value} case cannot {action.value}; allowed: {allowed}"


def test_the_small_loop_and_its_side_roads() -> None:
    happy = [Action.TRIAGE, Action.DISPATCH, Action.RECEIVE, Action.START, Action.HANDLE, Action.VERIFY,
             Action.CLOSE]
    status = Status.REPORTED
    for action in happy:
        status = target(action, status)
    assert status == Status.CLOSED
    assert target(Action.REOPEN, Status.CLOSED) == Status.REOPENED
    assert target(Action.DISPATCH, Status.REOPENED) == Status.DISPATCHED
    assert target(Action.RETURN, Status.RECEIVED) == Status.RETURNED
    assert target(Action.DISPATCH, Status.RETURNED) == Status.DISPATCHED
    assert target(Action.ESCALATE, Status.IN_PROGRESS) == Status.ESCALATED
    assert target(Action.REJECT, Status.HANDLED) == Status.IN_PROGRESS
    assert allowed_actions(Status.MERGED) == []  # merged lives on in the case it joined


def test_resume_needs_to_know_where_the_case_was() -> None:
    for status in WORKING:
        assert target(Action.RESUME, Status.SUSPENDED, suspended_from=status) == status
    with pytest.raises(Conflict):
        target(Action.RESUME, Status.SUSPENDED)


@given(st.lists(st.sampled_from(list(Action)), max_size=60))
def test_any_sequence_of_actions_keeps_a_case_in_a_known_status(actions: list[Action]) -> None:
    """Applying what the table allows and skipping what it refuses never leaves the status set, and a
    closed or merged case only ever leaves by reopening."""
    status, suspended_from = Status.REPORTED, None
    for action in actions:
        try:
            after = target(action, status, suspended_from=suspended_from)
        except Conflict:
            assert action not in allowed_actions(status)
            continue
        assert action in allowed_actions(status)
        if status == Status.CLOSED:
            assert action == Action.REOPEN
        assert status != Status.MERGED
        suspended_from = status if action == Action.SUSPEND else suspended_from
        status = after
        assert status in Status
    assert (status in OPEN) == (status not in (Status.CLOSED, Status.MERGED))
