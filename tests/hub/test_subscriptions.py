"""Subscriptions through the API, delivered to a real HTTP receiver by the running delivery worker.

Time comes from the frozen clock: back-off and throttling are passed by moving the clock and waking the
worker, never by sleeping. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from citybrain.hub.background import backoff_delay, find_service
from citybrain.hub.subscriptions.flows import WebhookDelivery
from citybrain.platform import Platform
from citybrain.settings import Settings
from tests.hub.receiver import Received, Receiver, wait_until

AQ = "AirQualityObserved"
TOWN = "330106002"  # 北山街道, Xihu
VILLAGE = "330106002051"  # 上保社区, under TOWN
OTHER_TOWN = "330106004"


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(db=db_url, home=tmp_path, bus="memory", webhook_max_attempts=3, webhook_timeout_s=2.0,
                    retry_backoff_base_s=1.0, retry_backoff_max_s=8.0, webhook_batch_size=5)


def delivery(platform: Platform) -> WebhookDelivery:
    worker = find_service(platform, WebhookDelivery)
    assert worker is not None, "the platform runs a webhook delivery service"
    return worker


def air(n: int, *, pm25: float = 10.0, org_unit: str | None = TOWN, lon: float = 120.13, lat: float = 30.26,
        **attrs: Any) -> dict[str, Any]:
    entity: dict[str, Any] = {"id": f"urn:ngsi-ld:{AQ}:XH-{n:03d}", "type": AQ,
                              "pm25": {"type": "Property", "value": pm25},
                              "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}}}
    if org_unit is not None:
        entity["orgUnit"] = {"type": "Relationship", "object": f"urn:ngsi-ld:OrgUnit:{org_unit}"}
    entity.update({name: {"type": "Property", "value": value} for name, value in attrs.items()})
    return entity


def upsert(client, *entities: dict[str, Any], options: str = "replace") -> None:
    response = client.post(f"/api/v1/entityOperations/upsert?options={options}", json=list(entities))
    assert response.status_code == 200, response.text


def subscribe(client, receiver: Receiver, path: str = "/hook", **spec: Any) -> dict[str, Any]:
    body = {"entityTypes": [AQ], "endpoint": receiver.url(path), **spec}
    response = client.post("/api/v1/subscriptions", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def notifications(client, subscription_id: str, **params: Any) -> list[dict[str, Any]]:
    response = client.get(f"/api/v1/subscriptions/{subscription_id}/notifications", params=params)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def entity_ids(posts: list[Received]) -> list[str]:
    return [entity["id"] for post in posts for entity in post.body["data"]]


# ------------------------------------------------------------------------------------------------ CRUD


def test_create_read_update_list_delete(client, receiver):
    created = subscribe(client, receiver, name="air", q="pm25>75", orgUnit=TOWN, watchedAttributes=["pm25"],
                        throttling=5, expiresAt="2027-01-01T00:00:00Z")
    assert created["id"].startswith("urn:ngsi-ld:Subscription:")
    assert created["status"] == "active"
    assert created["triggers"] == ["created", "updated"]
    assert created["delivery"] == {"pending": 0, "delivered": 0, "failed": 0, "lastSuccessAt": None,
                                   "lastFailureAt": None, "lastError": None, "nextAttemptAt": None}
    one = client.get(f"/api/v1/subscriptions/{created['id']}").json()
    assert one["q"] == "pm25>75" and one["orgUnit"] == TOWN and one["throttling"] == 5

    paused = client.patch(f"/api/v1/subscriptions/{created['id']}", json={"status": "paused", "q": None}).json()
    assert paused["status"] == "paused" and paused["q"] is None

    for n in range(3):
        subscribe(client, receiver, id=f"urn:ngsi-ld:Subscription:s{n}")
    first = client.get("/api/v1/subscriptions", params={"limit": 2})
    assert first.status_code == 200 and len(first.json()["items"]) == 2
    assert 'rel="next"' in first.headers["link"]
    rest = client.get("/api/v1/subscriptions", params={"limit": 2, "cursor": first.json()["next_cursor"]}).json()
    listed = [s["id"] for s in first.json()["items"] + rest["items"]]
    assert sorted(listed) == listed and len(listed) == 4 and rest["next_cursor"] is None
    assert [s["id"] for s in client.get("/api/v1/subscriptions", params={"status": "paused"}).json()["items"]] \
        == [created["id"]]

    assert client.delete(f"/api/v1/subscriptions/{created['id']}").status_code == 204
    gone = client.get(f"/api/v1/subscriptions/{created['id']}")
    assert gone.status_code == 404 and gone.headers["content-type"] == "application/problem+json"
    assert client.post("/api/v1/subscriptions", json={"id": "urn:ngsi-ld:Subscription:s0", "entityTypes": [AQ],
                                                      "endpoint": receiver.url()}).status_code == 409


@pytest.mark.parametrize(("body", "field"), [
    ({"entityTypes": [AQ], "endpoint": "ftp://example.org/x"}, "body.endpoint"),
    ({"entityTypes": [AQ], "endpoint": "not a url"}, "body.endpoint"),
    ({"entityTypes": [AQ]}, "body.endpoint"),
    ({"entityTypes": ["NoSuchType"], "endpoint": "http://example.org/"}, "entityTypes[0]"),
    ({"endpoint": "http://example.org/"}, "entityTypes"),
    ({"entityTypes": [AQ], "q": "pm25>>", "endpoint": "http://example.org/"}, "q"),
    ({"entityTypes": [AQ], "orgUnit": "999", "endpoint": "http://example.org/"}, "orgUnit"),
    ({"entityTypes": [AQ], "bbox": [121, 30, 120, 31], "endpoint": "http://example.org/"}, "bbox"),
    ({"entityTypes": [AQ], "near": {"lon": 200, "lat": 30, "maxDistance": 5}, "endpoint": "http://example.org/"},
     "body.near.lon"),
    ({"entityIds": ["not-a-urn"], "endpoint": "http://example.org/"}, "entityIds[0]"),
    ({"entityTypes": [AQ], "watchedAttributes": ["bad name"], "endpoint": "http://example.org/"},
     "watchedAttributes[0]"),
    ({"entityTypes": [AQ], "expiresAt": "2020-01-01T00:00:00Z", "endpoint": "http://example.org/"}, "expiresAt"),
    ({"entityTypes": [AQ], "expiresAt": "2030-01-01T00:00:00", "endpoint": "http://example.org/"}, "body.expiresAt"),
    ({"entityTypes": [AQ], "throttling": -1, "endpoint": "http://example.org/"}, "body.throttling"),
    ({"entityTypes": [AQ], "triggers": ["exploded"], "endpoint": "http://example.org/"}, "body.triggers[0]"),
    ({"entityTypes": [AQ], "endpoint": "http://example.org/", "colour": "red"}, "body.colour"),
    ({"id": "sub-1", "entityTypes": [AQ], "endpoint": "http://example.org/"}, "id"),
])
def test_bad_input_is_a_problem_naming_the_field(client, body, field):
    response = client.post("/api/v1/subscriptions", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [e["field"] for e in response.json()["errors"]]


def test_bad_requests_on_existing_routes(client, receiver):
    sub = subscribe(client, receiver)
    url = f"/api/v1/subscriptions/{sub['id']}"
    assert client.patch(url, json={"endpoint": None}).json()["errors"][0]["field"] == "endpoint"
    assert client.patch(url, json={"entityTypes": ["Nope"]}).json()["errors"][0]["field"] == "entityTypes[0]"
    assert client.get(url).json()["entityTypes"] == [AQ]  # the refused change left it as it was
    bad_cursor = client.get(f"{url}/notifications", params={"cursor": "%%%"})
    assert bad_cursor.status_code == 422 and bad_cursor.json()["errors"][0]["field"] == "cursor"
    assert client.get("/api/v1/subscriptions/urn:ngsi-ld:Subscription:none/notifications").status_code == 404
    raw = client.post("/api/v1/subscriptions", content=b"{not json", headers={"Content-Type": "application/json"})
    assert raw.status_code == 422 and raw.headers["content-type"] == "application/problem+json"


# -------------------------------------------------------------------------------------------- matching


def test_matching_by_type_q_geo_org_unit_and_watched_attributes(client, receiver):
    subs = {
        "type": subscribe(client, receiver, "/type"),
        "ids": subscribe(client, receiver, "/ids", entityTypes=[], entityIds=[air(2)["id"]]),
        "q": subscribe(client, receiver, "/q", q="pm25>75"),
        "bbox": subscribe(client, receiver, "/bbox", bbox=[120.0, 30.0, 120.2, 30.3]),
        "near": subscribe(client, receiver, "/near", near={"lon": 120.13, "lat": 30.26, "maxDistance": 1000}),
        "org": subscribe(client, receiver, "/org", orgUnit=TOWN),
        "watched": subscribe(client, receiver, "/watched", watchedAttributes=["no2"]),
        "other_type": subscribe(client, receiver, "/streetlights", entityTypes=["Streetlight"]),
        "projected": subscribe(client, receiver, "/projected", q="pm25>75", notifyAttributes=["pm25"]),
    }
    upsert(client,
           air(1, pm25=80, org_unit=VILLAGE),                   # in TOWN via its village, inside bbox and near
           air(2, pm25=20, org_unit=OTHER_TOWN, lon=120.5),     # outside bbox, far away, other town
           air(3, pm25=90, org_unit=None, lat=30.2655))         # no org unit, ~600 m from the near point
    upsert(client, air(2, pm25=20, org_unit=OTHER_TOWN, lon=120.5, no2=40), options="update")  # only no2 changes

    def matched(name: str) -> list[str]:
        return sorted({n["entityId"] for n in notifications(client, subs[name]["id"])})

    ids = [air(n)["id"] for n in (1, 2, 3)]
    assert matched("type") == ids
    assert matched("ids") == [ids[1]]
    assert matched("q") == [ids[0], ids[2]]
    assert matched("bbox") == [ids[0], ids[2]]
    assert matched("near") == [ids[0], ids[2]]
    assert matched("org") == [ids[0]]
    assert matched("watched") == [ids[1]]  # created with no no2, then updated with it
    assert matched("other_type") == []
    assert len(notifications(client, subs["type"]["id"])) == 4  # three creations and one update

    projected = receiver.wait_for_posts(1, "/projected")[0].body["data"][0]
    assert set(projected) == {"id", "type", "pm25"}


def test_watched_attribute_unchanged_means_no_notification(client, receiver):
    sub = subscribe(client, receiver, watchedAttributes=["pm25"])
    upsert(client, air(1, pm25=10, no2=5))
    upsert(client, air(1, pm25=10, no2=6))  # pm25 unchanged
    upsert(client, air(1, pm25=11, no2=6))
    assert [n["operation"] for n in notifications(client, sub["id"])] == ["updated", "created"]


def test_deletion_is_notified_only_when_asked(client, receiver):
    quiet = subscribe(client, receiver, "/quiet")
    loud = subscribe(client, receiver, "/loud", triggers=["deleted"])
    upsert(client, air(1))
    assert client.delete(f"/api/v1/entities/{air(1)['id']}").status_code == 204
    assert [n["operation"] for n in notifications(client, quiet["id"])] == ["created"]
    deleted = notifications(client, loud["id"])
    assert [n["operation"] for n in deleted] == ["deleted"]
    assert deleted[0]["data"]["deletedAt"] == "2026-11-25T08:00:00Z"


def test_paused_and_expired_subscriptions_do_not_match(client, receiver, clock):
    paused = subscribe(client, receiver, "/paused", status="paused")
    expiring = subscribe(client, receiver, "/expiring", expiresAt="2026-11-25T08:00:30Z")
    upsert(client, air(1))
    assert notifications(client, paused["id"]) == []
    assert len(notifications(client, expiring["id"])) == 1
    clock.advance(60)
    upsert(client, air(1, pm25=50))
    assert len(notifications(client, expiring["id"])) == 1
    assert client.get(f"/api/v1/subscriptions/{expiring['id']}").json()["status"] == "expired"


# ------------------------------------------------------------------------------------------- delivery


def test_notification_is_delivered_to_the_webhook(client, receiver):
    sub = subscribe(client, receiver)
    upsert(client, air(1, pm25=42))
    post = receiver.wait_for_posts(1)[0]
    assert post.headers["Content-Type"] == "application/json"
    body = post.body
    assert body["type"] == "Notification" and body["subscriptionId"] == sub["id"]
    assert body["id"].startswith("urn:ngsi-ld:Notification:")
    assert body["notifiedAt"] == "2026-11-25T08:00:00Z"
    assert body["data"] == [{**air(1, pm25=42)}]

    status = wait_until(lambda: (s := client.get(f"/api/v1/subscriptions/{sub['id']}").json())["delivery"]["delivered"]
                        and s, what="delivered status")
    assert status["delivery"]["pending"] == 0
    assert status["delivery"]["lastSuccessAt"] == "2026-11-25T08:00:00Z"
    [item] = notifications(client, sub["id"])
    assert item["status"] == "delivered" and item["attempts"] == 1 and item["deliveredAt"] == "2026-11-25T08:00:00Z"


def test_retries_with_backoff_then_success(client, receiver, clock, platform):
    receiver.fail_next = 2
    sub = subscribe(client, receiver)
    upsert(client, air(1))
    receiver.wait_for_posts(1)

    def attempts() -> dict[str, Any]:
        return notifications(client, sub["id"])[0]

    first = wait_until(lambda: (n := attempts())["attempts"] == 1 and n, what="first attempt recorded")
    assert first["status"] == "pending" and first["lastError"].startswith("HTTP 500")
    state = client.get(f"/api/v1/subscriptions/{sub['id']}").json()["delivery"]
    assert state["pending"] == 1 and state["lastError"].startswith("HTTP 500")
    retry_at = datetime.fromisoformat(state["nextAttemptAt"])
    assert 0.5 <= (retry_at - clock.now()).total_seconds() <= 1.0  # base 1 s, half of it jitter

    delivery(platform).wake()  # not due yet: nothing is sent
    time.sleep(0.3)
    assert len(receiver.posts()) == 1

    clock.advance(1.0)
    delivery(platform).wake()
    receiver.wait_for_posts(2)
    wait_until(lambda: attempts()["attempts"] == 2, what="second attempt recorded")
    retry_at = datetime.fromisoformat(client.get(f"/api/v1/subscriptions/{sub['id']}").json()["delivery"]["nextAttemptAt"])
    assert 1.0 <= (retry_at - clock.now()).total_seconds() <= 2.0  # doubled

    clock.advance(2.0)
    delivery(platform).wake()
    posts = receiver.wait_for_posts(3)
    assert all(p.body["id"] == posts[0].body["id"] for p in posts)  # the same batch each time: receivers can dedupe
    done = wait_until(lambda: (n := attempts())["status"] == "delivered" and n, what="delivered")
    assert done["attempts"] == 3 and done["lastError"] is None
    state = client.get(f"/api/v1/subscriptions/{sub['id']}").json()["delivery"]
    assert state["delivered"] == 1 and state["failed"] == 0 and state["lastFailureAt"] is not None


def test_failure_after_max_attempts_is_visible(client, receiver, clock, platform):
    receiver.fail_next = 1000
    receiver.fail_status = 503
    sub = subscribe(client, receiver)
    upsert(client, air(1))
    for attempt in (1, 2, 3):
        receiver.wait_for_posts(attempt)
        wait_until(lambda a=attempt: notifications(client, sub["id"])[0]["attempts"] == a, what=f"attempt {attempt}")
        clock.advance(8)
        delivery(platform).wake()
    [failed] = notifications(client, sub["id"], status="failed")
    assert failed["attempts"] == 3 and failed["lastError"].startswith("HTTP 503")
    state = client.get(f"/api/v1/subscriptions/{sub['id']}").json()["delivery"]
    assert state == {**state, "pending": 0, "delivered": 0, "failed": 1}
    assert state["lastFailureAt"] and state["lastError"].startswith("HTTP 503")
    time.sleep(0.3)
    assert len(receiver.posts()) == 3  # given up: no fourth try
    assert notifications(client, sub["id"], status="pending") == []


def test_unreachable_webhook_is_retried(client, receiver, clock, platform):
    dead = Receiver()
    url = dead.url()
    dead.close()  # nothing listens there any more
    sub = subscribe(client, receiver, endpoint=url)
    upsert(client, air(1))
    first = wait_until(lambda: (n := notifications(client, sub["id"])[0])["attempts"] == 1 and n, what="attempt")
    assert first["status"] == "pending" and "Connect" in first["lastError"]


def test_throttling_batches_changes_into_one_post(client, receiver, clock, platform):
    subscribe(client, receiver, throttling=60)
    upsert(client, air(1, pm25=1))
    receiver.wait_for_posts(1)
    for value in (2, 3, 4):
        upsert(client, air(1, pm25=value))
    time.sleep(0.3)
    assert len(receiver.posts()) == 1  # held back by throttling
    clock.advance(60)
    delivery(platform).wake()
    second = receiver.wait_for_posts(2)[1]
    assert [e["pm25"]["value"] for e in second.body["data"]] == [2, 3, 4]


def test_batches_go_out_in_order(client, receiver):
    subscribe(client, receiver)
    upsert(client, *[air(n) for n in range(1, 13)])
    posts = receiver.wait_for_posts(3)  # batch size 5: 5 + 5 + 2
    assert [len(p.body["data"]) for p in posts] == [5, 5, 2]
    assert entity_ids(posts) == [air(n)["id"] for n in range(1, 13)]


def test_paused_subscription_holds_its_queue_until_resumed(client, receiver, clock, platform):
    sub = subscribe(client, receiver, throttling=60)
    upsert(client, air(1, pm25=1))
    receiver.wait_for_posts(1)
    upsert(client, air(1, pm25=2))  # queued behind the throttle
    client.patch(f"/api/v1/subscriptions/{sub['id']}", json={"status": "paused"})
    upsert(client, air(1, pm25=3))  # paused: not matched
    clock.advance(120)
    delivery(platform).wake()
    time.sleep(0.3)
    assert len(receiver.posts()) == 1
    assert client.get(f"/api/v1/subscriptions/{sub['id']}").json()["delivery"]["pending"] == 1
    client.patch(f"/api/v1/subscriptions/{sub['id']}", json={"status": "active"})
    second = receiver.wait_for_posts(2)[1]
    assert [e["pm25"]["value"] for e in second.body["data"]] == [2]


# -------------------------------------------------------------------------------------- transactional


def test_outbox_row_is_written_in_the_entity_transaction(client, receiver, platform):
    sub = subscribe(client, receiver)

    def explode(_session, _changes):
        raise RuntimeError("a later hook fails, so the whole write rolls back")

    platform.change_hooks.append(explode)
    try:
        with pytest.raises(RuntimeError):
            upsert(client, air(1))
    finally:
        platform.change_hooks.remove(explode)
    assert client.get(f"/api/v1/entities/{air(1)['id']}").status_code == 404
    assert notifications(client, sub["id"]) == []
    time.sleep(0.3)
    assert receiver.posts() == []

    upsert(client, air(2))
    assert [n["entityId"] for n in notifications(client, sub["id"])] == [air(2)["id"]]
    assert entity_ids(receiver.wait_for_posts(1)) == [air(2)["id"]]


def test_two_workers_never_send_the_same_notification(client, receiver, platform, settings, clock):
    """Three workers (the app's and two of other platforms on the same store, as other processes would be)
    drain the same outbox at once: every notification goes out exactly once, in order."""
    subs = [subscribe(client, receiver, f"/w{i}", throttling=3600) for i in range(3)]
    upsert(client, air(0))
    for i in range(3):
        receiver.wait_for_posts(1, f"/w{i}")
    upsert(client, *[air(n) for n in range(1, 31)])  # 30 changes × 3 subscriptions, held by the throttle
    for sub in subs:  # hold them by pausing instead, so all workers can be ready when they are resumed
        client.patch(f"/api/v1/subscriptions/{sub['id']}", json={"status": "paused", "throttling": None})
    expected = [air(n)["id"] for n in range(31)]

    def all_sent() -> bool:
        return all(len(entity_ids(receiver.posts(f"/w{i}"))) >= len(expected) for i in range(3))

    others = [Platform(settings, clock=clock) for _ in range(2)]
    ready = threading.Barrier(3)

    def drain(worker: WebhookDelivery) -> None:
        async def run() -> None:
            await worker.setup()
            try:
                ready.wait(timeout=10)
                deadline = time.monotonic() + 20
                while not all_sent() and time.monotonic() < deadline:
                    if not (await worker.deliver_due()).subscriptions:
                        await asyncio.sleep(0.005)
            finally:
                await worker.teardown()
        asyncio.run(run())

    try:
        threads = [threading.Thread(target=drain, args=(WebhookDelivery(p),)) for p in others]
        for thread in threads:
            thread.start()
        ready.wait(timeout=10)
        for sub in subs:
            client.patch(f"/api/v1/subscriptions/{sub['id']}", json={"status": "active"})  # wakes the app's worker
        for thread in threads:
            thread.join(timeout=30)
        wait_until(all_sent, what="every subscription drained")
    finally:
        for other in others:
            other.dispose()
    time.sleep(0.2)
    for i in range(3):
        assert entity_ids(receiver.posts(f"/w{i}")) == expected, f"/w{i} got duplicates or lost order"


def test_backoff_delay_is_exponential_capped_and_jittered():
    import random

    rng = random.Random(7)
    for attempts, full in ((1, 1), (2, 2), (3, 4), (4, 8), (10, 8)):
        delays = [backoff_delay(attempts, base_s=1, max_s=8, rng=rng) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in delays)
        assert len(set(delays)) > 100  # jittered
