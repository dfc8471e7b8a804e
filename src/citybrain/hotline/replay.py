"""Replay real complaint records through the API, in the order they happened: Los Angeles MyLA311 requests
(filed over Open311, then taken to closure, dismissal or left open as their status says) and TipDM citizen
messages (taken over the 接诉即办 intake, classified, located and de-duplicated, then closed).

Each record becomes timed steps; steps run in time order across records. In process (the tests, with a
frozen clock) the clock is set to each step's moment, so durations and SLA figures are the records' own;
against a running server (`citybrain hotline replay`) steps run as fast as the server takes them, or
`--speed` times faster than they happened.
"""

from __future__ import annotations

import csv
import heapq
import http.client
import itertools
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, Self
from zoneinfo import ZoneInfo

import orjson

LOS_ANGELES = ZoneInfo("America/Los_Angeles")
CHINA = ZoneInfo("Asia/Shanghai")
RECEIVE_AFTER = timedelta(minutes=30)  # the records say when a request was closed, not when it was received


class Client(Protocol):
    """`HttpClient` against a running server, or a test client."""

    def post(self, url: str, **kwargs: Any) -> Any: ...

    def get(self, url: str, **kwargs: Any) -> Any: ...


class Answer:
    """What `HttpClient` answers: the status, the body and the body as JSON."""

    def __init__(self, status_code: int, content: bytes) -> None:
        self.status_code = status_code
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return orjson.loads(self.content)


class HttpClient:
    """A keep-alive HTTP/1.1 client on the standard library: a replay sends tens of thousands of small
    requests, and a general-purpose client spent more of the machine per request than the server did."""

    def __init__(self, base_url: str, *, timeout: float = 60.0, api_key: str = "") -> None:
        address = urllib.parse.urlsplit(base_url)
        if address.scheme not in ("http", "https") or not address.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        connection = http.client.HTTPSConnection if address.scheme == "https" else http.client.HTTPConnection
        self._connection = connection(address.hostname, address.port, timeout=timeout)
        self._base = address.path.rstrip("/")
        self._signed = {"X-API-Key": api_key} if api_key else {}

    def _send(self, method: str, url: str, body: bytes | None, content_type: str | None) -> Answer:
        headers = {"Content-Type": content_type, **self._signed} if content_type else dict(self._signed)
        for attempt in (1, 2):  # a keep-alive connection the server closed: open it again, once
            try:
                self._connection.request(method, self._base + url, body=body, headers=headers)
                response = self._connection.getresponse()
                return Answer(response.status, response.read())
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self._connection.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def get(self, url: str, *, params: dict[str, Any] | None = None) -> Answer:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return self._send("GET", url + query, None, None)

    def post(self, url: str, *, json: Any = None, data: dict[str, Any] | None = None) -> Answer:
        if data is not None:
            return self._send("POST", url, urllib.parse.urlencode(data).encode(), "application/x-www-form-urlencoded")
        return self._send("POST", url, orjson.dumps(json), "application/json")

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


@dataclass(order=True)
class Step:
    at: datetime
    order: int
    record: str = field(compare=False)
    kind: str = field(compare=False)  # open | act
    payload: dict[str, Any] = field(compare=False, default_factory=dict)


@dataclass
class ReplayReport:
    records: int = 0
    opened: int = 0
    acted: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    cases: dict[str, str] = field(default_factory=dict)  # record → case id
    reports: dict[str, int] = field(default_factory=dict)  # record → report id


def _la_time(text: str) -> datetime | None:
    if not text.strip():
        return None
    return datetime.strptime(text.strip(), "%m/%d/%y %H:%M").replace(tzinfo=LOS_ANGELES).astimezone(UTC)


def la311_steps(path: Path, *, service_codes: dict[str, str], evidence: dict[str, list[str]]) -> list[Step]:
    """MyLA311 records as steps. `service_codes`: request type → Open311 service code (the catalogue's
    references); `evidence`: service code → evidence kinds its handling needs."""
    steps: list[Step] = []
    counter = itertools.count()
    with path.open(encoding="utf-8-sig", newline="") as handle:
        for row in csv.DictReader(handle):
            created = _la_time(row["createddate"])
            code = service_codes.get(row["requesttype"])
            if created is None or code is None:
                continue
            record = row["srnumber"]
            fields = {"service_code": code, "address_string": row.get("address") or None, "device_id": record,
                      "attribute[source]": row.get("requestsource") or None}
            if row.get("latitude") and row.get("longitude"):
                fields |= {"lat": row["latitude"], "long": row["longitude"]}
            steps.append(Step(created, next(counter), record, "open", fields))
            closed = _la_time(row.get("closeddate", ""))
            status = row.get("status", "")
            if closed is None or status in ("Open", "Pending"):
                if status in ("Pending",):
                    steps.append(Step(created + RECEIVE_AFTER, next(counter), record, "act", {"action": "receive"}))
                continue
            if status == "Closed":
                received = min(created + RECEIVE_AFTER, closed)
                attachments = [{"kind": kind, "note": f"MyLA311 {record}"} for kind in evidence.get(code, [])]
                steps.append(Step(received, next(counter), record, "act", {"action": "receive"}))
                for action in ("handle", "verify", "close"):
                    body = {"action": action, **({"attachments": attachments} if action == "handle" else {})}
                    steps.append(Step(closed, next(counter), record, "act", body))
            else:  # Cancelled, Referred Out: the dispatcher takes it back and dismisses it
                reason = f"MyLA311 status {status}"
                steps.append(Step(closed, next(counter), record, "act", {"action": "return", "reason": reason}))
                steps.append(Step(closed, next(counter), record, "act", {"action": "dismiss", "reason": reason}))
    return steps


