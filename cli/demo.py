"""`make demo`: the whole product on embedded defaults, end to end, then everything stops.

Scenario: a voluntary claim paid automatically to the card; an illness claim that waits, receives
documents, is approved through the API and resumes; an "other" claim refused with the fallback
offer; an overdue claim escalated by the SLA watch (the clock is moved, nobody waits); a box-office
(cash) claim paid by bank transfer through a 1C file. The summary is checked against the SMTP sink.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table

from cli.stack import Stack

console = Console()
MSK = ZoneInfo("Europe/Moscow")


def seed(engine, now: datetime) -> dict:
    """An organizer, a Moscow hall, events at several distances, one ticket per story."""
    from sqlalchemy import insert

    from models.tables import Event, Order, Organizer, Ticket, Venue
    from tasks.intake import issue_organizer_token

    with engine.begin() as conn:
        org = conn.execute(insert(Organizer.__table__).values(name="Концертное агентство «Демо»", email="organizer@example.ru", policy={})).inserted_primary_key[0]
        hall = conn.execute(insert(Venue.__table__).values(name="Крокус Сити Холл", timezone="Europe/Moscow", region="50")).inserted_primary_key[0]

        def event(title: str, days: int) -> int:
            start = (now + timedelta(days=days)).astimezone(MSK).replace(hour=19, minute=0, second=0, microsecond=0)
            return conn.execute(insert(Event.__table__).values(organizer_id=org, venue_id=hall, title=title, starts_at=start)).inserted_primary_key[0]

        payments: dict[str, int] = {}  # the buyers' card payments, for the acquirer stand-in

        def ticket(event_id: int, buyer: str, email: str, price: int, method: str = "card") -> int:
            payment_id = f"2d1f5a0e-000f-5000-9000-{abs(hash(email)) % 10**12:012d}" if method == "card" else None
            if payment_id:
                payments[payment_id] = price + price // 10  # the ticket and the service fee
            n = conn.execute(insert(Order.__table__).values(
                number=f"DEMO-{email.split('@')[0]}", buyer_name=buyer, buyer_email=email, buyer_phone="+79990000000",
                channel="site" if method == "card" else "box_office", payment_method=method,
                acquirer_payment_id=payment_id, created_at=now - timedelta(days=40))).inserted_primary_key[0]
            return conn.execute(insert(Ticket.__table__).values(order_id=n, event_id=event_id, price_paid=price, nominal=price,
                                                                service_fee=price // 10, barcode=f"DEMO{n:08d}")).inserted_primary_key[0]

        far, soon = event("Симфонический оркестр: Шостакович", 30), event("Рок-фестиваль", 6)
        tickets = {
            "voluntary": ticket(far, "Петрова Анна Сергеевна", "anna@example.ru", 350000),
            "illness": ticket(soon, "Иванов Иван Иванович", "ivan@example.ru", 420000),
            "other": ticket(soon, "Смирнов Олег Петрович", "oleg@example.ru", 275050),
            "overdue": ticket(far, "Кузнецова Мария Андреевна", "maria@example.ru", 180000),
            "cash": ticket(far, "Соколов Денис Викторович", "denis@example.ru", 250000, method="cash"),
        }
    return {"organizer_id": org, "token": issue_organizer_token(engine, org), "tickets": tickets, "soon_event_start": now + timedelta(days=6),
            "payments": payments}


def wait_for(what: str, check, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


def run(root: Path) -> int:
    stack = Stack.on_free_ports(root)
    console.print(f"[bold]vozvrat demo[/bold] — starting the embedded stack in {root} …")
    t0 = time.monotonic()
    stack.start()
    os.environ.update(stack.env())
    try:
        return _scenario(stack, t0)
    finally:
        console.print("stopping the stack …")
        stack.stop()


def _scenario(stack: Stack, t0: float) -> int:
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from sqlalchemy import func, select

    from models.claim_views import read_claim
    from models.db import get_engine
    from models.settings import get_settings
    from models.tables import Claim, OutboxMessage
    from tasks.buyer_links import status_url
    from tasks.payouts import export_bank_transfers

    get_settings.cache_clear()
    get_engine.cache_clear()
    engine = get_engine()
    now = datetime.now(UTC)
    data = seed(engine, now)
    for payment_id, amount in data["payments"].items():
        stack.register_payment(payment_id, amount)
    console.print(f"stack up in {time.monotonic() - t0:.0f}s: Prefect UI {stack.prefect_ui_url}, API {stack.api_url}")
    from tasks.auth import create_service_key

    # The operator's site files for its signed-in buyers with its service key (buyers may also sign in
    # themselves with the order number and an emailed code: /buyer).
    site = create_service_key(engine, f"demo-site-{now:%Y%m%d%H%M%S}", now=now)
    api = httpx.Client(base_url=stack.api_url, timeout=30, headers={"Authorization": f"Bearer {site}"})
    org = {"Authorization": f"Bearer {data['token']}"}

    def file(story: str, reason: str, **extra) -> dict:
        r = api.post("/claims", json={"ticket_id": data["tickets"][story], "reason": reason, **extra})
        r.raise_for_status()
        return r.json()

    def state_is(claim_id: int, *states: str):
        return lambda: read_claim(claim_id, engine=engine).state in states

    def run_of(story: str) -> str:
        """The claim's flow run: the API answers before it exists; the run starter creates it."""
        def created():
            with engine.connect() as conn:
                return conn.execute(select(Claim.flow_run_id).where(Claim.id == claims[story]["id"])).scalar_one()
        return wait_for(f"{story} claim's run created", created)

    claims: dict[str, dict] = {}
    console.print("1. voluntary claim, 30 days before the concert → paid to the card automatically")
    claims["voluntary"] = file("voluntary", "voluntary")
    wait_for("voluntary claim paid", state_is(claims["voluntary"]["id"], "paid"))

    console.print("2. illness claim → documents → organizer approves through the API → paid")
    claims["illness"] = file("illness", "illness")
    wait_for("illness claim awaiting documents", state_is(claims["illness"]["id"], "awaiting_documents"))
    sick_from = (now - timedelta(days=1)).astimezone(MSK).date()
    api.post(f"/claims/{claims['illness']['number']}/documents", json={
        "kind": "sick_leave_gosuslugi", "sick_from": sick_from.isoformat(), "sick_to": (sick_from + timedelta(days=14)).isoformat(),
        "person_name": "Иванов Иван Иванович"}).raise_for_status()
    wait_for("illness claim awaiting organizer", state_is(claims["illness"]["id"], "awaiting_organizer"))
    wait_for("illness run suspended again", lambda: _waiting_in(get_client, run_of("illness"), "awaiting_organizer"))
    api.post(f"/organizer/claims/{claims['illness']['id']}/decision", headers=org,
             json={"decision": "approve", "decided_by": "organizer:demo"}).raise_for_status()
    wait_for("illness claim paid", state_is(claims["illness"]["id"], "paid"))

    console.print("3. «Прочее» claim → organizer refuses → the buyer is offered the voluntary refund")
    claims["other"] = file("other", "other", description="Не смогу прийти: командировка")
    wait_for("other claim awaiting organizer", state_is(claims["other"]["id"], "awaiting_organizer"))
    wait_for("other run suspended", lambda: _waiting_in(get_client, run_of("other"), "awaiting_organizer"))
    api.post(f"/organizer/claims/{claims['other']['id']}/decision", headers=org,
             json={"decision": "reject", "note": "Командировка не является основанием для полного возврата."}).raise_for_status()
    wait_for("other claim rejected and its run finished", lambda: _run_state(get_client, run_of("other")) == "COMPLETED")

    console.print("4. an organizer who never answers → the SLA watch, run 20 days later, escalates")
    claims["overdue"] = file("overdue", "other", description="Переезд в другой город")
    wait_for("overdue claim awaiting organizer", state_is(claims["overdue"]["id"], "awaiting_organizer"))
    later = now + timedelta(days=20)
    sla_run = run_deployment("sla-watch/sla-watch", parameters={"now": later.isoformat()}, timeout=120, as_subflow=False)

    console.print("5. box-office (cash) claim → bank details → payment order in a 1C file")
    claims["cash"] = file("cash", "voluntary")
    wait_for("cash claim needs bank details", state_is(claims["cash"]["id"], "needs_bank_details"))
    api.post(f"/claims/{claims['cash']['number']}/bank-details",
             json={"bik": "049805746", "account": "40602810700000000025", "name": "Соколов Денис Викторович"}).raise_for_status()
    run_deployment("payout-run/payout-run", parameters={"now": now.isoformat()}, timeout=120, as_subflow=False)
    export_file = stack.root / "payouts-1c.txt"
    exported = export_bank_transfers(engine, out=export_file, now=now)
    run_deployment("outbox-dispatch/outbox-dispatch", parameters={"now": later.isoformat()}, timeout=120, as_subflow=False)
    with engine.connect() as conn:
        sent = conn.execute(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.status == "sent")).scalar_one()
        rows = conn.execute(select(Claim.number, Claim.reason, Claim.state, Claim.amount, Claim.flow_run_id).order_by(Claim.id)).all()
        escalated = conn.execute(select(func.count()).select_from(Claim).where(Claim.state == "escalated")).scalar_one()
        templates = Counter(dict(conn.execute(select(OutboxMessage.template, func.count()).where(OutboxMessage.status == "sent")
                                              .group_by(OutboxMessage.template)).all()))
    received = list(stack.mail_dir.glob("*.eml"))

    table = Table(title="Claims")
    for col in ("claim", "reason", "state", "quote, ₽"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.number, r.reason, r.state, f"{r.amount / 100:.2f}")
    console.print(table)
    console.print("Flow runs in the Prefect UI (named after the claims):")
    for r in rows:
        console.print(f"  {r.number}: {stack.prefect_ui_url}/runs/flow-run/{r.flow_run_id}", soft_wrap=True)
    console.print(f"  sla-watch: {stack.prefect_ui_url}/runs/flow-run/{sla_run.id}", soft_wrap=True)
    console.print("«Где мои деньги», the buyers' status pages (the same links are in their emails):")
    for r in rows:
        console.print(f"  {r.number}: {status_url(r.number, now=datetime.now(UTC))}", soft_wrap=True)
    mail = Table(title=f"Emails: {sent} sent from the outbox, {len(received)} received by the SMTP sink")
    mail.add_column("template")
    mail.add_column("sent", justify="right")
    for template, n in sorted(templates.items()):
        mail.add_row(template, str(n))
    console.print(mail)
    console.print(f"SLA watch escalated {escalated} claim(s); 1C file: {export_file} ({exported} payment order(s))", soft_wrap=True)
    console.print(f"acquirer ledger: {stack.ledger_path}; mail: {stack.mail_dir}; finished in {time.monotonic() - t0:.0f}s", soft_wrap=True)
    if sent != len(received):
        console.print(f"[red]mismatch: {sent} sent, {len(received)} received[/red]")
        return 1
    return 0


def _waiting_in(get_client, flow_run_id: str, claim_state: str) -> bool:
    from tasks.run_actions import paused_in

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run_id).state
    return bool(state and state.type.value == "PAUSED" and paused_in(state.state_details.pause_key) == claim_state)


def _run_state(get_client, flow_run_id: str) -> str | None:
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
    return run.state.type.value if run.state else None


def main() -> None:
    base = Path("var").absolute()
    base.mkdir(exist_ok=True)
    root = Path(os.environ.get("VOZVRAT_DEMO_DIR") or tempfile.mkdtemp(prefix="demo-", dir=base))
    sys.exit(run(root))


if __name__ == "__main__":
    main()
