"""`/health`: which dependency is down, answered within a second whatever is down.

Database, Prefect, SMTP, the acquirer and the inbound mail server (claims by email) are checked concurrently, each with a short timeout; a check
that does not finish in time counts as down (a blocked database connect goes on in its thread and is
bounded by the engine's own connect timeout). The database is the only dependency the API cannot work
without: 503 when it is down, 200 otherwise (Prefect, SMTP, the acquirer and the inbound mail server being down delays
runs, emails, payouts and letters, it loses nothing: they are recorded and caught up).
"""
from __future__ import annotations

import asyncio
import time
from datetime import datetime
from functools import lru_cache
from typing import Literal
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, Field

from models.db import get_engine
from models.settings import get_settings
from tasks.mail_switch import SwitchState, mail_switch_state
from tasks.outbox import email_enabled_now

CHECK_TIMEOUT_S = 0.7

Status = Literal["up", "down", "not_configured"]

NAMES_RU = {"database": "база данных", "prefect": "Prefect", "smtp": "SMTP", "acquirer": "эквайер", "inbound_mail": "приём писем"}


class DependencyHealth(BaseModel):
    status: Status
    latency_ms: int | None = Field(default=None, description="Время ответа зависимости, мс.")
    error: str | None = Field(default=None, description="Почему зависимость считается недоступной.")


class MailSwitchHealth(BaseModel):
    held: bool
    reason: str | None = Field(default=None, description="Почему почта остановлена (или возобновлена).")
    changed_by: str | None = Field(default=None, description="Кто последним переключил (сотрудник).")
    changed_at: datetime | None = Field(default=None, description="Когда.")


class HealthReport(BaseModel):
    status: Literal["ok", "degraded", "unavailable"] = Field(
        description="ok: всё доступно; degraded: база доступна, недоступно что-то ещё; unavailable: база данных недоступна.")
    message: str = Field(description="Сводка на русском.")
    dependencies: dict[str, DependencyHealth]
    outbound_email: Literal["sending", "held"] = Field(
        description="held: выключатель исходящей почты включён (`vozvrat mail hold` или VOZVRAT_OUTBOUND_EMAIL_ENABLED=false), "
                    "письма ждут в очереди.")
    mail_switch: MailSwitchHealth | None = Field(
        default=None, description="Выключатель почты в базе данных (`vozvrat mail hold/release`); null, если базу прочитать не удалось.")


def _ping_database() -> None:
    # A raw DBAPI connection: no BEGIN IMMEDIATE on SQLite, so a long batch write does not make the
    # database look down.
    conn = get_engine().raw_connection()
    try:
        cursor = conn.cursor()
        cursor.execute("select 1")
        cursor.fetchone()
        cursor.close()
    finally:
        conn.close()


async def _database() -> None:
    await asyncio.to_thread(_ping_database)


@lru_cache(maxsize=1)
def _prefect_api_url() -> str | None:
    # Reading Prefect's settings builds them all (environment, profile file): once per process, not
    # inside a timed check where it would block the event loop.
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


_clients: dict[int, httpx.AsyncClient] = {}


def _http() -> httpx.AsyncClient:
    """One client per event loop: building one (its TLS context) per check costs more than the check."""
    loop = id(asyncio.get_running_loop())
    if loop not in _clients:
        _clients.clear()  # clients of a closed loop (tests start several) are of no use
        _clients[loop] = httpx.AsyncClient(timeout=CHECK_TIMEOUT_S)
    return _clients[loop]


async def _prefect() -> bool:
    url = _prefect_api_url()
    if not url:
        return False
    r = await _http().get(url.rstrip("/") + "/health")
    if r.status_code != 200:
        raise RuntimeError(f"HTTP {r.status_code}")
    return True


async def _smtp() -> None:
    settings = get_settings()
    await _smtp_greets(settings.smtp_host, settings.smtp_port)


async def _inbound_mail() -> None:
    """The inbound SMTP server for the refunds address (tasks/inbound_mail.py, `make up` starts it):
    down, letters with claims are refused by our MX and the senders' servers retry them for days."""
    settings = get_settings()
    await _smtp_greets(settings.inbound_smtp_host, settings.inbound_smtp_port)


async def _smtp_greets(host: str, port: int) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        greeting = await reader.readline()
        if not greeting.startswith(b"220"):
            raise RuntimeError("no SMTP greeting")
        writer.write(b"QUIT\r\n")
        await writer.drain()
    finally:
        writer.close()


async def _acquirer() -> None:
    # Any HTTP answer (YooKassa says 401 without credentials) means it is reachable; no secret is sent.
    url = get_settings().acquirer_api_url
    if not urlsplit(url).scheme:
        raise RuntimeError("invalid URL")
    await _http().get(url)


async def _timed(check) -> DependencyHealth:
    started = time.perf_counter()
    try:
        result = await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
    except TimeoutError:
        return DependencyHealth(status="down", error=f"нет ответа за {CHECK_TIMEOUT_S} с")
    except Exception as exc:  # noqa: BLE001 - any failure of a check means "down", said by its class
        return DependencyHealth(status="down", error=exc.__class__.__name__)
    if result is False:
        return DependencyHealth(status="not_configured")
    return DependencyHealth(status="up", latency_ms=round((time.perf_counter() - started) * 1000))


async def _mail_switch() -> SwitchState | None:
    try:
        return await asyncio.wait_for(asyncio.to_thread(mail_switch_state, get_engine()), CHECK_TIMEOUT_S)
    except Exception:  # noqa: BLE001 - the database's own check says why; the switch is then unknown
        return None


async def check_health() -> HealthReport:
    # What is ours to prepare is prepared before the clocks start: the timeouts measure dependencies.
    _prefect_api_url()
    _http()
    checks = {"database": _database, "prefect": _prefect, "smtp": _smtp, "acquirer": _acquirer, "inbound_mail": _inbound_mail}
    switch_read = asyncio.ensure_future(_mail_switch())
    results = await asyncio.gather(*(_timed(c) for c in checks.values()))
    switch = await switch_read
    deps = dict(zip(checks, results))
    down = [name for name, dep in deps.items() if dep.status == "down"]
    if deps["database"].status == "down":
        status = "unavailable"
    else:
        status = "degraded" if down else "ok"
    message = "Все зависимости доступны." if not down else "Недоступны: " + ", ".join(NAMES_RU[n] for n in down) + "."
    # The kill switch is no dependency, but an operator who forgot it sees «all up» while no mail leaves.
    env_sending = email_enabled_now()
    if not env_sending:
        message += " Исходящая почта остановлена (VOZVRAT_OUTBOUND_EMAIL_ENABLED=false): письма ждут в очереди."
    if switch is not None and switch.held:
        when = f" {switch.changed_at:%Y-%m-%d %H:%M} UTC" if switch.changed_at else ""
        message += (f" Исходящая почта остановлена выключателем (vozvrat mail hold): {switch.changed_by or 'неизвестно кем'}{when}"
                    f"{', причина: ' + switch.reason if switch.reason else ''}. Письма ждут в очереди.")
    sending = env_sending and not (switch is not None and switch.held)
    public = None if switch is None else MailSwitchHealth(held=switch.held, reason=switch.reason, changed_by=switch.changed_by,
                                                          changed_at=switch.changed_at)
    return HealthReport(status=status, message=message, dependencies=deps, outbound_email="sending" if sending else "held",
                        mail_switch=public)
