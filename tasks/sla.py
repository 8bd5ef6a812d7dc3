"""SLA watch side effects: find due claims with indexed queries, escalate them in batch, tell people.

Decision SLA: 10 working days (20 when extended) after filing (Decree 1491), stored on the claim as
`decision_due`. Payout SLA: 10 working days after the decision, `payout_due`. The cost of a pass
grows with the number of due claims, not with the table: both queries walk (state, due) indexes.
Documents window: an illness or death claim still without documents when its window closes is
refused (`expire_documents`); that query walks the state index, over claims awaiting documents only.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event
from sqlalchemy import and_, func, or_, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from models.claim_store import apply_batch, claim_t, event_t, id_in, organizer_t, regime_t, venue_t
from models.db import get_engine
from models.settings import get_settings
from states.calendar import is_working_day
from states.lifecycle import DECISION_STATES, PAYOUT_STATES, ClaimState, Trigger
from states.regimes import (
    DECREE_442_RU,
    PUBLICATION_DAYS,
    PUBLICATION_WARNING_DAYS,
    REFUND_DAYS,
    REFUND_WARNING_DAYS,
    Alert,
    RegimeSpan,
    deadline_alert,
    publication_last_day,
)
from tasks.claim_card import tag_escalated_runs
from tasks.intake import ClaimInput, request_run_resume
from tasks.outbox import enqueue_email
from tasks.run_actions import queue_resume


@dataclass
class Breach:
    claim_id: int
    number: str
    kind: str  # decision | payout
    due: str
    flow_run_id: str | None
    organizer_email: str
    event_title: str
    reason: str


@dataclass
class SlaReport:
    escalated: list[Breach] = field(default_factory=list)
    refused: int = 0

    def __str__(self) -> str:
        return f"{len(self.escalated)} escalated, {self.refused} not yet overdue in their venue's time zone"


def _candidates(conn, *, states, due_column, now: datetime, only_unflagged: bool):
    # `due < tomorrow (UTC)` over-selects by at most a day across time zones; the guard, which
    # judges the date in the venue's zone, has the last word.
    horizon = (now + timedelta(days=1)).date()
    cond = and_(claim_t.c.state.in_([s.value for s in states]), due_column.is_not(None), due_column < horizon)
    if only_unflagged:
        cond = and_(cond, claim_t.c.escalated_at.is_(None))
    return conn.execute(
        select(claim_t.c.id, claim_t.c.number, due_column.label("due"), claim_t.c.flow_run_id, claim_t.c.reason,
               organizer_t.c.email.label("organizer_email"), event_t.c.title.label("event_title"))
        .join(event_t, event_t.c.id == claim_t.c.event_id)
        .join(organizer_t, organizer_t.c.id == event_t.c.organizer_id)
        .where(cond)
        .order_by(claim_t.c.id)
    ).all()


@task(name="escalate-overdue-claims", retries=2, retry_delay_seconds=5)
def escalate_overdue_claims(now: datetime) -> SlaReport:
    """Escalate overdue decisions, flag overdue payouts; queue the notices in the same pass."""
    engine = get_engine()
    report = SlaReport()
    plan = [
        (Trigger.ESCALATE, DECISION_STATES, claim_t.c.decision_due, False, "decision"),
        (Trigger.FLAG_PAYOUT_OVERDUE, PAYOUT_STATES, claim_t.c.payout_due, True, "payout"),
    ]
    for trigger, states, due_column, only_unflagged, kind in plan:
        with engine.connect() as conn:
            rows = {r.id: r for r in _candidates(conn, states=states, due_column=due_column, now=now, only_unflagged=only_unflagged)}
        if not rows:
            continue
        result = apply_batch(engine, claim_ids=list(rows), trigger=trigger.value, actor="sla-watch", now=now,
                             note=f"{kind} deadline passed")
        report.refused += len(result.refused)
        for ids in result.moved.values():
            for claim_id in ids:
                r = rows[claim_id]
                report.escalated.append(Breach(claim_id, r.number, kind, r.due.isoformat(), r.flow_run_id, r.organizer_email, r.event_title, r.reason))
    get_run_logger().info("sla-watch: %s", report)
    return report


def overdue_working_days(due: date, today: date) -> int:
    """Working days past a deadline: those after the due day up to today. The due day itself is in
    time (0), and so is a weekend right after it."""
    return sum(1 for n in range(1, (today - due).days + 1) if is_working_day(due + timedelta(days=n)))


def _venue_zones(claim_ids: list[int]) -> dict[int, str]:
    if not claim_ids:
        return {}
    with get_engine().connect() as conn:
        return dict(conn.execute(
            select(claim_t.c.id, venue_t.c.timezone)
            .join(event_t, event_t.c.id == claim_t.c.event_id)
            .join(venue_t, venue_t.c.id == event_t.c.venue_id)
            .where(id_in(conn, claim_t.c.id, claim_ids))
        ).all())


@task(name="notify-escalations", retries=3, retry_delay_seconds=5)
def notify_escalations(report: SlaReport, now: datetime) -> int:
    """«Просрочен срок» to the organizer and the operator's supervisor, via the outbox (dedup per claim and step).

    The notice says how many working days the deadline is past, counted in the venue's time zone.
    """
    supervisor = get_settings().supervisor_email
    zones = _venue_zones([b.claim_id for b in report.escalated])
    queued = 0
    with Session(get_engine()) as session:
        for b in report.escalated:
            due = date.fromisoformat(b.due)
            today = now.astimezone(ZoneInfo(zones.get(b.claim_id, "Europe/Moscow"))).date()
            payload = {"claim_number": b.number, "event_title": b.event_title, "deadline": b.due, "kind": b.kind,
                       "overdue_working_days": overdue_working_days(due, today), "reason": b.reason}
            for who, recipient in (("organizer", b.organizer_email), ("supervisor", supervisor)):
                queued += enqueue_email(
                    session,
                    dedup_key=f"claim:{b.claim_id}:escalation:{b.kind}:{who}",
                    claim_id=b.claim_id,
                    template="escalation_notice",
                    recipient=recipient,
                    payload=payload,
                    now=now,
                )
        session.commit()
    return queued


@task(name="emit-escalation-events")
def emit_escalation_events(report: SlaReport, now: datetime) -> int:
    """One `vozvrat.claim.escalated` event per claim, related to the claim's flow run, for the UI and automations."""
    for b in report.escalated:
        related = [{"prefect.resource.id": f"prefect.flow-run.{b.flow_run_id}", "prefect.resource.role": "flow-run"}] if b.flow_run_id else []
        emit_event(
            event="vozvrat.claim.escalated",
            resource={"prefect.resource.id": f"vozvrat.claim.{b.claim_id}", "prefect.resource.name": b.number},
            related=related,
            occurred=now,
            payload={"kind": b.kind, "due": b.due, "reason": b.reason},
        )
    return len(report.escalated)


