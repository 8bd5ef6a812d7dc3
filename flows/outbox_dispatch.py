"""outbox-dispatch: every minute, send what waits in the outbox (retries after an SMTP outage)."""
from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow

from tasks.claims import dispatch_outbox


@flow(name="outbox-dispatch", log_prints=True)
def outbox_dispatch(now: datetime | None = None) -> str:
    return dispatch_outbox(now or datetime.now(UTC))
