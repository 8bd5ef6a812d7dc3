"""Render outbound email: pure, no I/O, no clock (STYLE 4 "Render apart from send").

Security, learned from the seed (RedKassa's own system sent every customer a fake invitation):
outbound messages come only from the templates listed in ``TEMPLATES``; free text that reaches a
message (organizer's reasons, names, event titles) is escaped in HTML and has links removed, so a
message can never carry a link to an external domain; every message ends with an anti-phishing
footer.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email import policy as email_policy
from email.headerregistry import HeaderRegistry
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr
from pathlib import Path
from typing import Any

import jinja2

from states.money import format_rub
from states.policy import DOCUMENTED_REASONS, LEGAL_VOLUNTARY_PERCENTS, ORGANIZER_DECIDES

TEMPLATE_DIR = Path(__file__).parent / "templates" / "email"

#: Required context keys per template (the caller fills them; a missing one raises MissingContext).
#: Optional keys are listed in ``OPTIONAL_CONTEXT``. Money is integer kopecks, dates are
#: ``date``/``datetime`` objects or ISO strings (what comes back from a JSON payload).
TEMPLATE_CONTEXT: Mapping[str, frozenset[str]] = {
    "claim_received": frozenset({"claim_number", "event_title", "reason"}),
    "documents_needed": frozenset({"claim_number", "event_title", "event_date", "documents_deadline"}),
    "decision_approved": frozenset({"claim_number", "event_title", "refund_kopecks", "payout_deadline"}),
    "decision_rejected": frozenset({"claim_number", "event_title", "rejection_reason"}),
    "refund_sent": frozenset({"claim_number", "event_title", "refund_kopecks", "channel"}),
    "bank_details_needed": frozenset({"claim_number", "event_title"}),
    "review_extended": frozenset({"claim_number", "event_title", "new_deadline", "extension_reason"}),
    "escalation_notice": frozenset({"claim_number", "event_title", "deadline", "overdue_working_days"}),
    "claim_withdrawn": frozenset({"claim_number", "event_title"}),
    "claim_closed": frozenset({"claim_number", "event_title", "rejection_reason"}),
    # claims by email (tasks/inbound_mail.py): the confirmation to the order's email, the reply when nothing was filed
    "inbound_confirm": frozenset({"letter_ref", "order_number", "event_title", "tickets", "reason", "files", "code", "confirm_url", "expires_at"}),
    "inbound_refused": frozenset({"letter_ref", "outcome", "refunds_address"}),
    # Decree 442 and postponements (issue 13): `claim_number` is the order's number for an event notice.
    "event_postponed": frozenset({"claim_number", "order_number", "event_title", "original_date", "rule_ru"}),
    "voucher_issued": frozenset({"claim_number", "event_title", "voucher_number", "value_kopecks", "valid_until"}),
    "voucher_redeemed": frozenset({"claim_number", "voucher_number", "value_kopecks", "event_title"}),
    "voucher_expired": frozenset({"claim_number", "event_title", "voucher_number", "refund_kopecks"}),
    "regime_deadline_notice": frozenset({"claim_number", "event_title", "deadline", "kind", "alert", "days", "rule_ru"}),
    # a buyer's sign-in code (tasks/buyer_auth.py): for an order, not a claim
    "buyer_code": frozenset({"order_number", "code", "valid_minutes"}),
}
OPTIONAL_CONTEXT: Mapping[str, frozenset[str]] = {
    # What the buyer is told depends on who decides (ORGANIZER_DECIDES): a voluntary or event claim
    # gets the amount and its basis; an illness, death or «Прочее» claim gets what happens next and
    # by when, never an amount or a payout date before the organizer decides.
    "claim_received": frozenset({"buyer_name", "event_date", "refund_percent", "refund_kopecks", "days_before", "basis",
                                 "decision_working_days", "decision_deadline", "documents_deadline", "documents_received"}),
    "documents_needed": frozenset({"buyer_name"}),
    # an organizer is named only when one decided (illness, death, «Прочее»); no reason: as before
    # event_change_note: why the event was cancelled or replaced (models.claim_store; shown for those reasons only)
    "decision_approved": frozenset({"buyer_name", "reason", "event_change_note"}),
    # the fallback offer is shown only when both are present
    "decision_rejected": frozenset({"buyer_name", "fallback_percent", "fallback_kopecks", "decided_by", "refusal_code"}),
    # "includes": the held "approved" letter this one replaced (states.lifecycle.SUPERSEDES), said here too
    "refund_sent": frozenset({"buyer_name", "account_masked", "includes", "reason", "event_change_note"}),
    "bank_details_needed": frozenset({"buyer_name", "refund_kopecks", "includes", "reason", "payout_deadline", "regime_refund_due",
                                      "event_change_note"}),
    "review_extended": frozenset({"buyer_name"}),
    "escalation_notice": frozenset({"event_date", "organizer_name", "reason", "kind"}),
    # a withdrawn illness, death or «Прочее» claim may be followed only by a voluntary one (FALLBACK_ONLY)
    "claim_withdrawn": frozenset({"buyer_name", "reason"}),
    # the sales feed reported the ticket refunded elsewhere (states.lifecycle.REFUNDED_ELSEWHERE)
    "claim_closed": frozenset({"buyer_name"}),
    "inbound_confirm": frozenset({"buyer_name", "why", "code_url"}),
    "inbound_refused": frozenset({"buyer_name", "max_mb", "refused_files", "open_claims"}),
    "event_postponed": frozenset({"buyer_name", "previous_date", "new_date", "new_time", "claims_until", "refunds_accepted",
                                  "vouchers_offered", "treated_as_cancelled", "refund_due", "tickets"}),
    "voucher_issued": frozenset({"buyer_name", "rule_ru"}),
    "voucher_redeemed": frozenset({"buyer_name"}),
    "voucher_expired": frozenset({"buyer_name", "payout_deadline", "rule_ru"}),
    "regime_deadline_notice": frozenset({"event_date", "organizer_name", "who"}),
    "buyer_code": frozenset({"buyer_name"}),
}
TEMPLATES: frozenset[str] = frozenset(TEMPLATE_CONTEXT)
#: The emails a buyer gets about a claim: each carries `status_url`, the signed link to the claim's
#: «Где мои деньги» page (put in by the outbox when it sends, tasks/buyer_links.py).
# Not about one of the buyer's claims: to the organizer or the supervisor, a sign-in code, replies to
# letters, and a postponement notice (its `claim_number` is the order's number).
BUYER_CLAIM_TEMPLATES: frozenset[str] = TEMPLATES - {"escalation_notice", "buyer_code", "inbound_confirm", "inbound_refused",
                                                     "event_postponed", "regime_deadline_notice"}
OPTIONAL_CONTEXT = {name: keys | {"status_url"} if name in BUYER_CLAIM_TEMPLATES else keys for name, keys in OPTIONAL_CONTEXT.items()}

REASON_LABELS: Mapping[str, str] = {
    "voluntary": "По собственной инициативе",
    "illness": "Болезнь",
    "death": "Смерть близкого родственника",
    "other": "Прочее",
    "cancelled": "Отмена мероприятия",
    "replaced": "Замена мероприятия",
    "postponed": "Перенос мероприятия",
}
CHANNEL_LABELS: Mapping[str, str] = {
    "card": "на банковскую карту, с которой был оплачен заказ",
    "bank_transfer": "банковским переводом по реквизитам, которые вы указали",
}
_MONTHS_GENITIVE = (
    "января", "февраля", "марта", "апреля", "мая", "июня",
    "июля", "августа", "сентября", "октября", "ноября", "декабря",
)


class UnknownTemplate(ValueError):
    """Outbound messages come only from templates; this name is not one of them."""


class MissingContext(ValueError):
    """A required context key for the template was not given."""


# --- display filters -------------------------------------------------------------------------

def _group_ru(amount: str) -> str:
    """'1750.00' -> '1 750,00' (Russian: space between thousands, decimal comma)."""
    sign = "-" if amount.startswith("-") else ""
    whole, _, frac = amount.lstrip("-").partition(".")
    groups = []
    while len(whole) > 3:
        groups.insert(0, whole[-3:])
        whole = whole[:-3]
    groups.insert(0, whole)
    return f"{sign}{' '.join(groups)},{(frac or '00'):0<2}"


def rub(kopecks: int) -> str:
    """Integer kopecks -> '1 750,00 ₽' for buyer-facing text."""
    if isinstance(kopecks, bool) or not isinstance(kopecks, int):
        raise TypeError(f"money is integer kopecks, got {kopecks!r}")
    return f"{_group_ru(format_rub(kopecks))} ₽"


def _as_date(value: date | datetime | str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value)
    try:
        return datetime.fromisoformat(text).date()
    except ValueError:
        return date.fromisoformat(text[:10])


def ru_date(value: date | datetime | str) -> str:
    """'2026-11-25' -> '25 ноября 2026 г.'"""
    d = _as_date(value)
    return f"{d.day} {_MONTHS_GENITIVE[d.month - 1]} {d.year} г."


def days_ru(n: int) -> str:
    """7 -> '7 дней', 1 -> '1 день', 3 -> '3 дня'."""
    n = int(n)
    if n % 10 == 1 and n % 100 != 11:
        word = "день"
    elif 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
        word = "дня"
    else:
        word = "дней"
    return f"{n} {word}"


def working_days_ru(n: int) -> str:
    """1 -> '1 рабочий день', 3 -> '3 рабочих дня', 10 -> '10 рабочих дней'."""
    n = int(n)
    if n % 10 == 1 and n % 100 != 11:
        return f"{n} рабочий день"
    if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
        return f"{n} рабочих дня"
    return f"{n} рабочих дней"


def reason_ru(code: str) -> str:
    return REASON_LABELS.get(str(code), str(code))


def channel_ru(code: str) -> str:
    return CHANNEL_LABELS.get(str(code), str(code))


ART_52_1_RU = "ст. 52.1 Основ законодательства РФ о культуре"
DECREE_1491_RU = "постановление Правительства РФ от 18.09.2020 № 1491"
_EVENT_CHANGES_RU = {"cancelled": "отмене", "replaced": "замене", "postponed": "переносе"}
_DOCUMENTED_RU = {"illness": "болезни покупателя", "death": "смерти члена семьи или близкого родственника"}


def _voluntary_span_ru(d: int) -> str:
    """Art. 52.1 tiers as the law words them: «не позднее чем за 10 дней», «менее чем за 10, но ...»."""
    higher: int | None = None
    for min_days, percent in LEGAL_VOLUNTARY_PERCENTS:  # highest first
        if d >= min_days:
            share = f"{percent} %" if higher is None else f"не менее {percent} %"
            if higher is None:
                return f"при обращении не позднее чем за {days_ru(min_days)} — {share}"
            return f"при обращении менее чем за {higher}, но не позднее чем за {days_ru(min_days)} — {share}"
        higher = min_days
    return f"при обращении менее чем за {days_ru(higher or 0)} организатор вправе не возвращать деньги"


def _legal_percent(d: int) -> int:
    return next((percent for min_days, percent in LEGAL_VOLUNTARY_PERCENTS if d >= min_days), 0)


def basis_ru(quote: Mapping[str, Any]) -> str:
    """The «Основание» line: the rule a quote applies, in Russian prose (never the formula text).

    Art. 52.1 for voluntary refunds and for cancelled / replaced / postponed events, Decree 1491 for
    illness and death, the operator's rules for «Прочее» and promo tickets.
    """
    reason = str(quote.get("reason", ""))
    if quote.get("rule_ru"):  # Decree 442 names its own rule (states/regimes.py)
        return str(quote["rule_ru"])
    if reason == "voluntary":
        if quote.get("refusal_code") == "PROMO_REFUSED":
            return "правила организатора: билеты, купленные по акции, не возвращаются по собственной инициативе"
        d = int(quote.get("days_before") or 0)
        if str(quote.get("source", "")).startswith("organizer policy") and int(quote.get("percent") or 0) > 0:
            return (f"условия организатора: при обращении за {days_ru(d)} до мероприятия — {quote['percent']} % "
                    f"({ART_52_1_RU} требует не менее {_legal_percent(d)} %)")
        return f"{ART_52_1_RU}: {_voluntary_span_ru(d)}"
    if reason in _EVENT_CHANGES_RU:
        return f"{ART_52_1_RU}: при {_EVENT_CHANGES_RU[reason]} мероприятия — 100 % стоимости билета"
    if reason in _DOCUMENTED_RU:
        return (f"{DECREE_1491_RU}: при {_DOCUMENTED_RU[reason]}, подтверждённой документами, и заявке, поданной "
                "до начала мероприятия, решение о возврате принимает организатор")
    if reason == "other":
        return "правила билетного оператора: по причине «Прочее» решение о возврате принимает организатор"
    return ""


def organizer_decides(reason: Any) -> bool:
    """Illness, death and «Прочее»: the organizer decides, so nothing is promised before that."""
    return str(reason) in {r.value for r in ORGANIZER_DECIDES}


def documented(reason: Any) -> bool:
    return str(reason) in {r.value for r in DOCUMENTED_REASONS}


_LINK_RE = re.compile(r"(?i)\b(?:[a-z][a-z0-9+.-]*://|www\.)\S+")


def nolinks(text: Any) -> str:
    """Remove links from free text (no message may point to an external domain)."""
    text = str(text)
    if "://" not in text and "www." not in text.lower():  # what every link _LINK_RE removes contains: most text has none
        return text
    return _LINK_RE.sub("[ссылка удалена]", text)


# --- rendering -------------------------------------------------------------------------------

def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,  # compiled once per process: no stat() of three template files for every message
    )
    env.filters.update(rub=rub, ru_date=ru_date, days_ru=days_ru, working_days_ru=working_days_ru, reason_ru=reason_ru,
                       channel_ru=channel_ru, nolinks=nolinks)
    env.tests.update(organizer_decides=organizer_decides, documented=documented)
    return env


_ENV = _environment()


class _HeaderClasses(HeaderRegistry):
    """The stdlib registry builds a new class for every header it parses; build each kind once
    (a dispatcher renders thousands of messages in a row)."""

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[str, type] = {}

    def __getitem__(self, name: str) -> type:
        key = name.lower()
        made = self._made.get(key)
        if made is None:
            made = self._made[key] = super().__getitem__(name)
        return made


POLICY = email_policy.default.clone(header_factory=_HeaderClasses())


def message_id_for(key: str, mail_from: str) -> str:
    """Deterministic Message-ID: the same outbox key gives the same id, so a resend is recognisable."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
    domain = _bare_address(mail_from).rpartition("@")[2] or "vozvrat.local"
    return f"<{digest}.vozvrat@{domain}>"


