"""`/health` on the real embedded stack: every dependency up is 200 and says so, within a second (issue 9, item 5)."""
from __future__ import annotations

import time

import httpx


def test_health_is_200_and_names_every_dependency_up_on_the_embedded_stack(stack):
    started = time.monotonic()
    r = httpx.get(stack.api_url + "/health", timeout=10)
    assert time.monotonic() - started < 1.0
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["status"] == "ok" and report["message"] == "Все зависимости доступны."
    assert {name: dep["status"] for name, dep in report["dependencies"].items()} == {
        "database": "up", "prefect": "up", "smtp": "up", "acquirer": "up", "inbound_mail": "up"}
    assert all(dep["latency_ms"] is not None and dep["error"] is None for dep in report["dependencies"].values())
