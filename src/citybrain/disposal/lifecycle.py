"""A case's life as a transition table: which action may move a case from which status to which.

The small closed loop (小闭环) is reported → triaged → dispatched → received → in progress → handled →
verified → closed. Around it: a handling unit returns a case that is not its own (returned → dispatched
again), a breached deadline or a problem beyond a level's power escalates it to the level above (escalated
→ dispatched there), it can be suspended and resumed, merged into another case about the same problem,
dismissed at triage (not a city matter, a prank call), and reopened when the citizen is not satisfied.

Everything else about a transition (who may do it, what evidence it needs, which SLA stage it starts) is
decided by the flows; this module only knows the table, so it can be checked exhaustively.
"""

from __future__ import annotations

from enum import StrEnum

from citybrain.core.errors import Conflict, InvalidInput


class Status(StrEnum):
    REPORTED = "reported"
    TRIAGED = "triaged"
    DISPATCHED = "dispatched"
    RECEIVED = "received"
    IN_PROGRESS = "in_progress"
    HANDLED = "handled"
    VERIFIED = "verified"
    CLOSED = "closed"
    RETURNED = "returned"
    ESCALATED = "escalated"
    SUSPENDED = "suspended"
    MERGED = "merged"
    REOPENED = "reopened"


class Action(StrEnum):
    TRIAGE = "triage"
    DISPATCH = "dispatch"
    RECEIVE = "receive"
    START = "start"
    HANDLE = "handle"
    VERIFY = "verify"
    REJECT = "reject"  # verification failed: back to the handler for rework (返工)
    CLOSE = "close"
    RETURN = "return"  # not ours (退回): back to the dispatcher
    ESCALATE = "escalate"
    SUSPEND = "suspend"
    RESUME = "resume"
    MERGE = "merge"
    DISMISS = "dismiss"
    REOPEN = "reopen"


S = Status
WORKING = frozenset({S.DISPATCHED, S.RECEIVED, S.IN_PROGRESS})
AWAITING_DISPATCH = frozenset({S.TRIAGED, S.RETURNED, S.ESCALATED, S.REOPENED})
# Statuses a case may leave by the action; RESUME goes back to where SUSPEND came from (see `target`).
TRANSITIONS: dict[Action, tuple[frozenset[Status], Status | None]] = {
    Action.TRIAGE: (frozenset({S.REPORTED}), S.TRIAGED),
    Action.DISPATCH: (AWAITING_DISPATCH, S.DISPATCHED),
    Action.RECEIVE: (frozenset({S.DISPATCHED}), S.RECEIVED),
    Action.START: (frozenset({S.RECEIVED}), S.IN_PROGRESS),
    Action.HANDLE: (frozenset({S.RECEIVED, S.IN_PROGRESS}), S.HANDLED),
    Action.VERIFY: (frozenset({S.HANDLED}), S.VERIFIED),
    Action.REJECT: (frozenset({S.HANDLED}), S.IN_PROGRESS),
    Action.CLOSE: (frozenset({S.VERIFIED}), S.CLOSED),
    Action.RETURN: (frozenset({S.DISPATCHED, S.RECEIVED}), S.RETURNED),
    Action.ESCALATE: (WORKING | {S.RETURNED, S.TRIAGED, S.REOPENED, S.ESCALATED}, S.ESCALATED),
    Action.SUSPEND: (WORKING, S.SUSPENDED),
    Action.RESUME: (frozenset({S.SUSPENDED}), None),
    Action.MERGE: (frozenset({S.REPORTED, S.TRIAGED}) | WORKING | {S.RETURNED, S.ESCALATED}, S.MERGED),
    Action.DISMISS: (frozenset({S.REPORTED}) | AWAITING_DISPATCH, S.CLOSED),  # a dispatcher's call
    Action.REOPEN: (frozenset({S.CLOSED}), S.REOPENED),
}
FINAL = frozenset({S.MERGED})  # a merged case lives on in the case it joined
OPEN = frozenset(Status) - {S.CLOSED, S.MERGED}


def allowed_actions(status: Status) -> list[Action]:
    """The actions a case in this status may take, in the table's order."""
    return [action for action, (sources, _) in TRANSITIONS.items() if status in sources]


def target(action: Action, status: Status, *, suspended_from: Status | None = None) -> Status:
    """The status `action` moves a case in `status` to; Conflict naming the allowed actions otherwise."""
    sources, to = TRANSITIONS[action]
    if status not in sources:
        allowed = ", ".join(allowed_actions(status)) or "none"
        raise Conflict(f"a {status.value} case cannot {action.value}; allowed: {allowed}")
    if to is None:  # RESUME
        if suspended_from is None or suspended_from not in WORKING:
            raise Conflict("the case does not say which status it was suspended from")
        return suspended_from
    return to


def statuses_of(text: str | None) -> list[str]:
    """Statuses named in a filter: comma-separated, or `open` for every open one; InvalidInput on
    `status` naming an unknown one."""
    if not text:
        return []
    if text == "open":
        return sorted(s.value for s in OPEN)
    statuses = [part.strip() for part in text.split(",") if part.strip()]
    known = {s.value for s in Status}
    for value in statuses:
        if value not in known:
            raise InvalidInput.at("status", f"unknown status {value!r}; one of open, {', '.join(sorted(known))}")
    return statuses
