"""`vozvrat quote` and `vozvrat deadline`: answer "how much will I get back?" and "by when?".

Thin shell over states.policy and states.calendar: parse, validate (one-line errors, exit 2),
call the pure function, print. Time zones:
  * --event-start is the venue's local wall-clock time, read in --tz. If it carries an offset
    anyway, it is accepted and converted to --tz (the venue zone still decides the dates).
  * --filed-at must carry its own offset (or Z); a naive one is refused, because "12:00" means
    different days in Kaliningrad and Vladivostok.
"""
from __future__ import annotations

import json
from datetime import date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer
from rich.console import Console
from rich.table import Table

from cli.app import app
from cli.errors import fail
from states.calendar import CalendarError, add_working_days
from states.money import MoneyError, format_rub, parse_rub
from states.policy import (
    LEGAL_POLICY,
    OrganizerPolicy,
    PolicyError,
    Reason,
    TicketPrice,
    quote_refund,
)

_REASON_RU = {
    Reason.VOLUNTARY: "по собственной инициативе",
    Reason.ILLNESS: "болезнь",
    Reason.DEATH: "смерть близкого родственника",
    Reason.OTHER: "прочее",
    Reason.CANCELLED: "мероприятие отменено",
    Reason.POSTPONED: "мероприятие перенесено",
    Reason.REPLACED: "мероприятие заменено",
}


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        fail(f"unknown time zone {name!r} (expected an IANA name such as Europe/Moscow)")


def _datetime(text: str, option: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        fail(f"{option}: malformed date-time {text!r} (expected e.g. 2026-12-20T19:00)")


def _money(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    try:
        return parse_rub(text)
    except MoneyError as exc:
        fail(f"{option}: {exc}")


def _reason(text: str) -> Reason:
    try:
        return Reason(text.strip().lower())
    except ValueError:
        fail(f"unknown reason {text!r} (one of {', '.join(r.value for r in Reason)})")


@app.command()
def quote(
    event_start: str = typer.Option(..., "--event-start",
                                    help="Event start, local time at the venue: 2026-12-20T19:00"),
    tz: str = typer.Option("Europe/Moscow", "--tz", help="Venue time zone (IANA name)"),
    filed_at: str = typer.Option(..., "--filed-at",
                                 help="When the claim is filed, with offset: 2026-12-08T12:00+03:00"),
    reason: str = typer.Option("voluntary", "--reason",
                               help="voluntary, illness, death, other, cancelled, postponed, replaced"),
    price: str = typer.Option(..., "--price", help="Price paid, rubles: 3500.00"),
    nominal: str | None = typer.Option(None, "--nominal", help="Face value, rubles"),
    service_fee: str | None = typer.Option(None, "--service-fee", help="Service fee, rubles"),
    delivery_fee: str | None = typer.Option(None, "--delivery-fee", help="Delivery, rubles"),
    promo: bool = typer.Option(False, "--promo", help="Ticket bought in a promotion"),
    refuse_promo: bool = typer.Option(False, "--refuse-promo",
                                      help="Organizer refuses voluntary refunds of promo tickets"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object"),
) -> None:
    """How much a buyer gets back (Art. 52.1, Decree 1491), with the rule that decides it."""
    parsed_reason = _reason(reason)
    zone = _zone(tz)
    start = _datetime(event_start, "--event-start")
    try:
        start = start.replace(tzinfo=zone) if start.tzinfo is None else start.astimezone(zone)
    except OverflowError:
        fail(f"--event-start: {event_start!r} in {tz} falls outside the calendar")
    filed = _datetime(filed_at, "--filed-at")
    if filed.tzinfo is None:
        fail(f"--filed-at must carry a UTC offset, e.g. {filed_at}+03:00")
    ticket_kwargs = {
        "price_paid": _money(price, "--price"),
        "nominal": _money(nominal, "--nominal"),
        "service_fee": _money(service_fee, "--service-fee") or 0,
        "delivery_fee": _money(delivery_fee, "--delivery-fee") or 0,
        "promo": promo,
    }
    try:
        policy = OrganizerPolicy(refuse_promo=True) if refuse_promo else LEGAL_POLICY
        result = quote_refund(reason=parsed_reason, event_start=start, filed_at=filed,
                              ticket=TicketPrice(**ticket_kwargs), policy=policy)
    except PolicyError as exc:
        fail(str(exc))
    except OverflowError:  # the policy turns the known edges into PolicyError; this is the last net
        fail("a date falls outside the calendar (year 1 to 9999)")

    if as_json:
        typer.echo(json.dumps(result.to_json(), ensure_ascii=False))
        return
    _print_quote(result, start)


def _print_quote(result, start: datetime) -> None:
    console = Console()
    table = Table(show_header=False, box=None)
    table.add_row("Причина / reason", f"{_REASON_RU[result.reason]} ({result.reason})")
    table.add_row("Мероприятие / event", start.isoformat())
    if result.days_before is not None:
        table.add_row("Дней до мероприятия / d", str(result.days_before))
    table.add_row("База / base", f"{format_rub(result.base)} ₽")
    table.add_row("Процент / percent", f"{result.percent} %")
    if result.service_fee_refund:
        table.add_row("Сервисный сбор / service fee", f"{format_rub(result.service_fee_refund)} ₽")
    if result.delivery_refund:
        table.add_row("Доставка / delivery", f"{format_rub(result.delivery_refund)} ₽")
    table.add_row("[bold]К возврату / refund[/bold]", f"[bold]{format_rub(result.amount)} ₽[/bold]")
    table.add_row("Правило / rule", result.rule)
    table.add_row("Источник / source", result.source)
    if result.decided_by_organizer:
        table.add_row("", "Решение принимает организатор / the organizer decides")
        table.add_row("Срок решения / deadline", result.deadline_rule)
    if not result.eligible:
        table.add_row("[red]Отказ / refused[/red]",
                      f"{result.refusal_code}: {result.refusal_message_ru}")
    console.print(table)


@app.command()
def deadline(
    from_: str = typer.Option(..., "--from", help="Start date (not counted): 2024-12-26"),
    working_days: str = typer.Option(..., "--working-days", help="Working days to add (>= 1)"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object"),
) -> None:
    """The n-th Russian working day after a date (production calendar, holidays.RU)."""
    try:
        start = date.fromisoformat(from_)
    except ValueError:
        fail(f"--from: malformed date {from_!r} (expected e.g. 2024-12-26)")
    try:
        days = int(working_days)
    except ValueError:
        fail(f"--working-days must be a whole number, got {working_days!r}")
    if days < 1:
        fail(f"--working-days must be at least 1, got {days}")
    try:
        result = add_working_days(start, days)
    except CalendarError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(result.to_json()))
        return
    note = " (предварительно: календарь года ещё не опубликован / provisional)" if result.provisional else ""
    Console().print(f"{days} рабочих дней после {start.isoformat()}: [bold]{result.due.isoformat()}[/bold]{note}")
