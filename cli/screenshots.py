"""`python -m cli.screenshots`: what ops see in the Prefect UI, photographed with headless Chromium.

Starts the embedded stack on free ports (in a temporary folder under var/), files three claims of
one organizer — one waiting for the organizer, one escalated by sla-watch (the clock moved 20 days,
nobody waits), one box-office claim waiting for the buyer's bank details — waits until each run is
suspended and says so, takes the screenshots into docs/ (ui-waiting.png, ui-escalated.png,
ui-bank-details.png, ui-claim-card.png) and stops everything. The same scenario (`build_scenario`)
is what tests/flows/test_ops_ui.py checks through the Prefect API.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from cli.stack import Stack

# Prefect and everything that imports it are imported inside the functions: Prefect reads its settings
# (PREFECT_API_URL) on import, and main() points them at the stack it starts.

MSK = ZoneInfo("Europe/Moscow")
DOCS = Path(__file__).resolve().parent.parent / "docs"
ORGANIZER_NAME = "Мосфильм-Концерт"
EVENT_TITLE = "Щелкунчик. Большой зал"
SCREENSHOTS = {"waiting": "ui-waiting.png", "escalated": "ui-escalated.png", "bank": "ui-bank-details.png"}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--no-first-run"]


@dataclass(frozen=True)
class ScenarioClaim:
    story: str  # waiting | escalated | bank
    claim_id: int
    number: str
    state: str  # the claim state its run waits in
    flow_run_id: str


@dataclass(frozen=True)
class OpsScenario:
    organizer_id: int
    event_id: int
    claims: dict[str, ScenarioClaim]
    sla_watch_run_id: str


def wait_until(what: str, check: Callable[[], object], timeout: float = 180.0):
    """Poll a condition the stack reaches by itself (a run suspending); never a clock wait."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what} (last: {last!r})")


def _suspended_in(flow_run_id: str | None, claim_state: str) -> bool:
    from prefect import get_client

    from tasks.run_actions import paused_in

    if not flow_run_id:
        return False
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run_id).state
    return bool(state and state.is_paused() and paused_in(state.state_details.pause_key) == claim_state)


def build_scenario(engine, now: datetime) -> OpsScenario:
    """One organizer, one event a month away, three claims whose runs wait for three different people."""
    from prefect.deployments import run_deployment
    from sqlalchemy import insert, select

    from models.claim_views import read_claim
    from models.tables import Claim, Event, Order, Organizer, Ticket, Venue
    from tasks.intake import file_buyer_claim

    with engine.begin() as conn:
        org = conn.execute(insert(Organizer.__table__).values(name=ORGANIZER_NAME, email="decisions@mosfilm-concert.example.ru",
                                                              policy={})).inserted_primary_key[0]
        hall = conn.execute(insert(Venue.__table__).values(name="Дом музыки", timezone="Europe/Moscow", region="77")).inserted_primary_key[0]
        start = (now + timedelta(days=30)).astimezone(MSK).replace(hour=19, minute=0, second=0, microsecond=0)
        event = conn.execute(insert(Event.__table__).values(organizer_id=org, venue_id=hall, title=EVENT_TITLE,
                                                            starts_at=start)).inserted_primary_key[0]

        def ticket(story: str, method: str) -> int:
            order = conn.execute(insert(Order.__table__).values(
                number=f"OPS-{event}-{story}", buyer_name="Покупатель Тестовый", buyer_email=f"{story}-{event}@example.ru",
                buyer_phone="+79990000000", channel="site" if method == "card" else "box_office", payment_method=method,
                acquirer_payment_id=f"2d1f5a0e-000f-5000-9000-{event:06d}{len(story):06d}" if method == "card" else None,
                created_at=now - timedelta(days=40))).inserted_primary_key[0]
            return conn.execute(insert(Ticket.__table__).values(order_id=order, event_id=event, price_paid=450000, nominal=450000,
                                                                service_fee=45000, barcode=f"OPS{event:06d}{story}")).inserted_primary_key[0]

        tickets = {"escalated": ticket("escalated", "card"), "waiting": ticket("waiting", "card"), "bank": ticket("bank", "cash")}

    def run_of(claim_id: int) -> str | None:
        with engine.connect() as conn:
            return conn.execute(select(Claim.flow_run_id).where(Claim.id == claim_id)).scalar_one()

    # The escalated claim first: sla-watch, run as if 20 days had passed, escalates only what is filed by then.
    escalated = file_buyer_claim(engine, actor="cli:screenshots", ticket_id=tickets["escalated"], reason="other", now=now,
                                 description="Переезд в другой город, прийти не смогу")
    wait_until("the claim with the organizer", lambda: _suspended_in(run_of(escalated.id), "awaiting_organizer"))
    sla_run = run_deployment("sla-watch/sla-watch", parameters={"now": (now + timedelta(days=20)).isoformat()}, timeout=180,
                             as_subflow=False)
    if not sla_run.state or not sla_run.state.is_completed():
        raise RuntimeError(f"sla-watch did not complete: {sla_run.state}")
    waiting = file_buyer_claim(engine, actor="cli:screenshots", ticket_id=tickets["waiting"], reason="other", now=now, description="Командировка")
    bank = file_buyer_claim(engine, actor="cli:screenshots", ticket_id=tickets["bank"], reason="voluntary", now=now)

    claims: dict[str, ScenarioClaim] = {}
    for story, filed, state in (("escalated", escalated, "escalated"), ("waiting", waiting, "awaiting_organizer"),
                                ("bank", bank, "needs_bank_details")):
        wait_until(f"the {story} claim's run suspended in {state}", lambda c=filed, s=state: _suspended_in(run_of(c.id), s))
        claims[story] = ScenarioClaim(story=story, claim_id=filed.id, number=read_claim(filed.id, engine=engine).number, state=state,
                                      flow_run_id=str(run_of(filed.id)))
    return OpsScenario(organizer_id=org, event_id=event, claims=claims, sla_watch_run_id=str(sla_run.id))


