"""Per-caller request rates: a burst, then the rate; 429 with Retry-After past it, per caller, as
problem+json; anonymous callers untouched."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from citybrain.api.app import create_app
from citybrain.api.ratelimit import RateLimiter
from citybrain.core.errors import TooManyRequests
from citybrain.governance import auth
from citybrain.platform import Platform


def test_a_burst_then_the_rate_per_caller() -> None:
    limiter = RateLimiter(rate=2.0, burst=3)
    for _ in range(3):
        limiter.take("key:a", now=100.0)
    with pytest.raises(TooManyRequests) as refused:
        limiter.take("key:a", now=100.0)
    assert refused.value.headers == {"Retry-After": "1"}
    limiter.take("key:b", now=100.0)  # another caller has its own bucket
    limiter.take("key:a", now=100.5)  # half a second at 2/s: one more
    with pytest.raises(TooManyRequests):
        limiter.take("key:a", now=100.5)
    RateLimiter(rate=0, burst=1).take("key:a")  # 0: no limit


def test_a_key_over_its_rate_gets_429_and_others_go_on(platform: Platform) -> None:
    platform.settings = platform.settings.model_copy(update={"rate_limit_per_s": 0.5, "rate_limit_burst": 3})
    busy = auth.create_key(platform, name="chatty", roles=["system"], org_scope=None)
    quiet = auth.create_key(platform, name="quiet", roles=["system"], org_scope=None)
    with TestClient(create_app(platform)) as client:
        answers = [client.get("/api/v1/auth/me", headers={"X-API-Key": busy.secret}) for _ in range(5)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
        refused = answers[3]
        assert refused.headers["retry-after"] == "2"
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["status"] == 429 and "key:" in refused.json()["detail"]
        assert client.get("/api/v1/auth/me", headers={"X-API-Key": quiet.secret}).status_code == 200
        assert all(client.get("/api/v1/auth/me").status_code == 200 for _ in range(10))  # anonymous
