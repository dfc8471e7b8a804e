"""接诉即办 over HTTP on both stores: a complaint is classified, located from its text, de-duplicated
against the open ones, dispatched; personal data is noted at intake and masked by role; the citizen
follows it and gives the verdict."""

from __future__ import annotations

from fastapi.testclient import TestClient

from citybrain.core.context import Context
from citybrain.disposal import service
from citybrain.hotline.masking import contact_masker, text_masker
from citybrain.platform import Platform

SMOKE = ("北山街道宝石社区保俶路口的烧烤店每天晚上油烟很大，熏得整栋楼都是味道，窗户都不敢开，"
         "请有关部门管一管。我姓王，电话13812345678。")


def _complain(client: TestClient, text: str = SMOKE, **extra) -> dict:
    answer = client.post("/api/v1/hotline/complaints", json={"text": text, "channel": "phone",
                                                            "contact": {"name": "王先生", "phone": "13812345678"},
                                                            **extra})
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_a_complaint_is_understood_and_dispatched(client: TestClient, platform: Platform) -> None:
    taken = _complain(client)
    assert taken["classified"] is True and taken["eventType"] == "HB-01-003"  # 餐饮油烟
    assert taken["orgUnit"] == "330106002052" and taken["locatedBy"] == "text"  # 宝石社区, 北山街道
    assert taken["status"] == "dispatched" and taken["department"] == "chengguan"  # 餐饮油烟: 城管 leads
    assert taken["personalData"] == ["mobile"] and taken["duplicateOf"] is None
    followed = client.get(f"/api/v1/hotline/complaints/{taken['reportId']}").json()
    assert followed["case"]["number"] == taken["number"]
    assert "13812345678" not in followed["case"]["description"]  # no role: redacted
    assert [s["action"] for s in followed["steps"]] == ["report", "triage", "dispatch"]
    with platform.session() as session:
        row = service.get_case(session, case_ref=taken["caseId"])
        report = service.reports(session, case_id=row.id)[0]
        dispatcher = Context(roles=("dispatcher",))
        handler = Context(roles=("department_handler",))
        assert "138****5678" in service.case_view(row, mask=text_masker(dispatcher))["description"]
        assert service.report_view(report, mask_contact=contact_masker(handler))["contact"]["phone"] == "13812345678"
        assert service.report_view(report, mask_contact=contact_masker(Context()))["contact"]["phone"] == "[手机号]"


def test_the_same_problem_reported_again_joins_the_open_case(client: TestClient) -> None:
    first = _complain(client)
    again = _complain(client, SMOKE.replace("我姓王", "我是楼上住户").replace("13812345678", "13987654321"),
                      contact={"name": "赵女士", "phone": "13987654321"})
    assert again["duplicateOf"] == first["reportId"] and again["caseId"] == first["caseId"]
    other = _complain(client, "西溪街道某小区电梯经常困人，物业不修，请住建部门督促。")
    assert other["caseId"] != first["caseId"] and other["duplicateOf"] is None
    case = client.get(f"/api/v1/cases/{first['caseId']}").json()
    assert case["reports"] == 2
    evidence = [{"kind": k, "note": "x"} for k in ("measurement", "inspection_record", "photo_before",
                                                    "photo_after", "reply_to_citizen")]
    for body in ({"action": "receive"}, {"action": "handle", "attachments": evidence}, {"action": "verify"},
                 {"action": "close"}):
        assert client.post(f"/api/v1/cases/{first['caseId']}/transitions", json=body).status_code == 200, body
    after = _complain(client)  # the case is closed: the same words make a new case
    assert after["caseId"] != first["caseId"] and after["duplicateOf"] is None
    verdict = client.post(f"/api/v1/hotline/complaints/{again['reportId']}/feedback",
                          json={"resolved": True, "satisfied": True})
    assert verdict.status_code == 200 and verdict.json()["status"] == "closed"
    unhappy = client.post(f"/api/v1/hotline/complaints/{first['reportId']}/feedback",
                          json={"resolved": False, "satisfied": False, "comment": "还是有油烟"})
    assert unhappy.json()["status"] == "reopened"


def test_understanding_tools_and_bad_input(client: TestClient) -> None:
    top = client.post("/api/v1/hotline/classify", json={"text": "路灯不亮，晚上很黑"}).json()["items"]
    assert top[0]["eventType"] == "CG-05-001" and top[0]["name"]["zh"] == "路灯不亮"
    where = client.post("/api/v1/hotline/locate", json={"text": "翠苑街道附近"}).json()
    assert where["found"] is True and where["orgUnit"] == "330106005" and where["kind"] == "town"
    assert client.post("/api/v1/hotline/locate", json={"text": "月球背面"}).json() == {"found": False}
    given = _complain(client, "有人在河边钓鱼", eventType="CG-01-002", orgUnit="330106002051")
    assert given["classified"] is False and given["eventType"] == "CG-01-002" and given["locatedBy"] == "given"
    for body, field in (({"text": ""}, "body.text"), ({"text": "x", "orgUnit": "000"}, "orgUnit"),
                        ({"text": "x", "eventType": "ZZ-00-000"}, "eventType"),
                        ({"text": "x", "channel": "pigeon"}, "body.channel")):
        answer = client.post("/api/v1/hotline/complaints", json=body)
        assert answer.status_code == 422 and answer.json()["errors"][0]["field"] == field, (body, answer.text)
    assert client.get("/api/v1/hotline/complaints/999999").status_code == 404
