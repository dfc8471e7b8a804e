"""A small catalogue for the case tests (the shipped one is tested on its own) and a disposal on a
platform."""

from __future__ import annotations

from citybrain.disposal.catalogue.spec import EventTypeSpec

ROUTINE = EventTypeSpec.model_validate({
    "code": "CG-01-001", "name": {"zh": "占道经营", "en": "Street vending on the road"},
    "category": "city_management", "department": "chengguan", "level": "village",
    "sla": {"respond": "2h", "handle": "3wd", "close": "1wd"}, "evidence": ["photo_after"],
    "sensing": [{"device_type": "waste_bin", "rule": "overflow"}],
})
JOINT = EventTypeSpec.model_validate({
    "code": "SQ-02-001", "name": {"zh": "群租", "en": "Illegal subletting"}, "category": "community",
    "department": "fangguan", "assisting": ["gongan", "xiaofang"], "joint": True, "level": "town",
    "sla": {"respond": "4wh", "handle": "5wd", "close": "2wd"}, "evidence": ["photo_after", "inspection_record"],
})
EMERGENCY = EventTypeSpec.model_validate({
    "code": "XF-01-001", "name": {"zh": "燃气泄漏", "en": "Gas leak"}, "category": "fire_safety",
    "department": "yingji", "assisting": ["xiaofang"], "level": "district", "priority": "emergency",
    "sla": {"respond": "10m", "handle": "2h", "close": "1d"}, "evidence": [],
    "sensing": [{"device_type": "smoke_detector", "rule": "smoke"}],
})
CATALOGUE = [ROUTINE, JOINT, EMERGENCY]
