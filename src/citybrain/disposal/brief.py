"""The daily brief for the district's leadership (领导日报): the day's cases, the 三率 and on-time rates,
departments side by side, the trend of two weeks, hotspots, supervision tasks and the day's breaches;
as HTML (charts inline as SVG) and as PDF (the same charts), in Chinese or English.

The charts are reportlab drawings, rendered to SVG for the page and to PDF for the print, so both show the
same figures; Chinese text uses the Adobe-GB1 font every PDF reader carries (STSong-Light), so no font
file has to ship.
"""

from __future__ import annotations

import html
import io
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from citybrain.disposal import supervision
from citybrain.disposal.catalogue.spec import CATEGORIES
from citybrain.disposal.models import CaseRow, CaseTransitionRow
from citybrain.disposal.service import NUMBER_ZONE
from citybrain.hub.org.departments import DEPARTMENTS

if TYPE_CHECKING:
    from reportlab.graphics.shapes import Drawing

    from citybrain.disposal.runtime import Disposal
    from citybrain.platform import Platform

TREND_DAYS = 14
FONT = "STSong-Light"
PALETTE = ("#1f6feb", "#d9822b", "#2da44e", "#cf222e", "#8250df", "#57606a")
TEXT = {
    "zh": {"title": "城市运行日报", "new": "新增工单", "closed": "办结", "open": "在办", "breached": "超时",
           "escalated": "升级", "respond": "按时响应率", "handle": "按时处置率", "close": "按时办结率",
           "response": "响应率", "resolution": "解决率", "satisfaction": "满意率", "by_category": "新增工单分类",
           "trend": f"近{TREND_DAYS}天新增与办结", "departments": "部门处置情况", "department": "部门",
           "cases": "工单", "closed_share": "办结率", "hotspots": "高发点位（30天）", "place": "地点",
           "event": "事项", "tasks": "督办任务", "task": "任务", "status": "状态", "due": "期限",
           "breaches": "当日超时与升级", "number": "编号", "unit": "承办单位", "none": "无",
           "summary": "当日摘要", "on_time": "部门按时办结率", "generated": "生成时间"},
    "en": {"title": "Daily city operations brief", "new": "New cases", "closed": "Closed", "open": "Open",
           "breached": "Breached", "escalated": "Escalated", "respond": "Responded on time",
           "handle": "Handled on time", "close": "Closed on time", "response": "Response rate",
           "resolution": "Resolution rate", "satisfaction": "Satisfaction rate", "by_category": "New cases by category",
           "trend": f"New and closed, last {TREND_DAYS} days", "departments": "Departments",
           "department": "Department", "cases": "Cases", "closed_share": "Closed share",
           "hotspots": "Hotspots (30 days)", "place": "Place", "event": "Event type", "tasks": "Supervision tasks",
           "task": "Task", "status": "Status", "due": "Due", "breaches": "Breaches and escalations of the day",
           "number": "Number", "unit": "Handling unit", "none": "none", "summary": "The day in figures",
           "on_time": "Closed on time by department", "generated": "Generated"},
}


@dataclass
class Brief:
    """The figures of one day, ready to render."""

    day: date
    district: str
    lang: str
    headline: dict[str, Any]
    categories: list[tuple[str, int]]
    trend: list[tuple[date, int, int]]
    departments: list[dict[str, Any]]
    hotspots: list[dict[str, Any]]
    tasks: list[dict[str, Any]]
    breaches: list[dict[str, Any]]
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0), NUMBER_ZONE).astimezone(UTC)
    return start, start + timedelta(days=1)


