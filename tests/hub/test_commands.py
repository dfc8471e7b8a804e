"""Connected systems, their health and commands through the API, against a real HTTP receiver standing in
for the department system. Time moves on the frozen clock; every wait is bounded."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from citybrain.core.errors import Conflict
from citybrain.core.events import CommandIssued, CommandStatusChanged, Event, SystemHealthChanged
from citybrain.hub.background import find_service
from citybrain.hub.commands.flows import TRANSITIONS, CommandDispatcher, HealthChecker, check_transition
from citybrain.settings import Settings
from tests.hub.receiver import Receiver, wait_until

LAMP = "urn:ngsi-ld:Streetlight:XH-0001"
SYSTEM = "urn:ngsi-ld:ConnectedSystem:xihu-lighting"
DEPARTMENT = "330106-chengguan"


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(db=db_url, home=tmp_path, bus="memory", webhook_timeout_s=2.0, command_max_attempts=3,
                    retry_backoff_base_s=1.0, retry_backoff_max_s=8.0, command_ack_timeout_s=60,
                    system_health_interval_s=30, system_heartbeat_timeout_s=90)


def register(client, receiver: Receiver | None = None, *, system_id: str = SYSTEM, push: bool = True,
             health: bool = False, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": system_id, "name": "Xihu lighting", "kind": "iot-platform",
                            "department": DEPARTMENT, **extra}
    if push and receiver is not None:
        body["commandUrl"] = receiver.url("/commands")
    if health and receiver is not None:
        body["healthUrl"] = receiver.url("/health")
    response = client.post("/api/v1/systems", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def lamp(client, *, controlled_by: str | None = SYSTEM, entity_id: str = LAMP) -> None:
    entity: dict[str, Any] = {"id": entity_id, "type": "Streetlight", "powerState": {"type": "Property", "value": "on"}}
    if controlled_by is not None:
        entity["controlledBy"] = {"type": "Relationship", "object": controlled_by}
    assert client.post("/api/v1/entities", json=entity).status_code == 201


def issue(client, target: str = LAMP, name: str = "switchOff", **extra: Any) -> dict[str, Any]:
    response = client.post("/api/v1/commands", json={"target": target, "name": name, **extra})
    assert response.status_code == 201, response.text
    return response.json()


def command(client, command_id: str) -> dict[str, Any]:
    return client.get(f"/api/v1/commands/{command_id}").json()


def wait_status(client, command_id: str, status: str) -> dict[str, Any]:
    return wait_until(lambda: (c := command(client, command_id))["status"] == status and c,
                      what=f"command {status}")


def events_of(client, platform, *types: type[Event]) -> list[Event]:
    """Start recording bus events of these types (on the app's event loop)."""
    seen: list[Event] = []
    for event_type in types:
        client.portal.call(platform.bus.subscribe, event_type, seen.append)
    return seen


def wake(platform, kind) -> None:
    service = find_service(platform, kind)
    assert service is not None
    service.wake()


# -------------------------------------------------------------------------------------------- systems


def test_system_registry_crud(client, receiver):
    created = register(client, receiver, health=True)
    assert created["status"] == "unknown" or created["status"] == "up"
    assert created["commandUrl"].endswith("/commands") and created["department"] == DEPARTMENT
    assert client.post("/api/v1/systems", json={"id": SYSTEM, "name": "again", "kind": "other"}).status_code == 409
    for n in range(3):
        register(client, system_id=f"urn:ngsi-ld:ConnectedSystem:s{n}", push=False, kind="signal-controller")
    page = client.get("/api/v1/systems", params={"limit": 2})
    assert len(page.json()["items"]) == 2 and page.json()["next_cursor"]
    rest = client.get("/api/v1/systems", params={"limit": 2, "cursor": page.json()["next_cursor"]}).json()
    assert len(rest["items"]) == 2 and rest["next_cursor"] is None
    signals = client.get("/api/v1/systems", params={"kind": "signal-controller"}).json()["items"]
    assert len(signals) == 3
    changed = client.patch(f"/api/v1/systems/{SYSTEM}", json={"name": "Lighting", "commandUrl": None}).json()
    assert changed["name"] == "Lighting" and changed["commandUrl"] is None
    assert client.delete(f"/api/v1/systems/{SYSTEM}").status_code == 204
    assert client.get(f"/api/v1/systems/{SYSTEM}").status_code == 404


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "x", "kind": "iot-platform", "commandUrl": "ftp://x"}, "body.commandUrl"),
    ({"name": "x", "kind": "iot-platform", "healthUrl": "http://"}, "body.healthUrl"),
    ({"name": "x", "kind": "toaster"}, "body.kind"),
    ({"kind": "other"}, "body.name"),
    ({"name": "x", "kind": "other", "department": "999999"}, "department"),
    ({"id": "lighting", "name": "x", "kind": "other"}, "id"),
])
def test_bad_system_input_names_the_field(client, body, field):
    response = client.post("/api/v1/systems", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [e["field"] for e in response.json()["errors"]]


def test_health_follows_a_real_health_endpoint(client, receiver, clock, platform):
    seen = events_of(client, platform, SystemHealthChanged)
    register(client, receiver, health=True)
    up = wait_until(lambda: (s := client.get(f"/api/v1/systems/{SYSTEM}").json())["status"] == "up" and s,
                    what="system up")
    assert up["lastCheckAt"] == up["lastSeenAt"] == "2026-11-25T08:00:00Z"
    assert any(r.method == "GET" and r.path == "/health" for r in receiver.requests)

    receiver.health_status = 503
    clock.advance(30)
    wake(platform, HealthChecker)
    down = wait_until(lambda: (s := client.get(f"/api/v1/systems/{SYSTEM}").json())["status"] == "down" and s,
                      what="system down")
    assert down["lastError"].startswith("HTTP 503") and down["lastSeenAt"] == "2026-11-25T08:00:00Z"

    receiver.health_status, receiver.health_body = 200, {"status": "degraded", "detail": "one lamp bank offline"}
    clock.advance(30)
    wake(platform, HealthChecker)
    degraded = wait_until(lambda: (s := client.get(f"/api/v1/systems/{SYSTEM}").json())["status"] == "degraded"
                          and s, what="system degraded")
    assert degraded["lastError"] == "one lamp bank offline"
    assert client.get("/api/v1/systems", params={"status": "degraded"}).json()["items"][0]["id"] == SYSTEM
    client.portal.call(platform.bus.drain)
    assert [(e.previous, e.status) for e in seen] == [("unknown", "up"), ("up", "down"), ("down", "degraded")]


def test_unreachable_health_endpoint_means_down(client, clock, platform):
    dead = Receiver()
    url = dead.url("/health")
    dead.close()
    register(client, system_id=SYSTEM, push=False, healthUrl=url)
    down = wait_until(lambda: (s := client.get(f"/api/v1/systems/{SYSTEM}").json())["status"] == "down" and s,
                      what="system down")
    assert "Connect" in down["lastError"]


def test_system_goes_down_when_heartbeats_stop(client, clock, platform):
    register(client, push=False)
    beat = client.post(f"/api/v1/systems/{SYSTEM}/heartbeat")
    assert beat.status_code == 200 and beat.json()["status"] == "up"
    clock.advance(60)
    assert client.post(f"/api/v1/systems/{SYSTEM}/heartbeat", json={"status": "degraded", "detail": "disk 95%"}) \
        .json()["lastError"] == "disk 95%"
    clock.advance(89)
    wake(platform, HealthChecker)
    time.sleep(0.2)
    assert client.get(f"/api/v1/systems/{SYSTEM}").json()["status"] == "degraded"  # still within 90 s
    clock.advance(2)
    wake(platform, HealthChecker)
    down = wait_until(lambda: (s := client.get(f"/api/v1/systems/{SYSTEM}").json())["status"] == "down" and s,
                      what="system down")
    assert "no heartbeat" in down["lastError"]
    assert client.post(f"/api/v1/systems/{SYSTEM}/heartbeat").json()["status"] == "up"
    assert client.post("/api/v1/systems/urn:ngsi-ld:ConnectedSystem:nope/heartbeat").status_code == 404
    bad = client.post(f"/api/v1/systems/{SYSTEM}/heartbeat", json={"status": "sleepy"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "body.status"


# ------------------------------------------------------------------------------------------- commands


def test_command_to_an_entity_acknowledged_synchronously(client, receiver, platform):
    seen = events_of(client, platform, CommandIssued, CommandStatusChanged)
    receiver.reply_body = {"status": "acknowledged", "reason": "lamp off", "result": {"powerState": "off"}}
    register(client, receiver)
    lamp(client)
    issued = issue(client, parameters={"reason": "dawn"})
    assert issued["status"] == "pending" and issued["system"] == SYSTEM and issued["targetKind"] == "entity"

    done = wait_status(client, issued["id"], "acknowledged")
    assert [h["status"] for h in done["history"]] == ["pending", "sent", "acknowledged"]
    assert done["history"][-1]["reason"] == "lamp off" and done["result"] == {"powerState": "off"}
    assert all(h["at"] == "2026-11-25T08:00:00Z" for h in done["history"])
    assert done["attempts"] == 1

    [post] = receiver.posts("/commands")
    assert post.body["id"] == issued["id"] and post.body["name"] == "switchOff"
    assert post.body["parameters"] == {"reason": "dawn"} and post.body["target"] == LAMP
    assert post.body["ackUrl"] == f"/api/v1/commands/{issued['id']}/ack"

    client.portal.call(platform.bus.drain)
    assert [type(e).__name__ for e in seen][:1] == ["CommandIssued"]
    assert [e.status for e in seen if isinstance(e, CommandStatusChanged)] == ["sent", "acknowledged"]


def test_command_acknowledged_asynchronously_and_illegal_transitions(client, receiver, platform):
    receiver.reply_status, receiver.reply_body = 202, {"accepted": True}
    register(client, receiver)
    issued = issue(client, SYSTEM, "restart")  # addressed to the system itself
    assert issued["targetKind"] == "system"
    sent = wait_status(client, issued["id"], "sent")
    assert sent["ackDeadline"] == "2026-11-25T08:01:00Z"

    ack = client.post(f"/api/v1/commands/{issued['id']}/ack", json={"status": "acknowledged", "reason": "restarted"})
    assert ack.status_code == 200
    assert [(h["status"], h["reason"]) for h in ack.json()["history"]] == [
        ("pending", "issued"), ("sent", "accepted by the system; awaiting acknowledgement"),
        ("acknowledged", "restarted")]
    assert ack.json()["ackDeadline"] is None

    again = client.post(f"/api/v1/commands/{issued['id']}/ack", json={"status": "failed", "reason": "late"})
    assert again.status_code == 409 and again.headers["content-type"] == "application/problem+json"
    assert "acknowledged" in again.json()["detail"] and "none" in again.json()["detail"]
    assert again.json()["errors"][0]["field"] == "status"

    bad = client.post(f"/api/v1/commands/{issued['id']}/ack", json={"status": "sent"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "body.status"
    assert client.post("/api/v1/commands/nope/ack", json={"status": "failed"}).status_code == 404


def test_sent_command_not_acknowledged_in_time_fails(client, receiver, clock, platform):
    receiver.reply_status = 204
    register(client, receiver)
    lamp(client)
    issued = issue(client)
    wait_status(client, issued["id"], "sent")
    clock.advance(59)
    wake(platform, CommandDispatcher)
    time.sleep(0.2)
    assert command(client, issued["id"])["status"] == "sent"
    clock.advance(2)
    wake(platform, CommandDispatcher)
    failed = wait_status(client, issued["id"], "failed")
    assert "timeout" in failed["reason"] and failed["history"][-1]["actor"] == "system:command-dispatcher"
    late = client.post(f"/api/v1/commands/{issued['id']}/ack", json={"status": "acknowledged"})
    assert late.status_code == 409 and "from failed" in late.json()["detail"]


def test_push_retries_with_backoff_then_succeeds_or_fails(client, receiver, clock, platform):
    receiver.fail_next = 1
    receiver.reply_body = {"status": "acknowledged"}
    register(client, receiver)
    lamp(client)
    first = issue(client)
    retrying = wait_until(lambda: (c := command(client, first["id"]))["attempts"] == 1 and c, what="first attempt")
    assert retrying["status"] == "pending" and retrying["lastError"].startswith("HTTP 500")
    clock.advance(1)
    wake(platform, CommandDispatcher)
    assert wait_status(client, first["id"], "acknowledged")["attempts"] == 2

    receiver.fail_next, receiver.fail_status = 100, 503
    second = issue(client)
    for attempt in (1, 2):
        wait_until(lambda a=attempt: command(client, second["id"])["attempts"] == a, what=f"attempt {attempt}")
        clock.advance(8)
        wake(platform, CommandDispatcher)
    failed = wait_status(client, second["id"], "failed")
    assert failed["attempts"] == 3 and failed["reason"].startswith("gave up after 3 attempts: HTTP 503")
    assert [h["status"] for h in failed["history"]] == ["pending", "failed"]


def test_command_rejected_by_the_system_fails_at_once(client, receiver):
    receiver.fail_next, receiver.fail_status = 1, 400
    register(client, receiver)
    lamp(client)
    failed = wait_status(client, issue(client)["id"], "failed")
    assert failed["attempts"] == 1 and failed["reason"].startswith("rejected by the system: HTTP 400")


def test_system_reporting_failure_in_its_answer(client, receiver):
    receiver.reply_body = {"status": "failed", "reason": "lamp unreachable"}
    register(client, receiver)
    lamp(client)
    failed = wait_status(client, issue(client)["id"], "failed")
    assert [(h["status"], h["reason"]) for h in failed["history"]][1:] == [
        ("sent", "delivered to the system"), ("failed", "lamp unreachable")]


def test_pull_model(client, platform):
    register(client, push=False)
    lamp(client)
    issued = [issue(client, name=name) for name in ("switchOff", "dim")]
    pulled = client.get(f"/api/v1/systems/{SYSTEM}/commands")
    assert pulled.status_code == 200
    assert [c["id"] for c in pulled.json()["items"]] == [c["id"] for c in issued]  # oldest first
    time.sleep(0.2)
    assert command(client, issued[0]["id"])["status"] == "pending"  # nothing pushes to a pulling system

    done = client.post(f"/api/v1/commands/{issued[0]['id']}/ack", json={"status": "acknowledged"}).json()
    assert [h["status"] for h in done["history"]] == ["pending", "acknowledged"]
    failed = client.post(f"/api/v1/commands/{issued[1]['id']}/ack",
                         json={"status": "failed", "reason": "lamp stuck"}).json()
    assert failed["status"] == "failed" and failed["reason"] == "lamp stuck"
    assert client.get(f"/api/v1/systems/{SYSTEM}/commands").json()["items"] == []
    assert len(client.get(f"/api/v1/systems/{SYSTEM}/commands", params={"status": "failed"}).json()["items"]) == 1
    assert client.get("/api/v1/systems/urn:ngsi-ld:ConnectedSystem:nope/commands").status_code == 404


def test_command_list_filters_and_pages(client, platform):
    register(client, push=False)
    register(client, system_id="urn:ngsi-ld:ConnectedSystem:other", push=False)
    lamp(client)
    mine = [issue(client) for _ in range(3)]
    theirs = issue(client, "urn:ngsi-ld:ConnectedSystem:other", "restart")
    client.post(f"/api/v1/commands/{mine[0]['id']}/ack", json={"status": "acknowledged"})

    def ids(**params: Any) -> list[str]:
        return [c["id"] for c in client.get("/api/v1/commands", params=params).json()["items"]]

    assert ids() == [theirs["id"]] + [c["id"] for c in reversed(mine)]  # newest first
    assert ids(system=SYSTEM, status="pending") == [mine[2]["id"], mine[1]["id"]]
    assert ids(target="urn:ngsi-ld:ConnectedSystem:other") == [theirs["id"]]
    first = client.get("/api/v1/commands", params={"limit": 3}).json()
    rest = client.get("/api/v1/commands", params={"limit": 3, "cursor": first["next_cursor"]}).json()
    assert [c["id"] for c in first["items"] + rest["items"]] == ids() and rest["next_cursor"] is None
    bad = client.get("/api/v1/commands", params={"status": "lost"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "query.status"
    # A system with commands in flight cannot be removed.
    assert client.delete(f"/api/v1/systems/{SYSTEM}").status_code == 409


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"target": "urn:ngsi-ld:Streetlight:none", "name": "switchOff"}, 404, "target"),
    ({"target": "not a urn", "name": "switchOff"}, 422, "target"),
    ({"target": LAMP, "name": "switchOff", "system": "urn:ngsi-ld:ConnectedSystem:none"}, 422, "system"),
    ({"target": LAMP, "name": "switch off!"}, 422, "body.name"),
    ({"target": LAMP}, 422, "body.name"),
    ({"target": LAMP, "name": "switchOff", "parameters": [1]}, 422, "body.parameters"),
])
def test_bad_commands_are_problems_naming_the_field(client, body, status, field):
    register(client, push=False)
    lamp(client)
    response = client.post("/api/v1/commands", json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [e["field"] for e in response.json()["errors"]]


def test_system_is_resolved_from_controlled_by_or_given(client):
    register(client, push=False)
    lamp(client, controlled_by=None, entity_id="urn:ngsi-ld:Streetlight:XH-0002")
    lamp(client, controlled_by="urn:ngsi-ld:ConnectedSystem:unregistered", entity_id="urn:ngsi-ld:Streetlight:XH-0003")
    no_relation = client.post("/api/v1/commands", json={"target": "urn:ngsi-ld:Streetlight:XH-0002", "name": "on"})
    assert no_relation.status_code == 422 and no_relation.json()["errors"][0]["field"] == "system"
    assert "controlledBy" in no_relation.json()["detail"]
    unknown = client.post("/api/v1/commands", json={"target": "urn:ngsi-ld:Streetlight:XH-0003", "name": "on"})
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "target"
    given_system = issue(client, "urn:ngsi-ld:Streetlight:XH-0002", "on", system=SYSTEM)
    assert given_system["system"] == SYSTEM and given_system["targetKind"] == "entity"


# ----------------------------------------------------------------------------------------- state machine


STATUSES = list(TRANSITIONS)


@given(st.lists(st.sampled_from(STATUSES), max_size=8))
def test_transition_table_is_enforced(moves):
    """Whatever is asked, a command only ever follows the table, and the final states stay final."""
    current, path = "pending", ["pending"]
    for wanted in moves:
        try:
            check_transition(current, wanted)
        except Conflict as exc:
            assert wanted not in TRANSITIONS[current]
            assert exc.status == 409 and exc.errors[0].field == "status"
            continue
        assert wanted in TRANSITIONS[current]
        current = wanted
        path.append(current)
    assert len(path) <= 3 and len(set(path)) == len(path)  # no status twice, at most pending → sent → final
    if current in ("acknowledged", "failed"):
        assert TRANSITIONS[current] == ()
