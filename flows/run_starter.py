"""The run starter: a long-running process that creates and resumes claims' flow runs.

`python -m flows.run_starter` (the embedded stack starts it beside `flows.serve`). It drains the
`run_action` table at the pace the Prefect server bears (a few actions at a time, backing off when
Prefect answers errors or is down) and, every VOZVRAT_SWEEP_INTERVAL_S, sweeps for claims whose run is
missing, lost or behind (tasks/run_actions.py). Not a Prefect deployment on purpose: a deployment
run every few seconds would itself cost a run creation on the server it is there to spare, and
would stop when that server stops. Several starters may run at once: actions are leased.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

# The starter retries each action itself, with backoff, and slows down while Prefect answers errors:
# Prefect's client must fail fast instead of sitting a minute in its own retries (set before Prefect loads).
os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", "0")

from models.db import get_engine  # noqa: E402
from tasks.run_actions import PrefectRuns, drain_once, sweep  # noqa: E402
from tasks.sweep_gate import dispatch_interval, start_outbox_dispatch_if_needed  # noqa: E402

log = logging.getLogger("vozvrat.run_starter")

BATCH = int(os.environ.get("VOZVRAT_STARTER_BATCH", "20"))
CONCURRENCY = int(os.environ.get("VOZVRAT_STARTER_CONCURRENCY", "3"))
IDLE_POLL_S = float(os.environ.get("VOZVRAT_STARTER_POLL_S", "0.3"))
SWEEP_INTERVAL_S = float(os.environ.get("VOZVRAT_SWEEP_INTERVAL_S", "60"))
SWEEP_GRACE_S = float(os.environ.get("VOZVRAT_SWEEP_GRACE_S", "60"))
STALE_RUNNING_S = float(os.environ.get("VOZVRAT_STALE_RUNNING_S", "600"))
# A crashed run is re-run (the same run) by the re-run automation (tasks/automations.py) within
# seconds; the starter gives its claim a new run only if it is still crashed after this.
CRASH_RERUN_GRACE_S = float(os.environ.get("VOZVRAT_CRASH_RERUN_GRACE_S", "120"))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    engine = get_engine()
    runs = PrefectRuns()
    stale = timedelta(seconds=STALE_RUNNING_S)
    crashed_grace = timedelta(seconds=CRASH_RERUN_GRACE_S)
    stopping = False

    def _stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("run starter: %d at a time, sweep every %.0fs", CONCURRENCY, SWEEP_INTERVAL_S)
    pool = ThreadPoolExecutor(max_workers=CONCURRENCY, thread_name_prefix="starter")
    last_sweep = time.monotonic()
    last_mail_check = time.monotonic()
    mail_check_s = dispatch_interval().total_seconds()
    cooldown = 0.0
    while not stopping:
        try:
            report = drain_once(engine, runs, now=datetime.now(UTC), limit=BATCH, concurrency=CONCURRENCY, stale_running=stale,
                                pool=pool, crashed_grace=crashed_grace)
            if report.taken:
                log.info("%s", report)
            # Prefect answering errors: when nothing went through it is down or swamped (back off, doubling
            # to 10 s); a few 503s in a batch that mostly went through only ask for a breath.
            went_through = report.taken - report.retried
            if report.errors and not went_through:
                cooldown = min(max(cooldown * 2, 0.5), 10.0)
            else:
                cooldown = 0.5 if report.errors else 0.0
            if report.errors:
                log.warning("%d Prefect error(s), pausing %.1fs: %s", len(report.errors), cooldown, report.errors[0][:200])
            if time.monotonic() - last_sweep >= SWEEP_INTERVAL_S:
                last_sweep = time.monotonic()
                found = sweep(engine, runs, now=datetime.now(UTC), grace=timedelta(seconds=SWEEP_GRACE_S), stale_running=stale,
                              crashed_grace=crashed_grace)
                if found.queued:
                    log.info("sweep: %s", found)
            # outbox-dispatch has no schedule: a run only when mail was left behind (tasks/sweep_gate.py).
            if time.monotonic() - last_mail_check >= mail_check_s:
                last_mail_check = time.monotonic()
                dispatch_run = start_outbox_dispatch_if_needed(engine, now=datetime.now(UTC))
                if dispatch_run:
                    log.info("mail left behind: outbox-dispatch run %s", dispatch_run)
        except Exception as exc:  # noqa: BLE001 - the database or Prefect is down: keep the process, try again
            log.warning("run starter pass failed, trying again: %s: %s", exc.__class__.__name__, str(exc)[:300])
            cooldown = min(max(cooldown * 2, 1.0), 10.0)
            report = None
        if cooldown:
            time.sleep(cooldown)
        elif report is None or report.taken < BATCH:
            time.sleep(IDLE_POLL_S)


if __name__ == "__main__":
    main()