def tipdm_steps(path: Path, *, close_after: timedelta = timedelta(days=3)) -> list[Step]:
    """TipDM citizen messages as complaints taken on the web channel, each closed `close_after` later (the
    data holds no replies); handling evidence is the reply to the citizen."""
    steps: list[Step] = []
    counter = itertools.count()
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8-sig", newline="") as handle:
        for row in csv.DictReader(handle):
            moment = datetime.strptime(row["留言时间"].strip(), "%Y/%m/%d %H:%M:%S").replace(tzinfo=CHINA)
            # The board's export repeats a few messages under one id: each copy is a report of its own.
            seen[row["留言编号"]] = seen.get(row["留言编号"], 0) + 1
            record = row["留言编号"] + (f"#{seen[row['留言编号']]}" if seen[row["留言编号"]] > 1 else "")
            body = {"text": row["留言详情"].strip() or row["留言主题"].strip(), "subject": row["留言主题"].strip()[:200],
                    "channel": "web", "externalId": record, "occurredAt": moment.isoformat()}
            steps.append(Step(moment.astimezone(UTC), next(counter), record, "open", body))
            done = moment.astimezone(UTC) + close_after
            steps.append(Step(done - timedelta(days=2), next(counter), record, "act", {"action": "receive"}))
            steps.append(Step(done, next(counter), record, "act", {"action": "handle", "fill_evidence": True}))
            steps.append(Step(done, next(counter), record, "act", {"action": "verify"}))
            steps.append(Step(done, next(counter), record, "act", {"action": "close"}))
    return steps


def replay(client: Client, steps: list[Step], *, kind: str, api_key: str = "",
           set_clock: Callable[[datetime], None] | None = None, speed: float | None = None,
           progress: Callable[[int], None] | None = None) -> ReplayReport:
    """Run the steps in time order. A step of a record whose case was merged into another's (a duplicate)
    acts on nothing: the case it joined is taken to closure by its own record."""
    report = ReplayReport(records=len({s.record for s in steps if s.kind == "open"}))
    ordered = list(_in_order(steps))
    started_wall, first_at = time.monotonic(), ordered[0].at if ordered else None
    merged: set[str] = set()
    evidence: dict[str, list[str]] = {}  # event type → evidence kinds its handling needs
    for done, step in enumerate(ordered, 1):
        if set_clock is not None:
            set_clock(step.at)
        elif speed and first_at is not None:
            wait = (step.at - first_at).total_seconds() / speed - (time.monotonic() - started_wall)
            if wait > 0:
                time.sleep(wait)
        if step.kind == "open":
            _open(client, step, kind, api_key, report, merged)
        elif step.record in report.cases and step.record not in merged:
            _act(client, step, report, evidence)
        if progress is not None:
            progress(done)
    return report


def _in_order(steps: list[Step]) -> Iterator[Step]:
    heap = list(steps)
    heapq.heapify(heap)
    while heap:
        yield heapq.heappop(heap)


def _open(client: Client, step: Step, kind: str, api_key: str, report: ReplayReport, merged: set[str]) -> None:
    if kind == "la311":
        form = {k: v for k, v in step.payload.items() if v is not None}
        answer = client.post("/open311/v2/requests.json", data={**form, "api_key": api_key})
        if answer.status_code != 200:
            report.failed.append((step.record, answer.text[:300]))
            return
        request_id = int(answer.json()[0]["service_request_id"])
        report.reports[step.record] = request_id
        followed = client.get(f"/api/v1/hotline/complaints/{request_id}")
        if followed.status_code != 200:
            report.failed.append((step.record, followed.text[:300]))
            return
        report.cases[step.record] = followed.json()["case"]["id"]
    else:
        answer = client.post("/api/v1/hotline/complaints", json=step.payload)
        if answer.status_code != 201:
            report.failed.append((step.record, answer.text[:300]))
            return
        body = answer.json()
        report.reports[step.record] = body["reportId"]
        report.cases[step.record] = body["caseId"]
        if body.get("duplicateOf") is not None:
            merged.add(step.record)
        elif body["status"] == "reported":  # classified without confidence: a dispatcher triages it
            for action in ("triage", "dispatch"):
                acted = client.post(f"/api/v1/cases/{body['caseId']}/transitions", json={"action": action})
                if acted.status_code != 200:
                    report.failed.append((step.record, f"{action}: {acted.text[:300]}"))
                    return
    report.opened += 1


def _act(client: Any, step: Step, report: ReplayReport, evidence: dict[str, list[str]]) -> None:
    body = dict(step.payload)
    case_id = report.cases[step.record]
    if body.pop("fill_evidence", False):
        event_type = client.get(f"/api/v1/cases/{case_id}").json()["eventType"]
        if event_type not in evidence:
            evidence[event_type] = client.get(f"/api/v1/catalogue/{event_type}").json().get("evidence", [])
        kinds = evidence[event_type]
        body["attachments"] = [{"kind": kind, "note": f"replayed record {step.record}"} for kind in kinds]
    answer = client.post(f"/api/v1/cases/{case_id}/transitions", json=body)
    if answer.status_code != 200:
        report.failed.append((step.record, f"{body['action']}: {answer.text[:300]}"))
        return
    report.acted += 1
