"""`make demo`: the whole product on embedded defaults, end to end, then everything stops.

Scenario: a voluntary claim paid automatically to the card; an illness claim that waits, receives
documents, is approved through the API and resumes; an "other" claim refused with the fallback
offer; an overdue claim escalated by the SLA watch (the clock is moved, nobody waits); a box-office
(cash) claim paid by bank transfer through a 1C file; a high-alert regime (Decree 442) ends, a
festival is postponed by a year, one buyer takes a voucher and one is refused; a stadium event of
2,000 tickets cancelled in one `mass-cancellation` run (progress and summary artifacts in the Prefect
UI), its mass mail held until a second staff supervisor approves it. The summary is checked against
the SMTP sink.
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


def run(root: Path, *, keep_up: bool = False) -> int:
    stack = Stack.on_free_ports(root)
    console.print(f"[bold]vozvrat demo[/bold] — starting the embedded stack in {root} …")
    t0 = time.monotonic()
    stack.start()
    os.environ.update(stack.env())
    links: list[str] = []
    try:
        code = _scenario(stack, t0, links)
        if keep_up:
            for line in closing_lines(stack, links, kept_up=True):
                console.print(line, soft_wrap=True)
            _wait_for_ctrl_c()
    finally:
        console.print("stopping the stack …")
        stack.stop()
    if not keep_up:
        for line in closing_lines(stack, links, kept_up=False):
            console.print(line, soft_wrap=True)
    return code


def closing_lines(stack: Stack, links: list[str], *, kept_up: bool) -> list[str]:
    """What the demo says last. Links only to a stack that is still up: the demo's own stack stops
    with it (its ports and its Prefect database go too), so it points to `make up` instead."""
    if kept_up:
        return [f"The demo's stack stays up until Ctrl+C: Prefect UI {stack.prefect_ui_url}, API {stack.api_url}/docs", *links]
    return ["The demo's stack is stopped now, and its Prefect UI and API with it.",
            "To look around in the Prefect UI: `make up` (your own stack, until Ctrl+C), "
            "or `VOZVRAT_DEMO_KEEP_UP=1 make demo` to keep this demo's stack and its runs up."]


def _wait_for_ctrl_c() -> None:
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass


def _scenario(stack: Stack, t0: float, links: list[str]) -> int:
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
    console.print(f"stack up in {time.monotonic() - t0:.0f}s (it stops when the demo ends): Prefect UI {stack.prefect_ui_url}, API {stack.api_url}")
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

    console.print("6. a high-alert regime ends; a festival is postponed by a year → buyers told, a voucher, a refusal (Decree 442)")
    regime_story(api, engine, now)
    mass = _mass_cancellation(stack, engine, now)
    run_deployment("outbox-dispatch/outbox-dispatch", parameters={"now": later.isoformat()}, timeout=120, as_subflow=False)
    with engine.connect() as conn:
        sent = conn.execute(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.status == "sent")).scalar_one()
        rows = conn.execute(select(Claim.number, Claim.reason, Claim.state, Claim.amount, Claim.flow_run_id)
                            .where(Claim.event_id != mass["event_id"]).order_by(Claim.id)).all()
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
    # Printed only while the stack is up (VOZVRAT_DEMO_KEEP_UP=1): see closing_lines.
    links.append("Flow runs in the Prefect UI (named after the claims):")
    links.extend(f"  {r.number}: {stack.prefect_ui_url}/runs/flow-run/{r.flow_run_id}" for r in rows)
    links.append(f"  sla-watch: {stack.prefect_ui_url}/runs/flow-run/{sla_run.id}")
    links.append(f"  mass-cancellation of event {mass['event_id']} ({mass['tickets']} tickets): {mass['url']}")
    links.append("«Где мои деньги», the buyers' status pages (the same links are in their emails):")
    links.extend(f"  {r.number}: {status_url(r.number, now=datetime.now(UTC))}" for r in rows)
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


def regime_story(api, engine, now: datetime) -> None:
    """Decree 442 in a few calls: the organizer keeps tickets valid and offers vouchers."""
    from sqlalchemy import insert

    from models.claim_views import read_claim
    from models.tables import Event, Order, Organizer, Ticket, Venue
    from tasks.accounts import create_user, issue_api_token
    from tasks.auth import create_service_key
    from tasks.intake import issue_organizer_token

    first = (now - timedelta(days=20)).astimezone(MSK).replace(hour=19, minute=0, second=0, microsecond=0)
    with engine.begin() as conn:
        org = conn.execute(insert(Organizer.__table__).values(name="Фестиваль «Парк»", email="park@example.ru",
                                                              policy={"regime_postponed_refunds": False, "vouchers_offered": True})).inserted_primary_key[0]
        park = conn.execute(insert(Venue.__table__).values(name="Парк «Сокольники»", timezone="Europe/Moscow", region="77")).inserted_primary_key[0]
        event = conn.execute(insert(Event.__table__).values(organizer_id=org, venue_id=park, title="Летний фестиваль", starts_at=first)).inserted_primary_key[0]
        tickets = []
        for login, name in (("olga", "Орлова Ольга"), ("pavel", "Попов Павел")):
            order = conn.execute(insert(Order.__table__).values(number=f"DEMO-{login}", buyer_name=name, buyer_email=f"{login}@example.ru",
                                                                channel="site", payment_method="card", created_at=first - timedelta(days=60))).inserted_primary_key[0]
            tickets.append(conn.execute(insert(Ticket.__table__).values(order_id=order, event_id=event, price_paid=550000, nominal=550000,
                                                                        barcode=f"PARK{order:08d}")).inserted_primary_key[0])
    duty = create_user(engine, login="duty@operator.ru", password=None, kind="staff", role="supervisor", now=now)
    staff = {"Authorization": f"Bearer {issue_api_token(engine, duty.id, name='demo', now=now)}"}
    organizer = {"Authorization": f"Bearer {issue_organizer_token(engine, org)}"}
    site = {"Authorization": f"Bearer {create_service_key(engine, 'demo-site', now=now)}"}
    regime = api.post("/regimes", json={"region": "77", "starts_on": (first.date() - timedelta(days=20)).isoformat()}, headers=staff).json()
    api.post(f"/regimes/{regime['id']}/end", json={"ends_on": (now - timedelta(days=2)).date().isoformat()}, headers=staff).raise_for_status()
    moved = api.post(f"/events/{event}/postponement", json={"new_starts_at": (first + timedelta(days=365)).isoformat()}, headers=organizer)
    moved.raise_for_status()
    console.print(f"   {moved.json()['notices_written']} buyers told; rule: {moved.json()['regime_rule']['text_ru']}", soft_wrap=True)
    voucher = api.post("/vouchers", json={"ticket_id": tickets[0]}, headers=site)
    voucher.raise_for_status()
    console.print(f"   voucher {voucher.json()['number']} for {voucher.json()['value'] / 100:.2f} ₽, valid until {voucher.json()['valid_until']}")
    claim = api.post("/claims", json={"ticket_id": tickets[1], "reason": "postponed"})
    claim.raise_for_status()
    wait_for("the postponed claim refused", lambda: read_claim(claim.json()["id"], engine=engine).state == "rejected")
    console.print(f"   claim {claim.json()['number']} refused: {claim.json()['quote']['refusal_message_ru']}", soft_wrap=True)


MASS_TICKETS = {"card": 1700, "cash": 200, "bso": 100}


def _mass_cancellation(stack: Stack, engine, now: datetime) -> dict:
    """7. A stadium event cancelled: one flow run for 2,000 tickets, the mail waits for a second person."""
    import asyncio

    from prefect import get_client

    from cli.bench_seed import seed_mass_event
    from tasks.accounts import create_user
    from tasks.mass import progress
    from tasks.mass_sends import approve_mass_send, list_mass_sends
    from tasks.mass_steps import start_run

    tickets = sum(MASS_TICKETS.values())
    console.print(f"7. a stadium concert cancelled: {tickets} tickets (card, cash, BSO) in one mass-cancellation run")
    with engine.begin() as conn:
        data = seed_mass_event(conn, starts_at=now + timedelta(days=20), title="Стадион: концерт отменён", seed=42, **MASS_TICKETS)
    stack.register_payments(data["payments"])
    anna = create_user(engine, login="anna@demo.example.ru", password="demo password 1", kind="staff", role="supervisor", now=now,
                       display_name="Анна (старший смены)")
    boris = create_user(engine, login="boris@demo.example.ru", password="demo password 2", kind="staff", role="supervisor", now=now,
                        display_name="Борис (старший смены)")
    run_id, url = asyncio.run(start_run(event_id=data["event_id"], action="cancelled", reason="Концерт отменён по решению организатора",
                                        started_by=anna.principal.audit))
    console.print(f"   started by {anna.principal.audit}: {url}", soft_wrap=True)

    def finished() -> str | None:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(run_id).state
        name = state.type.value if state else None
        return name if name in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

    final = wait_for("the mass cancellation run", finished, timeout=240)
    summary = (progress(engine, data["event_id"]) or {}).get("summary") or {}
    console.print(f"   run {final}: {summary.get('claims')} claims, states {summary.get('states')}")
    for code, entry in sorted((summary.get("failures") or {}).items()):
        console.print(f"   left the batch: {code} × {entry['count']} — {entry['message_ru']}")
    held = [v for v in list_mass_sends(engine, status="held") if v.event_id == data["event_id"]]
    console.print(f"   the buyers' mail waits: {', '.join(f'№ {v.id} {v.template} ({v.recipient_count})' for v in held)}; "
                  f"{anna.principal.audit} may not approve her own send")
    for v in held:
        approve_mass_send(engine, v.id, principal=boris.principal, now=now)
    console.print(f"   [bold]approved by a second staff supervisor, {boris.principal.audit}[/bold]: the mail is released")
    _send_all_mail(engine)
    return {"event_id": data["event_id"], "tickets": tickets, "url": url}


def _send_all_mail(engine) -> None:
    """Deliver what waits in the outbox with a few dispatchers at once (as several outbox-dispatch workers would).

    Each pass reads the real clock: a lease is taken until now + 5 min, and a lease computed from a
    stale `now` would already be expired for the served outbox-dispatch, which would send the row again."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from models.settings import get_settings
    from tasks.outbox import dispatch_emails
    from tasks.smtp import SmtpSettings

    settings = get_settings()

    def dispatcher(_: int) -> None:
        while asyncio.run(dispatch_emails(engine=engine, smtp=SmtpSettings.from_settings(settings), now=datetime.now(UTC), mail_from=settings.mail_from,
                                          limit=2000, rate_per_s=settings.mail_rate_per_s)).sent:
            pass

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(dispatcher, range(4)))


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
    sys.exit(run(root, keep_up=os.environ.get("VOZVRAT_DEMO_KEEP_UP", "").lower() in ("1", "true", "yes")))


if __name__ == "__main__":
    main()
