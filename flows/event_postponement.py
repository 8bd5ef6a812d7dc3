"""event-postponement: tell every buyer of a postponed event, and (Decree 442, when the organizer
exchanges tickets) issue the vouchers, chunk by chunk, with a progress and a summary artifact.

The change itself is recorded first (`vozvrat events postpone`, POST /events/{id}/postponement);
this run does the per-buyer work of a stadium. Each chunk is one transaction keyed by the change and
the order (or the ticket's voucher), so a retried or re-run flow writes nothing twice and carries on
where a crash left it.
"""
from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow

from tasks.postponement import event_of_change, notify_chunk, postponement_chunks, publish_summary, report_progress, start_progress
from tasks.vouchers import event_takes_vouchers, issue_chunk, voucher_chunks


@flow(name="event-postponement", log_prints=True, retries=2, retry_delay_seconds=30)
def event_postponement(change_id: int, issue_vouchers: bool = False, chunk_size: int = 1000, started_by: str = "event-postponement",
                       now: datetime | None = None) -> dict:
    now = now or datetime.now(UTC)
    event_id = event_of_change(change_id)
    orders = postponement_chunks(change_id, chunk_size)
    tickets = voucher_chunks(event_id, chunk_size) if issue_vouchers and event_takes_vouchers(event_id, now) else []
    total_orders, total_tickets = sum(map(len, orders)), sum(map(len, tickets))
    progress = start_progress(change_id, f"Перенос № {change_id}: оповестить заказов — {total_orders}, обменять билетов на ваучеры — {total_tickets}")
    steps, done = len(orders) + len(tickets), 0

    told = 0
    for chunk in orders:
        told += notify_chunk(change_id, chunk, now, started_by, total_orders)
        done += 1
        report_progress(progress, done, steps)
    issued = 0
    for chunk in tickets:
        issued += issue_chunk(event_id, chunk, started_by, now, total_tickets)
        done += 1
        report_progress(progress, done, steps)

    summary = {"change_id": change_id, "event_id": event_id, "orders": total_orders, "notices_written": told,
               "tickets": total_tickets, "vouchers_issued": issued, "chunks": steps}
    publish_summary(change_id, summary)
    print(f"postponement {change_id}: {summary}")
    return summary
