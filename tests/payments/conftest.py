"""Fixtures for the payment tests: the YooKassa stand-in on a free port, and an adapter pointed at it."""
from __future__ import annotations

import httpx
import pytest

from standins.yookassa import YooKassaStandIn
from tasks.acquirer import YooKassaAcquirer

SHOP_ID = "100500"
SECRET = "test_standin_secret"


class StandInControl:
    """Drives the stand-in's admin endpoints over HTTP, as a test or an operator would."""

    def __init__(self, server: YooKassaStandIn):
        self.server = server
        self.base = f"http://127.0.0.1:{server.port}"

    def post(self, path: str, body: dict) -> dict:
        response = httpx.post(self.base + path, json=body, timeout=5)
        assert response.status_code == 200, response.text
        return response.json()

    def payment(self, value: str) -> str:
        return self.post("/_standin/payments", {"amount": {"value": value, "currency": "RUB"}})["id"]

    def faults(self, kind: str, count: int = 1, **extra) -> None:
        self.post("/_standin/faults", {"kind": kind, "count": count, **extra})

    def settle(self, **body) -> list[dict]:
        return self.post("/_standin/settle", body)["settled"]

    def ledger(self) -> dict:
        return httpx.get(self.base + "/_standin/ledger", timeout=5).json()


@pytest.fixture()
def ledger_path(tmp_path):
    return tmp_path / "acquirer-ledger.json"


@pytest.fixture()
def standin(ledger_path):
    server = YooKassaStandIn(shop_id=SHOP_ID, secret_key=SECRET, ledger_path=ledger_path).start()
    yield StandInControl(server)
    server.stop()


@pytest.fixture()
def acquirer(standin) -> YooKassaAcquirer:
    return YooKassaAcquirer(
        api_url=standin.server.api_url, shop_id=SHOP_ID, secret_key=SECRET, timeout_seconds=5
    )