def render_parts(template: str, context: Mapping[str, Any]) -> tuple[str, str, str]:
    """(subject, text, html) for a template and its context."""
    if template not in TEMPLATES:
        raise UnknownTemplate(f"no email template {template!r}; known: {sorted(TEMPLATES)}")
    missing = TEMPLATE_CONTEXT[template] - context.keys()
    if missing:
        raise MissingContext(f"template {template!r} needs {sorted(missing)}")
    ctx = {key: None for key in OPTIONAL_CONTEXT[template]} | dict(context)
    subject = _ENV.get_template(f"{template}.subject.j2").render(ctx)
    subject = " ".join(subject.split())  # one line: no header injection through the context
    text = _ENV.get_template(f"{template}.txt.j2").render(ctx)
    html = _ENV.get_template(f"{template}.html.j2").render(ctx)
    return subject, text, html


@dataclass(frozen=True)
class RenderedEmail:
    """A message ready for the wire: the envelope and the bytes (what the outbox dispatcher sends)."""

    mail_from: str  # envelope sender, the bare address
    to: str
    data: bytes
    message_id: str


def _when(now: datetime | None, context: Mapping[str, Any]) -> datetime:
    when = now if now is not None else context.get("now")
    if when is None:
        raise ValueError("render_email needs now= (or context['now']) for the Date header")
    if isinstance(when, str):
        when = datetime.fromisoformat(when)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when