def build(platform: Platform, disposal: Disposal, *, day: date, lang: str = "zh") -> Brief:
    """Collect the figures of `day` (local time of the district)."""
    if lang not in TEXT:
        from citybrain.core.errors import InvalidInput

        raise InvalidInput.at("lang", f"one of {', '.join(TEXT)}")
    start, end = _day_bounds(day)
    tree = platform.org_tree
    district = next((u.name for u in tree.units.values() if u.kind == "district"), "")
    names = {d.slug: (d.name if lang == "zh" else d.name_en) for d in DEPARTMENTS}
    with platform.session() as session:
        today = supervision.rates(session, start=start, end=end, group_by="all")
        month = supervision.rates(session, start=end - timedelta(days=30), end=end, group_by="all")
        departments = supervision.rates(session, start=end - timedelta(days=30), end=end, group_by="department")
        closed_today = session.execute(sa.select(sa.func.count()).select_from(CaseRow).where(
            CaseRow.closed_at >= start, CaseRow.closed_at < end)).scalar_one()
        open_now = session.execute(sa.select(sa.func.count()).select_from(CaseRow).where(
            CaseRow.created_at < end, CaseRow.status.not_in(["closed", "merged"]))).scalar_one()
        categories = Counter(dict(session.execute(
            sa.select(CaseRow.category, sa.func.count()).where(CaseRow.created_at >= start, CaseRow.created_at < end,
                                                               CaseRow.status != "merged")
            .group_by(CaseRow.category)).all()))
        trend_start = end - timedelta(days=TREND_DAYS)
        created = session.scalars(sa.select(CaseRow.created_at).where(
            CaseRow.created_at >= trend_start, CaseRow.created_at < end, CaseRow.status != "merged")).all()
        closed = session.scalars(sa.select(CaseRow.closed_at).where(
            CaseRow.closed_at >= trend_start, CaseRow.closed_at < end)).all()
        spots = supervision.hotspots(session, start=end - timedelta(days=30), end=end, min_cases=3, limit=10)
        tasks = supervision.list_tasks(session, status="open", department=None, limit=20)
        incidents = session.execute(
            sa.select(CaseRow.number, CaseRow.title, CaseRow.handling_unit, CaseTransitionRow.action,
                      CaseTransitionRow.reason)
            .join(CaseTransitionRow, CaseTransitionRow.case_id == CaseRow.id)
            .where(CaseTransitionRow.at >= start, CaseTransitionRow.at < end,
                   sa.or_(CaseTransitionRow.action == "escalate",
                          sa.and_(CaseTransitionRow.action == "note", CaseTransitionRow.reason.like("SLA breached%"))))
            .order_by(CaseTransitionRow.id).limit(30)).all()
        task_rows = [supervision.task_view(t) for t in tasks]
    day_figures = today[0] if today else {}
    month_figures = month[0] if month else {}
    headline = {
        "new": day_figures.get("cases", 0), "closed": closed_today, "open": open_now,
        "breached": day_figures.get("breached", 0), "escalated": day_figures.get("escalations", 0),
        "respond": month_figures.get("respondOnTime"), "handle": month_figures.get("handleOnTime"),
        "close": month_figures.get("closeOnTime"), "response": month_figures.get("responseRate"),
        "resolution": month_figures.get("resolutionRate"), "satisfaction": month_figures.get("satisfactionRate"),
    }
    by_day_new = Counter(_local_day(m) for m in created)
    by_day_closed = Counter(_local_day(m) for m in closed)
    trend = [(d, by_day_new.get(d, 0), by_day_closed.get(d, 0))
             for d in (day - timedelta(days=TREND_DAYS - 1 - i) for i in range(TREND_DAYS))]
    category_names = {slug: (zh if lang == "zh" else en) for slug, (zh, en) in CATEGORIES.items()}
    return Brief(
        day=day, district=district, lang=lang, headline=headline,
        categories=[(category_names.get(k, k), v) for k, v in categories.most_common()],
        trend=trend,
        departments=[{**row, "name": names.get(row["key"], row["key"])} for row in departments[:15]],
        hotspots=[{**spot.view(), "place": _place(tree, spot), "name": _type_name(disposal, spot.event_type, lang)}
                  for spot in spots],
        tasks=task_rows,
        breaches=[{"number": r.number, "title": r.title, "unit": tree.units[r.handling_unit].name
                   if r.handling_unit in tree.units else (r.handling_unit or ""),
                   "action": r.action, "reason": r.reason or ""} for r in incidents],
    )


def _local_day(moment: datetime) -> date:
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(NUMBER_ZONE).date()


def _place(tree: Any, spot: supervision.Hotspot) -> str:
    if spot.org_unit and spot.org_unit in tree.units:
        return tree.units[spot.org_unit].name
    return f"H3 {spot.cell}" if spot.cell else "—"


def _type_name(disposal: Disposal, code: str, lang: str) -> str:
    spec = disposal.specs.get(code)
    return (spec.name.zh if lang == "zh" else spec.name.en) if spec else code


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


# ---------------------------------------------------------------------------------------------- charts

def _register_font() -> None:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont

    if FONT not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(UnicodeCIDFont(FONT))


def _bars(title: str, items: list[tuple[str, float]], *, color: str, axis_max: float, label_format: str,
          label_width: int, label_size: int) -> Drawing:
    """A titled horizontal bar chart, the first item on top."""
    from reportlab.graphics.charts.barcharts import HorizontalBarChart
    from reportlab.graphics.shapes import Drawing, String
    from reportlab.lib import colors

    _register_font()
    height = 40 + 22 * len(items)
    drawing = Drawing(460, height)
    chart = HorizontalBarChart()
    chart.x, chart.y, chart.width, chart.height = label_width, 20, 430 - label_width, height - 40
    chart.data = [[value for _, value in reversed(items)]]
    chart.categoryAxis.categoryNames = [name for name, _ in reversed(items)]
    chart.categoryAxis.labels.fontName = FONT
    chart.categoryAxis.labels.fontSize = label_size
    chart.valueAxis.valueMin, chart.valueAxis.valueMax = 0, axis_max
    chart.valueAxis.labels.fontSize = 8
    chart.bars[0].fillColor = colors.HexColor(color)
    chart.barLabelFormat = label_format
    chart.barLabels.fontSize = 8
    chart.barLabels.nudge = 10
    drawing.add(chart)
    drawing.add(String(0, height - 12, title, fontName=FONT, fontSize=11))
    return drawing