def latest_artifact_id(key: str) -> str:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        (artifact,) = client.read_latest_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), limit=1)
    return str(artifact.latest_id)


def take_screenshots(prefect_ui_url: str, scenario: OpsScenario, out_dir: Path) -> list[Path]:
    """Each claim's run page (state name, message, tags), the escalated claim's card, and the runs list."""
    from playwright.sync_api import sync_playwright

    from tasks.claim_card import card_key

    chromium = shutil.which("chromium")
    if chromium is None:
        raise RuntimeError("Debian's chromium is not installed: apt-get install chromium")
    out_dir.mkdir(parents=True, exist_ok=True)
    taken: list[Path] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900}, locale="ru-RU")
            for story, filename in SCREENSHOTS.items():
                claim = scenario.claims[story]
                page.goto(f"{prefect_ui_url}/runs/flow-run/{claim.flow_run_id}")
                page.get_by_text(claim.number).first.wait_for(timeout=60_000)
                page.wait_for_load_state("networkidle")
                path = out_dir / filename
                page.screenshot(path=str(path), full_page=False)
                taken.append(path)
            page.goto(f"{prefect_ui_url}/artifacts/artifact/{latest_artifact_id(card_key(scenario.claims['escalated'].number))}")
            page.get_by_text("Карточка заявки").first.wait_for(timeout=60_000)
            page.wait_for_load_state("networkidle")
            path = out_dir / "ui-claim-card.png"
            page.screenshot(path=str(path), full_page=True)
            taken.append(path)
        finally:
            browser.close()
    return taken


def main() -> None:
    base = Path("var").absolute()
    base.mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="screenshots-", dir=base))
    # The run starter looks for runs behind their claims every 2 s (an escalated claim's run is resumed
    # by that sweep), instead of every minute.
    os.environ.setdefault("VOZVRAT_SWEEP_INTERVAL_S", "2")
    os.environ.setdefault("VOZVRAT_SWEEP_GRACE_S", "3")
    stack = Stack.on_free_ports(root)
    print(f"starting the stack in {root} …", file=sys.stderr)
    stack.start()
    os.environ.update(stack.env())
    try:
        from models.db import get_engine
        from models.settings import get_settings

        get_settings.cache_clear()
        get_engine.cache_clear()
        scenario = build_scenario(get_engine(), datetime.now(UTC))
        for path in take_screenshots(stack.prefect_ui_url, scenario, DOCS):
            print(path)
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