@task(name="show-escalations-on-runs", retries=3, retry_delay_seconds=5)
def show_escalations_on_runs(report: SlaReport, now: datetime) -> int:
    """Each escalated decision's run gets the `escalated` tag now, and is asked to re-read its claim
    (the run starter resumes it with `recheck`), so it waits again under the name «Эскалация: ждёт
    организатора» with its card updated. Without this only the starter's sweep would notice, and
    never for an escalation stamped with a clock ahead of the wall clock (the claim is not yet quiet).
    Due at once on the wall clock, whatever `now` the watch was run for."""
    decisions = [b for b in report.escalated if b.kind == "decision"]
    if decisions:
        step = ClaimInput(decision="recheck", decided_by="sla-watch", at=now).model_dump(mode="json")
        with get_engine().begin() as conn:
            queue_resume(conn, claim_ids=[b.claim_id for b in decisions], step=step, now=datetime.now(UTC))
    tagged = tag_escalated_runs([b.flow_run_id for b in report.escalated if b.flow_run_id])
    get_run_logger().info("sla-watch: %s escalated runs tagged, %s asked to re-read their claim", tagged, len(decisions))
    return tagged


def breaches_markdown(rows, *, now: datetime, prefect_ui_url: str, api_url: str) -> str:
    """The `sla-breaches` artifact (pure): one line per open breach with its organizer, and links to
    the claim's Prefect run and to the claim in the organizer API."""
    ui, api = prefect_ui_url.rstrip("/"), api_url.rstrip("/")
    lines = [f"# Просроченные заявки на {now:%d.%m.%Y %H:%M} UTC", "",
             f"Открытых нарушений: {len(rows)}" + (" (показаны первые 1000)" if len(rows) >= 1000 else ""), ""]
    if not rows:
        return "\n".join([*lines, "Нарушений нет."]) + "\n"
    lines += ["| заявка | организатор | событие | состояние | причина | срок | эскалация | run | API |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        due = r.decision_due if r.state == ClaimState.ESCALATED.value else (r.payout_due or r.decision_due)
        run = f"[run]({ui}/runs/flow-run/{r.flow_run_id})" if r.flow_run_id else "нет run"
        cells = [r.number, f"{r.organizer_name} (id {r.organizer_id})", f"{r.title} (id {r.event_id})", r.state, r.reason,
                 due.isoformat() if due else "", r.escalated_at.strftime("%Y-%m-%d %H:%M") if r.escalated_at else "", run,
                 f"[заявка]({api}/organizer/claims/{r.id})"]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


@task(name="publish-breaches")
def publish_breaches(now: datetime) -> int:
    """A markdown artifact of every open breach (escalated decisions, flagged payouts), newest view under one key."""
    with get_engine().connect() as conn:
        rows = conn.execute(
            select(claim_t.c.id, claim_t.c.number, claim_t.c.state, claim_t.c.reason, claim_t.c.decision_due, claim_t.c.payout_due,
                   claim_t.c.escalated_at, claim_t.c.flow_run_id, event_t.c.id.label("event_id"), event_t.c.title,
                   organizer_t.c.id.label("organizer_id"), organizer_t.c.name.label("organizer_name"))
            .join(event_t, event_t.c.id == claim_t.c.event_id)
            .join(organizer_t, organizer_t.c.id == event_t.c.organizer_id)
            .where(or_(claim_t.c.state == ClaimState.ESCALATED.value,
                       and_(claim_t.c.state.in_([s.value for s in PAYOUT_STATES]), claim_t.c.escalated_at.is_not(None))))
            .order_by(claim_t.c.escalated_at)
            .limit(1000)
        ).all()
    settings = get_settings()
    create_markdown_artifact(markdown=breaches_markdown(rows, now=now, prefect_ui_url=settings.prefect_ui_url,
                                                        api_url=f"http://{settings.api_host}:{settings.api_port}"),
                             key="sla-breaches", description=f"Open SLA breaches as of {now.isoformat()}: organizer, run and claim links")
    return len(rows)


# --- documents window: expire_documents ------------------------------------------------------------

@dataclass
class ExpiryReport:
    refused: list[int] = field(default_factory=list)  # claims refused for want of documents
    still_open: int = 0  # candidates whose window is still open in their venue's time zone

    def __str__(self) -> str:
        return f"{len(self.refused)} refused for want of documents, {self.still_open} still within their window"


def _awaiting_documents_past_window(conn, now: datetime) -> list[int]:
    # However its last day is counted (states.policy), the window closes no earlier than 13 days after
    # the event starts: events older than that over-select, and the guard, in the venue's zone, decides.
    horizon = now - timedelta(days=13)
    return list(conn.execute(
        select(claim_t.c.id)
        .join(event_t, event_t.c.id == claim_t.c.event_id)
        .where(claim_t.c.state == ClaimState.AWAITING_DOCUMENTS.value, event_t.c.starts_at < horizon)
        .order_by(claim_t.c.id)
    ).scalars())


def expire_documents(engine: Engine, *, now: datetime) -> ExpiryReport:
    """Decree 1491: documents may follow within 14 days of the event; a claim still awaiting them when
    the window has closed is refused (DOCUMENTS_LATE), and «decision_rejected» with the reason is
    queued with the step. One batch through the machine (`apply_batch`), audited as sla-watch."""
    with engine.connect() as conn:
        ids = _awaiting_documents_past_window(conn, now)
    if not ids:
        return ExpiryReport()
    result = apply_batch(engine, claim_ids=ids, trigger=Trigger.EXPIRE_DOCUMENTS.value, actor="sla-watch", now=now,
                         note="documents window closed")
    return ExpiryReport(refused=sorted(i for moved in result.moved.values() for i in moved), still_open=len(result.refused))


def end_expired_runs(engine: Engine, report: ExpiryReport, *, now: datetime,
                     resume: Callable[[Engine, int, ClaimInput], bool] = request_run_resume) -> int:
    """Each refused claim's run waits for documents: ask it to go on (it reads the refusal and ends)."""
    run_input = ClaimInput(decision="expire_documents", decided_by="sla-watch", at=now)
    return sum(resume(engine, claim_id, run_input) for claim_id in report.refused)


@task(name="expire-overdue-documents", retries=2, retry_delay_seconds=5)
def expire_overdue_documents(now: datetime) -> ExpiryReport:
    """Refuse the claims whose documents window closed without documents (see `expire_documents`)."""
    report = expire_documents(get_engine(), now=now)
    get_run_logger().info("sla-watch: %s", report)
    return report


@task(name="resume-expired-claim-runs", retries=3, retry_delay_seconds=5)
def resume_expired_claim_runs(report: ExpiryReport, now: datetime) -> int:
    """Resume the suspended run of every claim just refused for want of documents, so none waits forever."""
    resumed = end_expired_runs(get_engine(), report, now=now)
    get_run_logger().info("sla-watch: %s of %s expired claims' runs resumed", resumed, len(report.refused))
    return resumed


# --- Decree 442: the 14-day publication and the 180-day refund deadlines (states/regimes.py) --------

@dataclass
class RegimeAlertReport:
    publication: list[dict] = field(default_factory=list)  # {event_id, title, deadline, alert, days}
    refunds: list[dict] = field(default_factory=list)  # {claim_id, number, deadline, alert, days}
    queued: int = 0

    def __str__(self) -> str:
        return f"{len(self.publication)} publication and {len(self.refunds)} refund deadline alerts, {self.queued} notices queued"


def _events_to_publish(conn, now: datetime):
    """Events whose date fell in an ended regime of their region and whose fate is not published yet
    (still scheduled, or postponed without a new date), while their notice period runs or just ran out.
    Regimes whose publication day is more than REFUND_DAYS behind are not looked at any more."""
    oldest = (now - timedelta(days=PUBLICATION_DAYS + REFUND_DAYS)).date()
    regimes = conn.execute(select(regime_t).where(regime_t.c.ends_on.is_not(None), regime_t.c.ends_on >= oldest)).all()
    for regime in regimes:
        first = datetime.combine(regime.starts_on, datetime.min.time(), tzinfo=UTC) - timedelta(days=1)
        last = datetime.combine(regime.ends_on, datetime.min.time(), tzinfo=UTC) + timedelta(days=2)
        dated = func.coalesce(event_t.c.original_starts_at, event_t.c.starts_at)
        rows = conn.execute(
            select(event_t.c.id, event_t.c.title, dated.label("original"), venue_t.c.timezone, organizer_t.c.email, organizer_t.c.name)
            .join(venue_t, venue_t.c.id == event_t.c.venue_id).join(organizer_t, organizer_t.c.id == event_t.c.organizer_id)
            .where(venue_t.c.region == regime.region, dated >= first, dated < last,
                   or_(event_t.c.status == "scheduled", and_(event_t.c.status == "postponed", event_t.c.new_starts_at.is_(None))))
            .order_by(event_t.c.id)
        ).all()
        for r in rows:
            zone = ZoneInfo(r.timezone)
            if RegimeSpan(regime.id, regime.region, regime.starts_on, regime.ends_on).in_force_on(r.original.astimezone(zone).date()):
                yield regime, r, zone


def regime_deadline_alerts(engine: Engine, *, now: datetime, ops_email: str) -> RegimeAlertReport:
    """Warn the organizer and ops before a Decree 442 deadline passes, and escalate after (each level once):
    the 14-day publication of a cancellation or postponement after the regime's end (warnings 7 and 1
    days before), and each claim's 180-day refund (warnings 30 and 7 days before)."""
    report = RegimeAlertReport()
    with Session(engine) as session:
        conn = session.connection()
        notices: list[tuple[str, str, str, dict]] = []  # (dedup key, recipient, who, payload)
        for regime, ev, zone in _events_to_publish(conn, now):
            due = publication_last_day(regime.ends_on)
            alert = deadline_alert(due, now.astimezone(zone).date(), warning_days=PUBLICATION_WARNING_DAYS)
            if alert is None:
                continue
            level, days = alert
            report.publication.append({"event_id": ev.id, "title": ev.title, "deadline": due.isoformat(), "alert": level.value, "days": days})
            payload = {"claim_number": f"мероприятие № {ev.id}", "event_title": ev.title, "event_date": ev.original.astimezone(zone).date().isoformat(),
                       "deadline": due.isoformat(), "kind": "publication", "alert": level.value, "days": days, "organizer_name": ev.name,
                       "rule_ru": f"{DECREE_442_RU}: организатор публикует отмену или перенос мероприятия в течение 14 дней после окончания "
                                  f"режима повышенной готовности (режим в регионе {regime.region} окончен {regime.ends_on:%d.%m.%Y})"}
            mark = level.value if level == Alert.OVERDUE else f"{level.value}:{days}"
            key = f"regime:{regime.id}:event:{ev.id}:publication:{mark}"
            notices += [(f"{key}:organizer", ev.email, "organizer", payload), (f"{key}:ops", ops_email, "ops", payload)]
        rows = conn.execute(
            select(claim_t.c.id, claim_t.c.number, claim_t.c.regime_refund_due, event_t.c.title, venue_t.c.timezone, organizer_t.c.email,
                   organizer_t.c.name)
            .join(event_t, event_t.c.id == claim_t.c.event_id).join(venue_t, venue_t.c.id == event_t.c.venue_id)
            .join(organizer_t, organizer_t.c.id == event_t.c.organizer_id)
            .where(claim_t.c.state.in_([s.value for s in PAYOUT_STATES]), claim_t.c.regime_refund_due.is_not(None),
                   claim_t.c.regime_refund_due <= (now + timedelta(days=max(REFUND_WARNING_DAYS) + 1)).date())
            .order_by(claim_t.c.id)
        ).all()
        for r in rows:
            alert = deadline_alert(r.regime_refund_due, now.astimezone(ZoneInfo(r.timezone)).date(), warning_days=REFUND_WARNING_DAYS)
            if alert is None:
                continue
            level, days = alert
            report.refunds.append({"claim_id": r.id, "number": r.number, "deadline": r.regime_refund_due.isoformat(), "alert": level.value, "days": days})
            payload = {"claim_number": r.number, "event_title": r.title, "deadline": r.regime_refund_due.isoformat(), "kind": "refund",
                       "alert": level.value, "days": days, "organizer_name": r.name,
                       "rule_ru": f"{DECREE_442_RU}: деньги за отменённое мероприятие возвращаются в течение 180 дней после окончания "
                                  "режима повышенной готовности"}
            mark = level.value if level == Alert.OVERDUE else f"{level.value}:{days}"
            key = f"claim:{r.id}:regime_refund:{mark}"
            notices += [(f"{key}:organizer", r.email, "organizer", payload), (f"{key}:ops", ops_email, "ops", payload)]
        for dedup_key, recipient, who, payload in notices:
            claim_id = int(dedup_key.split(":")[1]) if dedup_key.startswith("claim:") else None
            report.queued += enqueue_email(session, dedup_key=dedup_key, claim_id=claim_id, template="regime_deadline_notice",
                                           recipient=recipient, payload=payload | {"who": who}, now=now)
        session.commit()
    return report


@task(name="warn-regime-deadlines", retries=2, retry_delay_seconds=5)
def warn_regime_deadlines(now: datetime) -> RegimeAlertReport:
    """sla-watch: Decree 442 publication and refund deadlines (see `regime_deadline_alerts`)."""
    report = regime_deadline_alerts(get_engine(), now=now, ops_email=get_settings().supervisor_email)
    get_run_logger().info("sla-watch: %s", report)
    return report
