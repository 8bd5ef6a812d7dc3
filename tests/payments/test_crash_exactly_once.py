"""Exactly once, for real: a payout worker is killed with SIGKILL at each step of a run, a normal run
follows, and the stand-in's ledger must show every claim refunded exactly once with its amount."""
from __future__ import annotations

import signal
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from models.db import make_engine
from models.payouts import Payout
from models.tables import Claim
from tests import factories

MSK = ZoneInfo("Europe/Moscow")
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=MSK)
WORKER = Path(__file__).with_name("crash_worker.py")
CLAIMS = 10


def run_worker(db_url: str, api_url: str, now: datetime, crash: str = "") -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(WORKER), "--db", db_url, "--api-url", api_url, "--now", now.isoformat()]
    if crash:
        cmd += ["--crash", crash]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def claims(sqlite_url, standin) -> dict[int, tuple[str, str]]:
    """Ten card claims in payout_pending, each its own payment of a different amount: claim -> (payment, amount)."""
    engine = make_engine(sqlite_url)
    out = {}
    with engine.begin() as conn:
        for i in range(CLAIMS):
            price = 100000 + 1111 * i
            value = f"{price // 100}.{price % 100:02d}"
            payment_id = standin.payment(value)
            claim_id = factories.claim_in_payout(conn, acquirer_payment_id=payment_id, price_paid=price, now=NOW)
            out[claim_id] = (payment_id, value)
    engine.dispose()
    return out


def statuses(sqlite_url: str) -> dict[str, int]:
    engine = make_engine(sqlite_url)
    with engine.connect() as conn:
        rows = conn.execute(select(Payout.__table__.c.status)).scalars().all()
    engine.dispose()
    return {s: rows.count(s) for s in set(rows)}


def assert_paid_exactly_once(sqlite_url: str, standin, claims: dict[int, tuple[str, str]]) -> None:
    refunds = standin.ledger()["refunds"]
    by_payment: dict[str, list[dict]] = {}
    for r in refunds:
        by_payment.setdefault(r["payment_id"], []).append(r)
    for claim_id, (payment_id, value) in claims.items():
        got = [(r["status"], r["amount"]["value"]) for r in by_payment.get(payment_id, [])]
        assert got == [("succeeded", value)], f"claim {claim_id}: {got}"
    assert len(refunds) == CLAIMS

    engine = make_engine(sqlite_url)
    with engine.connect() as conn:
        states = dict(conn.execute(select(Claim.__table__.c.id, Claim.__table__.c.state)).all())
        payouts = conn.execute(select(Payout.__table__)).mappings().all()
    engine.dispose()
    assert set(states.values()) == {"paid"}, states
    assert sorted(p["claim_id"] for p in payouts) == sorted(claims)  # one payout each, none lost, none doubled
    assert {(p["status"], p["attempt"]) for p in payouts} == {("succeeded", 1)}
    refund_ids = {r["id"] for r in refunds}
    assert {p["acquirer_refund_id"] for p in payouts} == refund_ids


@pytest.mark.parametrize(
    "crash",
    ["after_open", "before_call:1", "after_answer:1", "in_record:1", "before_call:4", "after_answer:6", "in_record:10"],
)
def test_a_killed_worker_then_a_normal_run_refunds_every_claim_exactly_once(sqlite_url, standin, claims, crash):
    api_url = standin.server.api_url

    killed = run_worker(sqlite_url, api_url, NOW, crash)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    step, _, n = crash.partition(":")
    left = statuses(sqlite_url)
    if step == "after_open":
        assert left == {"pending": CLAIMS}
    else:  # the crash left rows marked submitted without an answer: the restart must ask again, same key
        assert left.get("submitted", 0) >= 1 and left.get("succeeded", 0) == int(n) - 1, left
        made = len(standin.ledger()["refunds"])
        assert made == (int(n) if step in ("after_answer", "in_record") else int(n) - 1)

    # The restart comes later than the window in which another worker might still be asking.
    restarted = run_worker(sqlite_url, api_url, NOW + timedelta(minutes=5))
    assert restarted.returncode == 0, restarted.stderr[-2000:]

    assert_paid_exactly_once(sqlite_url, standin, claims)


def test_a_worker_killed_while_reconciling_pending_refunds_loses_none(sqlite_url, standin, claims):
    api_url = standin.server.api_url
    standin.faults("pending", count=CLAIMS)
    first = run_worker(sqlite_url, api_url, NOW)
    assert first.returncode == 0, first.stderr[-2000:]
    standin.settle(status="succeeded")

    killed = run_worker(sqlite_url, api_url, NOW + timedelta(minutes=1), "after_poll:3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    restarted = run_worker(sqlite_url, api_url, NOW + timedelta(minutes=10))
    assert restarted.returncode == 0, restarted.stderr[-2000:]

    assert_paid_exactly_once(sqlite_url, standin, claims)
