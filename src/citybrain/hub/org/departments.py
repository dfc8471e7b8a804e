"""The functional departments a Chinese district government runs; every district gets this set.

Slugs are stable identifiers used in routing rules and the event catalogue, so a rule written for one
district works in any other.
"""

from __future__ import annotations

from typing import NamedTuple


class Department(NamedTuple):
    slug: str
    name: str
    name_en: str


DEPARTMENTS: tuple[Department, ...] = (
    Department("chengguan", "城市管理和综合执法局", "City Management and Law Enforcement Bureau"),
    Department("jiaotong", "交通运输局", "Transport Bureau"),
    Department("shengtai", "生态环境局", "Ecology and Environment Bureau"),
    Department("yingji", "应急管理局", "Emergency Management Bureau"),
    Department("xiaofang", "消防救援支队", "Fire and Rescue Detachment"),
    Department("shuiwu", "水务局", "Water Affairs Bureau"),
    Department("zhujian", "住房和城乡建设局", "Housing and Urban-Rural Development Bureau"),
    Department("shichang", "市场监督管理局", "Market Regulation Administration"),
    Department("weijian", "卫生健康委员会", "Health Commission"),
    Department("jiaoyu", "教育局", "Education Bureau"),
    Department("renshe", "人力资源和社会保障局", "Human Resources and Social Security Bureau"),
    Department("gongan", "公安分局", "Public Security Sub-bureau"),
    Department("minzheng", "民政局", "Civil Affairs Bureau"),
    Department("guihua", "规划和自然资源局", "Planning and Natural Resources Bureau"),
    Department("lvrong", "绿化和市容管理局", "Landscaping and City Appearance Bureau"),
    Department("fangguan", "房屋管理局", "Housing Administration Bureau"),
    Department("shangwu", "商务委员会", "Commerce Commission"),
    Department("wenlv", "文化和旅游局", "Culture and Tourism Bureau"),
    Department("nongye", "农业农村委员会", "Agriculture and Rural Affairs Commission"),
    Department("xinfang", "信访办公室", "Letters and Visits Office"),
)


def department_code(district_code: str, slug: str) -> str:
    return f"{district_code}-{slug}"
