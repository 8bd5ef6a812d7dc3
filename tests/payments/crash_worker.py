"""Test harness, not product code: one payout run (open -> submit -> reconcile) in its own process,
killed for real with SIGKILL at a chosen step.

The product functions run unchanged; the crash is injected only through the acquirer object handed
to them (acquirer injection is the design) and an engine event, both wrapped here.

    python tests/payments/crash_worker.py --db URL --api-url URL --now ISO [--crash STEP]

STEP:
  after_open          payouts opened and committed, nothing sent
  before_call:N       the Nth refund marked `submitted` and committed, killed before the HTTP call
  after_answer:N      the acquirer answered the Nth refund, killed before anything is recorded
  in_record:N         the Nth answer's UPDATEs executed, killed before their COMMIT
  after_poll:N        reconcile: the Nth GET /refunds/{id} answered, killed before recording
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sqlalchemy import event  # noqa: E402

from models.db import make_engine  # noqa: E402
from tasks.acquirer import RefundRequest, RefundResult, YooKassaAcquirer  # noqa: E402
from tasks.payouts import open_payouts, reconcile_pending, submit_card_refunds  # noqa: E402


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class CrashingAcquirer:
    """Passes every call to the real adapter and kills the process at the chosen step."""

    def __init__(self, inner: YooKassaAcquirer, step: str, n: int):
        self.inner, self.step, self.n = inner, step, n
        self.creates = self.polls = 0
        self.armed_commit = False

    def create_refund(self, req: RefundRequest) -> RefundResult:
        self.creates += 1
        if self.step == "before_call" and self.creates == self.n:
            die()
        result = self.inner.create_refund(req)
        if self.creates == self.n:
            if self.step == "after_answer":
                die()
            if self.step == "in_record":
                self.armed_commit = True  # the next COMMIT is the one recording this answer
        return result

    def get_refund(self, refund_id: str) -> RefundResult:
        self.polls += 1
        result = self.inner.get_refund(refund_id)
        if self.step == "after_poll" and self.polls == self.n:
            die()
        return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--shop-id", default="100500")
    parser.add_argument("--secret-key", default="test_standin_secret")
    parser.add_argument("--now", required=True)
    parser.add_argument("--crash", default="")
    args = parser.parse_args()

    step, _, n = args.crash.partition(":")
    engine = make_engine(args.db)
    acquirer = CrashingAcquirer(
        YooKassaAcquirer(api_url=args.api_url, shop_id=args.shop_id, secret_key=args.secret_key, timeout_seconds=5),
        step, int(n or 0),
    )

    @event.listens_for(engine, "commit")
    def _before_commit(conn) -> None:  # fires before the COMMIT reaches the database
        if acquirer.armed_commit:
            die()

    now = datetime.fromisoformat(args.now)
    opened = open_payouts(engine, now=now)
    if step == "after_open":
        die()
    submitted = submit_card_refunds(engine, acquirer, now=now)
    reconciled = reconcile_pending(engine, acquirer, now=now)
    print(f"opened {opened}; submit: {submitted}; reconcile: {reconciled}", flush=True)


if __name__ == "__main__":
    main()