def category_chart(brief: Brief) -> Drawing:
    items: list[tuple[str, float]] = [(name, count) for name, count in brief.categories[:10]]
    items = items or [(TEXT[brief.lang]["none"], 0)]
    return _bars(TEXT[brief.lang]["by_category"], items, color=PALETTE[0],
                 axis_max=max(1, max(count for _, count in items)), label_format="%d", label_width=130,
                 label_size=9)


def trend_chart(brief: Brief) -> Drawing:
    from reportlab.graphics.charts.legends import Legend
    from reportlab.graphics.charts.linecharts import HorizontalLineChart
    from reportlab.graphics.shapes import Drawing, String
    from reportlab.lib import colors

    _register_font()
    text = TEXT[brief.lang]
    drawing = Drawing(460, 200)
    chart = HorizontalLineChart()
    chart.x, chart.y, chart.width, chart.height = 40, 30, 400, 130
    chart.data = [[new for _, new, _ in brief.trend], [closed for _, _, closed in brief.trend]]
    chart.categoryAxis.categoryNames = [d.strftime("%m-%d") for d, _, _ in brief.trend]
    chart.categoryAxis.labels.fontSize = 7
    chart.categoryAxis.labels.angle = 45
    chart.categoryAxis.labels.boxAnchor = "ne"
    chart.valueAxis.valueMin = 0
    chart.valueAxis.valueMax = max(1, *(max(new, closed) for _, new, closed in brief.trend))
    chart.valueAxis.labels.fontSize = 8
    for i in range(2):
        chart.lines[i].strokeColor = colors.HexColor(PALETTE[i])
        chart.lines[i].strokeWidth = 2
    drawing.add(chart)
    legend = Legend()
    legend.x, legend.y = 300, 195
    legend.fontName, legend.fontSize = FONT, 9
    legend.colorNamePairs = [(colors.HexColor(PALETTE[0]), text["new"]), (colors.HexColor(PALETTE[1]), text["closed"])]
    legend.columnMaximum = 1
    drawing.add(legend)
    drawing.add(String(0, 188, text["trend"], fontName=FONT, fontSize=11))
    return drawing


def department_chart(brief: Brief) -> Drawing:
    rows = [r for r in brief.departments if r.get("closeOnTime") is not None][:10]
    items = [(r["name"], round(r["closeOnTime"] * 100, 1)) for r in rows] or [(TEXT[brief.lang]["none"], 0.0)]
    return _bars(TEXT[brief.lang]["on_time"], items, color=PALETTE[2], axis_max=100, label_format="%.0f%%",
                 label_width=170, label_size=8)


def charts(brief: Brief) -> list[Drawing]:
    return [category_chart(brief), trend_chart(brief), department_chart(brief)]


# ---------------------------------------------------------------------------------------------- rendering

def _tables(brief: Brief) -> list[tuple[str, list[str], list[list[str]]]]:
    text = TEXT[brief.lang]
    departments = [[r["name"], str(r.get("cases", 0)), _percent(r.get("closedShare")), _percent(r.get("respondOnTime")),
                    _percent(r.get("closeOnTime")), _percent(r.get("satisfactionRate"))] for r in brief.departments]
    hotspots = [[h["place"], h["name"], str(h["cases"])] for h in brief.hotspots]
    tasks = [[t["title"], t["department"], t["status"], (t["dueAt"] or "")[:10]] for t in brief.tasks]
    breaches = [[b["number"], b["title"], b["unit"], b["reason"]] for b in brief.breaches]
    return [
        (text["departments"], [text["department"], text["cases"], text["closed_share"], text["respond"],
                               text["close"], text["satisfaction"]], departments),
        (text["hotspots"], [text["place"], text["event"], text["cases"]], hotspots),
        (text["tasks"], [text["task"], text["department"], text["status"], text["due"]], tasks),
        (text["breaches"], [text["number"], text["event"], text["unit"], ""], breaches),
    ]


def _headline_cells(brief: Brief) -> list[tuple[str, str]]:
    text, figures = TEXT[brief.lang], brief.headline
    counts = [(text[k], f"{figures[k]:,}") for k in ("new", "closed", "open", "breached", "escalated")]
    rates = [(text[k], _percent(figures[k])) for k in ("respond", "handle", "close", "response", "resolution",
                                                        "satisfaction")]
    return counts + rates


