"""Open311 GeoReport v2 (http://wiki.open311.org/GeoReport_v2/): any 311 client can list the city's
services (the catalogue), file a request and follow it, in JSON or XML.

A request is one citizen report: posting one goes through the hotline intake (so a duplicate joins the
case already open for the same problem, and still gets its own `service_request_id`), and its status is
its case's (open until the case is closed). Errors are Open311's own shape (`[{code, description}]`, or
`<errors>` in XML), which 311 clients parse, rather than the problem+json of the rest of the API; the
description names the field and the reason all the same. Personal data in descriptions is masked as for
the public.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any
from xml.etree import ElementTree as ET

import orjson
import sqlalchemy as sa
from fastapi import Path, Query, Request
from fastapi.responses import Response

from citybrain.api.deps import PlatformDep
from citybrain.api.routing import PathRouter
from citybrain.core.context import Context
from citybrain.core.errors import CityBrainError, InvalidInput, NotFound
from citybrain.disposal.catalogue.spec import CATEGORIES
from citybrain.disposal.models import CaseReportRow, CaseRow, CaseTransitionRow
from citybrain.hub.org.departments import DEPARTMENTS

if TYPE_CHECKING:
    from citybrain.disposal.catalogue.spec import EventTypeSpec
    from citybrain.disposal.runtime import Disposal

_GEOREPORT_ERRORS = {"application/json": {"schema": {"type": "array", "items": {"type": "object", "properties": {
    "code": {"type": "integer"}, "description": {"type": "string"}}}}}, "text/xml": {"schema": {"type": "string"}}}
# GeoReport v2 answers in the format the path asks for, errors included (its own error list, not RFC 9457)
router = PathRouter(prefix="/open311/v2", tags=["open311"], responses={
    200: {"content": {"text/xml": {"schema": {"type": "string"}}}},
    **{status: {"description": f"GeoReport error ({status})", "content": _GEOREPORT_ERRORS}
       for status in (400, 403, 404)}})
FORMATS = ("json", "xml")
MAX_SPAN = timedelta(days=90)
MAX_REQUESTS = 1000
PUBLIC_ROLES = ("public",)
Format = Annotated[str, Path(description="json or xml")]


class Open311Error(Exception):
    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


def error_response(status: int, description: str, fmt: str) -> Response:
    if fmt == "xml":
        errors = ET.Element("errors")
        error = ET.SubElement(errors, "error")
        ET.SubElement(error, "code").text = str(status)
        ET.SubElement(error, "description").text = description
        return Response(_xml_bytes(errors), status_code=status, media_type="text/xml; charset=utf-8")
    return Response(orjson.dumps([{"code": status, "description": description}]), status_code=status,
                    media_type="application/json")


def _xml_bytes(element: ET.Element) -> bytes:
    return b'<?xml version="1.0" encoding="utf-8"?>' + ET.tostring(element, encoding="utf-8")


def _present(value: Any) -> Any:
    """Absent fields are left out rather than sent as null (the GeoReport types are strings and numbers)."""
    if isinstance(value, dict):
        return {k: _present(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_present(v) for v in value]
    return value


def _render(content: Any, fmt: str, *, root: str, item: str = "", status: int = 200) -> Response:
    """JSON as it is; XML as `root`, holding one `item` element per entry of a list, or the fields of a
    single object directly."""
    content = _present(content)
    if fmt == "json":
        return Response(orjson.dumps(content), status_code=status, media_type="application/json")
    element = ET.Element(root)
    if isinstance(content, list):
        for entry in content:
            _to_xml(ET.SubElement(element, item), entry)
    else:
        _to_xml(element, content)
    return Response(_xml_bytes(element), status_code=status, media_type="text/xml; charset=utf-8")


def _to_xml(parent: ET.Element, value: dict[str, Any]) -> None:
    for key, inner in value.items():
        _xml_value(ET.SubElement(parent, key), key, inner)


def _xml_value(element: ET.Element, key: str, value: Any) -> None:
    """A value as XML: an object's fields, a list's entries (each named by the list's singular), or text."""
    if isinstance(value, dict):
        _to_xml(element, value)
    elif isinstance(value, list):
        for entry in value:
            _xml_value(ET.SubElement(element, key.rstrip("s") or key), key, entry)
    elif isinstance(value, bool):
        element.text = "true" if value else "false"
    elif value is not None:
        element.text = str(value)


def _format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise Open311Error(400, f"response_format: {fmt!r} is not supported; use json or xml")
    return fmt


def _disposal(platform: Any) -> Disposal:
    from citybrain.disposal.router import disposal_of

    return disposal_of(platform)


def _jurisdiction(platform: Any, given: str | None) -> None:
    """A single-jurisdiction server: the district's code (or the configured id) is the one jurisdiction; an
    omitted id means it."""
    if given is None:
        return
    accepted = {platform.settings.open311_jurisdiction} | {
        code for code, unit in platform.org_tree.units.items() if unit.kind == "district"}
    if given not in accepted:
        raise Open311Error(404, f"jurisdiction_id: {given!r} is not served here")


def _lang(request: Request, locale: str | None) -> str:
    chosen = locale or request.headers.get("accept-language", "")
    return "en" if chosen.lower().startswith("en") else "zh"


def service_code(spec: EventTypeSpec) -> str:
    return spec.refs.open311_code or spec.code


def _service(spec: EventTypeSpec, lang: str) -> dict[str, Any]:
    keywords = spec.keywords.en if lang == "en" else spec.keywords.zh
    return {"service_code": service_code(spec), "service_name": spec.name.en if lang == "en" else spec.name.zh,
            "description": spec.description or (spec.name.en if lang == "en" else spec.name.zh),
            "metadata": False, "type": "realtime", "keywords": ", ".join(keywords),
            "group": CATEGORIES[spec.category][1 if lang == "en" else 0]}


def _by_service_code(disposal: Disposal) -> dict[str, EventTypeSpec]:
    return {service_code(spec): spec for spec in disposal.specs.values()}


def _wrap(handler: Any) -> Any:
    """Route errors as Open311 errors in the format of the path."""
    import functools

    @functools.wraps(handler)
    async def wrapped(*args: Any, **kwargs: Any) -> Response:
        fmt = kwargs.get("response_format", "json")
        fmt = fmt if fmt in FORMATS else "json"
        try:
            return await handler(*args, **kwargs)
        except Open311Error as exc:
            return error_response(exc.status, exc.description, fmt)
        except InvalidInput as exc:
            return error_response(400, exc.detail, fmt)
        except NotFound as exc:
            return error_response(404, exc.detail, fmt)
        except CityBrainError as exc:
            return error_response(exc.status, exc.detail, fmt)

    return wrapped


@router.get("/discovery.{response_format}", summary="Where this GeoReport v2 endpoint is and what it speaks")
@_wrap
async def discovery(platform: PlatformDep, request: Request, response_format: Format) -> Response:
    fmt = _format(response_format)
    base = str(request.base_url).rstrip("/") + "/open311/v2/"
    content = {"changeset": datetime(2026, 12, 1, tzinfo=UTC).isoformat(), "contact": "CityBrain operations centre",
               "key_service": "Ask the operations centre for an api_key",
               "endpoints": [{"specification": "http://wiki.open311.org/GeoReport_v2", "url": base,
                              "changeset": datetime(2026, 12, 1, tzinfo=UTC).isoformat(), "type": "production",
                              "formats": ["application/json", "text/xml"]}]}
    return _render(content, fmt, root="discovery")


@router.get("/services.{response_format}", summary="Service types (the event catalogue)")
@_wrap
async def services(platform: PlatformDep, request: Request, response_format: Format,
                   jurisdiction_id: Annotated[str | None, Query()] = None,
                   locale: Annotated[str | None, Query(max_length=16)] = None) -> Response:
    fmt = _format(response_format)
    _jurisdiction(platform, jurisdiction_id)
    lang = _lang(request, locale)
    items = [_service(spec, lang) for spec in sorted(_disposal(platform).specs.values(), key=lambda s: s.code)]
    return _render(items, fmt, root="services", item="service")


@router.get("/services/{service_code}.{response_format}", summary="A service's definition (its attributes)")
@_wrap
async def service_definition(platform: PlatformDep, service_code: Annotated[str, Path(max_length=64)],
                             response_format: Format,
                             jurisdiction_id: Annotated[str | None, Query()] = None) -> Response:
    fmt = _format(response_format)
    _jurisdiction(platform, jurisdiction_id)
    if service_code not in _by_service_code(_disposal(platform)):
        raise Open311Error(404, f"service_code: {service_code!r} is not a service here")
    # No service asks for extra attributes: what the catalogue needs is the description and the place.
    content = {"service_code": service_code, "attributes": []}
    return _render(content, fmt, root="service_definition")


async def _form(request: Request) -> dict[str, Any]:
    """POST fields from a form (the standard) or a JSON object, with `attribute[code]` pairs collected."""
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = orjson.loads(await request.body() or b"{}")
        except orjson.JSONDecodeError as exc:
            raise Open311Error(400, f"body: not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise Open311Error(400, "body: a JSON object of request fields is required")
        return {**dict(request.query_params), **body}
    form = await request.form()
    fields: dict[str, Any] = dict(request.query_params)
    for key, value in form.multi_items():
        fields[key] = value
    return fields


def _number(fields: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = fields.get(name)
    if value in (None, ""):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise Open311Error(400, f"{name}: {value!r} is not a number") from None
    if not low <= number <= high:
        raise Open311Error(400, f"{name}: {number} is outside {low}…{high}")
    return number


def _text(fields: dict[str, Any], name: str, limit: int) -> str | None:
    value = fields.get(name)
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        value = str(value)
    if len(value) > limit:
        raise Open311Error(400, f"{name}: longer than {limit} characters")
    return value


def check_api_key(platform: Any, key: str | None) -> str:
    """The key's owner label; 401/403 otherwise. Keys are `CITYBRAIN_OPEN311_API_KEYS` (key=owner,…) until
    the governance layer issues scoped keys."""
    configured = platform.settings.open311_keys()
    if key in (None, ""):
        raise Open311Error(401, "api_key: an API key is required to submit requests")
    for known, owner in configured.items():
        if secrets.compare_digest(known, key):
            return owner
    raise Open311Error(403, "api_key: not a key of this server")


@router.post("/requests.{response_format}", summary="File a service request (needs api_key)")
@_wrap
async def create_request(platform: PlatformDep, request: Request, response_format: Format) -> Response:
    from citybrain.disposal.schemas import Point, Reporter
    from citybrain.hotline.flows import take_complaint
    from citybrain.hotline.router import hotline_of
    from citybrain.hotline.schemas import ComplaintCreate

    fmt = _format(response_format)
    fields = await _form(request)
    _jurisdiction(platform, _text(fields, "jurisdiction_id", 64))
    owner = check_api_key(platform, _text(fields, "api_key", 256))
    code = _text(fields, "service_code", 64)
    if code is None:
        raise Open311Error(400, "service_code: required")
    disposal = _disposal(platform)
    spec = _by_service_code(disposal).get(code)
    if spec is None:
        raise Open311Error(400, f"service_code: {code!r} is not a service here (see services.{fmt})")
    lat, lon = _number(fields, "lat", -90, 90), _number(fields, "long", -180, 180)
    if (lat is None) != (lon is None):
        raise Open311Error(400, "lat/long: give both or neither")
    address = _text(fields, "address_string", 400)
    address_id = _text(fields, "address_id", 160)
    if lat is None and address is None and address_id is None:
        raise Open311Error(400, "location: lat and long, address_string or address_id is required")
    own_words = _text(fields, "description", 4000)
    description = own_words or spec.name.zh
    attributes = {k[len("attribute["):-1]: v for k, v in fields.items() if k.startswith("attribute[")}
    name = " ".join(part for part in (_text(fields, "first_name", 50), _text(fields, "last_name", 50)) if part)
    contact = Reporter(name=name or None, phone=_text(fields, "phone", 40), email=_text(fields, "email", 200))
    media = _text(fields, "media_url", 2000)
    complaint = ComplaintCreate(
        text=description, channel="open311", address=address or address_id,
        location=Point(type="Point", coordinates=(lon, lat)) if lat is not None and lon is not None else None,
        contact=contact, eventType=spec.code, externalId=_text(fields, "device_id", 160),
        mediaUrls=[media] if media else [], deduplicate=own_words is not None)
    ctx = Context(actor=f"open311:{owner}", roles=("system",))
    hotline = hotline_of(platform)
    intake = await platform.run(take_complaint, platform, hotline, disposal, complaint, ctx=ctx)
    if intake.outcome.events:
        await platform.bus.publish(*intake.outcome.events)
    if attributes:
        await platform.run(_store_attributes, platform, intake.report_id, attributes)
    notice = _notice(spec, intake.outcome.case, "en" if _lang(request, None) == "en" else "zh")
    content = [{"service_request_id": str(intake.report_id), "service_notice": notice,
                "account_id": _text(fields, "account_id", 160)}]
    return _render(content, fmt, root="service_requests", item="request")


def _store_attributes(platform: Any, report_id: int, attributes: dict[str, Any]) -> None:
    with platform.transaction() as session:
        row = session.get(CaseReportRow, report_id)
        if row is not None:
            row.data = {**(row.data or {}), "attributes": attributes}


def _notice(spec: EventTypeSpec, case: dict[str, Any], lang: str) -> str:
    names = {d.slug: (d.name_en if lang == "en" else d.name) for d in DEPARTMENTS}
    department = names.get(case["leadDepartment"], case["leadDepartment"])
    if lang == "en":
        return f"Case {case['number']}: {department} will respond by {case['dueAt'] or 'the next working day'}."
    return f"工单 {case['number']}：{department}将于 {case['dueAt'] or '下一个工作日'} 前响应。"


def _request_view(report: CaseReportRow, case: CaseRow, spec: EventTypeSpec | None, notes: str | None,
                  lang: str) -> dict[str, Any]:
    from citybrain.hotline.pii import mask_text

    closed = case.status == "closed"
    names = {d.slug: (d.name_en if lang == "en" else d.name) for d in DEPARTMENTS}
    media = (report.data or {}).get("mediaUrls") or []
    updated = case.closed_at if closed and case.closed_at else case.updated_at
    return {
        "service_request_id": str(report.id), "status": "closed" if closed else "open", "status_notes": notes,
        "service_name": (spec.name.en if lang == "en" else spec.name.zh) if spec else case.event_type,
        "service_code": service_code(spec) if spec else case.event_type,
        "description": mask_text(report.text, PUBLIC_ROLES) if report.text else None,
        "agency_responsible": names.get(case.lead_department, case.lead_department), "service_notice": None,
        "requested_datetime": _iso(report.reported_at), "updated_datetime": _iso(updated),
        "expected_datetime": _iso(case.stage_due_at) if case.stage and not closed else None,
        "address": mask_text(report.address, PUBLIC_ROLES) if report.address else None,
        "address_id": None, "zipcode": None, "lat": report.lat, "long": report.lon,
        "media_url": media[0] if media else None,
    }


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _requests(platform: Any, disposal: Disposal, *, ids: list[int] | None, codes: list[str] | None,
              start: datetime | None, end: datetime | None, statuses: list[str] | None,
              lang: str) -> list[dict[str, Any]]:
    specs = {spec.code: spec for spec in disposal.specs.values()}
    statement = (sa.select(CaseReportRow, CaseRow).join(CaseRow, CaseRow.id == CaseReportRow.case_id))
    if ids is not None:
        statement = statement.where(CaseReportRow.id.in_(ids))
    else:
        statement = statement.where(CaseReportRow.reported_at >= start, CaseReportRow.reported_at < end)
        if codes:
            statement = statement.where(CaseRow.event_type.in_(codes))
        if statuses and set(statuses) != {"open", "closed"}:
            statement = statement.where(CaseRow.status == "closed" if statuses == ["closed"] else
                                        CaseRow.status != "closed")
    statement = statement.order_by(CaseReportRow.reported_at.desc(), CaseReportRow.id.desc()).limit(MAX_REQUESTS)
    with platform.session() as session:
        rows = session.execute(statement).all()
        notes = _status_notes(session, [case.id for _, case in rows])
    return [_request_view(report, case, specs.get(case.event_type), notes.get(case.id), lang) for report, case in rows]


def _status_notes(session: Any, case_ids: list[str]) -> dict[str, str]:
    """The reason of each case's latest step that gave one (what a citizen reads as the status notes)."""
    if not case_ids:
        return {}
    latest = (sa.select(CaseTransitionRow.case_id, sa.func.max(CaseTransitionRow.id).label("id"))
              .where(CaseTransitionRow.case_id.in_(case_ids), CaseTransitionRow.reason.is_not(None),
                     CaseTransitionRow.action != "note")
              .group_by(CaseTransitionRow.case_id).subquery())
    rows = session.execute(sa.select(CaseTransitionRow.case_id, CaseTransitionRow.reason)
                           .join(latest, CaseTransitionRow.id == latest.c.id)).all()
    return {row.case_id: row.reason for row in rows}


def _when(value: str | None, name: str) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise Open311Error(400, f"{name}: {value!r} is not a w3c date-time (e.g. 2026-12-01T08:00:00Z)") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@router.get("/requests.{response_format}", summary="Requests: by id, or by service, time and status")
@_wrap
async def list_requests(
    platform: PlatformDep, request: Request, response_format: Format,
    jurisdiction_id: Annotated[str | None, Query()] = None,
    service_request_id: Annotated[str | None, Query(max_length=20_000)] = None,
    service_code: Annotated[str | None, Query(max_length=2000)] = None,
    start_date: Annotated[str | None, Query(max_length=40)] = None,
    end_date: Annotated[str | None, Query(max_length=40)] = None,
    status: Annotated[str | None, Query(max_length=20)] = None,
    locale: Annotated[str | None, Query(max_length=16)] = None,
) -> Response:
    fmt = _format(response_format)
    _jurisdiction(platform, jurisdiction_id)
    disposal = _disposal(platform)
    lang = _lang(request, locale)
    ids = None
    if service_request_id:
        try:
            ids = [int(part) for part in service_request_id.split(",") if part.strip()]
        except ValueError:
            raise Open311Error(400, "service_request_id: comma-separated request ids are required") from None
    codes = None
    if service_code:
        by_code = _by_service_code(disposal)
        unknown = [c for c in service_code.split(",") if c not in by_code]
        if unknown:
            raise Open311Error(400, f"service_code: {unknown[0]!r} is not a service here")
        codes = [by_code[c].code for c in service_code.split(",")]
    statuses = None
    if status:
        statuses = sorted({part.strip() for part in status.split(",") if part.strip()})
        if not set(statuses) <= {"open", "closed"}:
            raise Open311Error(400, "status: open, closed or both (comma-separated)")
    start, end = _when(start_date, "start_date"), _when(end_date, "end_date")
    end = end or (start + MAX_SPAN if start else platform.clock.now() + timedelta(seconds=1))
    start = start or end - MAX_SPAN
    if start >= end:
        raise Open311Error(400, "start_date: must be before end_date")
    if end - start > MAX_SPAN:
        raise Open311Error(400, "start_date/end_date: the span may not exceed 90 days")
    items = await platform.run(_requests, platform, disposal, ids=ids, codes=codes, start=start, end=end,
                               statuses=statuses, lang=lang)
    return _render(items, fmt, root="service_requests", item="request")


async def _one(platform: Any, request: Request, service_request_id: str, locale: str | None,
               jurisdiction_id: str | None) -> list[dict[str, Any]]:
    _jurisdiction(platform, jurisdiction_id)
    try:
        report_id = int(service_request_id)
    except ValueError:
        raise Open311Error(404, f"service_request_id: {service_request_id!r} does not exist") from None
    items = await platform.run(_requests, platform, _disposal(platform), ids=[report_id], codes=None, start=None,
                               end=None, statuses=None, lang=_lang(request, locale))
    if not items:
        raise Open311Error(404, f"service_request_id: {service_request_id!r} does not exist")
    return items


@router.get("/requests/{service_request_id}.{response_format}", summary="One request (as a list of one)")
@_wrap
async def get_request(platform: PlatformDep, request: Request, service_request_id: Annotated[str, Path(max_length=40)],
                      response_format: Format, jurisdiction_id: Annotated[str | None, Query()] = None,
                      locale: Annotated[str | None, Query(max_length=16)] = None) -> Response:
    fmt = _format(response_format)
    items = await _one(platform, request, service_request_id, locale, jurisdiction_id)
    return _render(items, fmt, root="service_requests", item="request")


@router.get("/request/{service_request_id}.{response_format}", summary="One request (GeoReport v2.1 draft path)")
@_wrap
async def get_request_v21(platform: PlatformDep, request: Request,
                          service_request_id: Annotated[str, Path(max_length=40)], response_format: Format,
                          jurisdiction_id: Annotated[str | None, Query()] = None,
                          locale: Annotated[str | None, Query(max_length=16)] = None) -> Response:
    fmt = _format(response_format)
    items = await _one(platform, request, service_request_id, locale, jurisdiction_id)
    return _render(items[0], fmt, root="request")


@router.get("/tokens/{token_id}.{response_format}", summary="A token's request (requests are created at once)")
@_wrap
async def token(platform: PlatformDep, token_id: Annotated[str, Path(max_length=64)], response_format: Format,
                jurisdiction_id: Annotated[str | None, Query()] = None) -> Response:
    _format(response_format)
    _jurisdiction(platform, jurisdiction_id)
    # Requests are created synchronously and answered with their id, so no token is ever handed out.
    raise Open311Error(404, f"token_id: {token_id!r} was not issued here (requests get their id at once)")