def _headers(template: str, *, subject: str, to: str, mail_from: str, when: datetime, message_id: str,
             context: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The headers of every outbound message, in order: one list for both renderings."""
    return [
        ("Subject", subject),
        ("From", mail_from),
        ("To", to),
        ("Date", format_datetime(when)),
        ("Message-ID", message_id),
        ("Auto-Submitted", "auto-generated"),
        ("X-Vozvrat-Template", template),
    ] + [
        (header, " ".join(str(context[key]).split()))
        for header, key in (("X-Vozvrat-Claim", "claim_number"), ("X-Vozvrat-Order", "order_number")) if key in context
    ]


def render_email(
    template: str,
    *,
    to: str,
    context: Mapping[str, Any],
    mail_from: str,
    message_id_key: str,
    now: datetime | None = None,
    message_id: str | None = None,
) -> EmailMessage:
    """A multipart/alternative (text + HTML) UTF-8 message from a template, as an EmailMessage.

    The Date header comes from ``now`` or ``context["now"]``: time is an argument, never read here.
    ``message_id`` is the one stored on the outbox row; without it the id is derived from the key.
    """
    when = _when(now, context)
    subject, text, html = render_parts(template, context)
    message = EmailMessage(policy=POLICY)
    for name, value in _headers(template, subject=subject, to=to, mail_from=mail_from, when=when,
                                message_id=message_id or message_id_for(message_id_key, mail_from), context=context):
        message[name] = value
    message.set_content(text, subtype="plain", charset="utf-8", cte="base64")
    message.add_alternative(html, subtype="html", charset="utf-8", cte="base64")
    return message


_ADDRESS_HEADERS = frozenset({"From", "To"})
#: UTF-8 bytes per RFC 2047 encoded word: 39 bytes -> 52 base64 characters, a word of 64 with its
#: ``=?utf-8?b?...?=`` around it, so a folded line stays under 78 characters.
_WORD_BYTES = 39


def _encoded_words(value: str) -> str:
    """A non-ASCII header value as base64 UTF-8 encoded words, folded one word a line; a character is
    never split between two words (RFC 2047 5)."""
    data = value.encode("utf-8")
    words: list[bytes] = []
    start = 0
    while start < len(data):
        end = min(start + _WORD_BYTES, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # a continuation byte: the cut falls inside a character
            end -= 1
        words.append(data[start:end])
        start = end
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(w).decode('ascii')}?=" for w in words)


_BARE_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+")


def _address_header(name: str, value: str) -> str:
    """From and To: a bare address (a buyer's, on most messages) as it is, anything else parsed."""
    if _BARE_ADDRESS.fullmatch(value):
        return f"{name}: {value}"
    return _parsed_address_header(name, value)


@functools.lru_cache(maxsize=64)
def _parsed_address_header(name: str, value: str) -> str:
    display, address = parseaddr(value)
    if display and not display.isascii():
        return f"{name}: {_encoded_words(display)} <{address}>"
    return f"{name}: {formataddr((display, address))}"


def _bare_address(value: str) -> str:
    return value if _BARE_ADDRESS.fullmatch(value) else _parsed_address(value)


@functools.lru_cache(maxsize=64)
def _parsed_address(value: str) -> str:
    return parseaddr(value)[1]


def _wire_header(name: str, value: str) -> str:
    if name in _ADDRESS_HEADERS:
        return _address_header(name, value)
    if value.isascii():
        return f"{name}: {value}"
    return f"{name}: {_encoded_words(value)}"


_PART_HEAD = 'Content-Type: text/{subtype}; charset="utf-8"\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: base64\r\n\r\n'


def _base64_body(text: str) -> str:
    """base64 in lines of 76 characters, each ending CRLF (what base64.encodebytes gives, with CRLF), from one encoding."""
    encoded = base64.b64encode(text.encode("utf-8")).decode("ascii")
    return "".join(encoded[i : i + 76] + "\r\n" for i in range(0, len(encoded), 76))


def render_email_bytes(
    template: str,
    *,
    to: str,
    context: Mapping[str, Any],
    mail_from: str,
    message_id_key: str,
    now: datetime | None = None,
    message_id: str | None = None,
) -> RenderedEmail:
    """The same message as ``render_email`` (same headers, same parts), written straight to bytes:
    multipart/alternative, both parts UTF-8 base64, non-ASCII headers as RFC 2047 base64 words. No
    email.message objects and no generator: the dispatcher renders thousands in a row, and these
    took most of its time. A test holds the two renderings equal."""
    when = _when(now, context)
    subject, text, html = render_parts(template, context)
    mid = message_id or message_id_for(message_id_key, mail_from)
    # The boundary is fixed by the Message-ID (a resend is the same bytes); "=_" never occurs in base64 lines.
    boundary = f"=_vozvrat_{hashlib.sha256(mid.encode('utf-8')).hexdigest()[:24]}"
    lines = [f'Content-Type: multipart/alternative; boundary="{boundary}"', "MIME-Version: 1.0"]
    lines += [_wire_header(name, value) for name, value in _headers(template, subject=subject, to=to, mail_from=mail_from, when=when,
                                                                     message_id=mid, context=context)]
    data = "".join((
        "\r\n".join(lines), "\r\n\r\n",
        f"--{boundary}\r\n", _PART_HEAD.format(subtype="plain"), _base64_body(text),
        f"--{boundary}\r\n", _PART_HEAD.format(subtype="html"), _base64_body(html),
        f"--{boundary}--\r\n",
    )).encode("ascii")
    return RenderedEmail(mail_from=_bare_address(mail_from), to=_bare_address(to), data=data, message_id=mid)


__all__ = [
    "TEMPLATES", "TEMPLATE_CONTEXT", "BUYER_CLAIM_TEMPLATES", "OPTIONAL_CONTEXT", "UnknownTemplate", "MissingContext",
    "render_email", "render_email_bytes", "RenderedEmail", "render_parts", "message_id_for", "rub", "ru_date", "days_ru", "working_days_ru", "nolinks",
    "basis_ru", "organizer_decides",
]