def render_html(brief: Brief) -> str:
    from reportlab.graphics import renderSVG

    text = TEXT[brief.lang]
    esc = html.escape
    cells = "".join(f'<div class="figure"><div class="value">{esc(v)}</div><div class="label">{esc(k)}</div></div>'
                    for k, v in _headline_cells(brief))
    svgs = "".join(f'<figure>{_strip_xml_header(renderSVG.drawToString(d))}</figure>' for d in charts(brief))
    tables = ""
    for title, head, rows in _tables(brief):
        body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows) or \
            f'<tr><td colspan="{len(head)}">{esc(text["none"])}</td></tr>'
        tables += (f"<section><h2>{esc(title)}</h2><table><thead><tr>"
                   + "".join(f"<th>{esc(h)}</th>" for h in head) + f"</tr></thead><tbody>{body}</tbody></table></section>")
    title = f"{brief.district} {text['title']} {brief.day.isoformat()}"
    return f"""<!doctype html>
<html lang="{'zh-CN' if brief.lang == 'zh' else 'en'}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(title)}</title>
<style>
body{{font-family:system-ui,"PingFang SC","Microsoft YaHei","Noto Sans CJK SC",sans-serif;margin:2rem auto;
max-width:980px;color:#1f2328;padding:0 1rem}}h1{{font-size:1.6rem}}h2{{font-size:1.15rem;margin-top:2rem}}
.figures{{display:grid;grid-template-columns:repeat(auto-fill,minmax(140px,1fr));gap:.75rem}}
.figure{{border:1px solid #d0d7de;border-radius:8px;padding:.6rem .8rem}}.value{{font-size:1.4rem;font-weight:600}}
.label{{color:#57606a;font-size:.85rem}}figure{{margin:1.5rem 0}}svg{{max-width:100%;height:auto}}
table{{border-collapse:collapse;width:100%;font-size:.9rem}}td,th{{border-bottom:1px solid #d0d7de;padding:.35rem .5rem;
text-align:left}}footer{{margin-top:2rem;color:#57606a;font-size:.8rem}}
</style></head><body>
<h1>{esc(title)}</h1><h2>{esc(text['summary'])}</h2><div class="figures">{cells}</div>
{svgs}{tables}
<footer>{esc(text['generated'])}: {brief.generated_at.astimezone(NUMBER_ZONE).strftime('%Y-%m-%d %H:%M')}</footer>
</body></html>
"""


def _strip_xml_header(svg: str) -> str:
    start = svg.find("<svg")
    return svg[start:] if start >= 0 else svg


def render_pdf(brief: Brief) -> bytes:
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    _register_font()
    text = TEXT[brief.lang]
    title_style = ParagraphStyle("title", fontName=FONT, fontSize=18, leading=24, spaceAfter=6)
    heading = ParagraphStyle("heading", fontName=FONT, fontSize=12, leading=16, spaceBefore=10, spaceAfter=4)
    cell = ParagraphStyle("cell", fontName=FONT, fontSize=8, leading=10)
    buffer = io.BytesIO()
    document = SimpleDocTemplate(buffer, pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm,
                                 topMargin=15 * mm, bottomMargin=15 * mm,
                                 title=f"{brief.district} {text['title']} {brief.day.isoformat()}")
    story: list[Any] = [Paragraph(html.escape(f"{brief.district} {text['title']} {brief.day.isoformat()}"), title_style),
                        Paragraph(html.escape(text["summary"]), heading)]
    figures = _headline_cells(brief)
    grid = [[Paragraph(f"<b>{html.escape(v)}</b><br/>{html.escape(k)}", cell) for k, v in figures[i:i + 4]]
            for i in range(0, len(figures), 4)]
    grid[-1] += [""] * (4 - len(grid[-1]))
    story.append(Table(grid, colWidths=[45 * mm] * 4, style=TableStyle([
        ("BOX", (0, 0), (-1, -1), 0.5, colors.HexColor("#d0d7de")),
        ("INNERGRID", (0, 0), (-1, -1), 0.5, colors.HexColor("#d0d7de"))])))
    for drawing in charts(brief):
        story += [Spacer(1, 6 * mm), drawing]
    for title, head, rows in _tables(brief):
        story.append(Paragraph(html.escape(title), heading))
        data = [[Paragraph(html.escape(h), cell) for h in head]]
        data += [[Paragraph(html.escape(c), cell) for c in row] for row in rows] or [
            [Paragraph(html.escape(text["none"]), cell)] + [""] * (len(head) - 1)]
        story.append(Table(data, repeatRows=1, style=TableStyle([
            ("LINEBELOW", (0, 0), (-1, -1), 0.3, colors.HexColor("#d0d7de")),
            ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#f6f8fa")), ("VALIGN", (0, 0), (-1, -1), "TOP")])))
    document.build(story)
    return buffer.getvalue()
