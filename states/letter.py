"""Reading a letter to the refunds address: which order it names, why the buyer wants the money back,
and whether it was written by a machine (no reply then). Pure: text in, decisions out.

The Kassy.ru and RedKassa process in the seed: «отправить электронное письмо ... с почтового ящика,
используемого плательщиком в момент оформления заказа», with scans and PDF tickets.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from states.policy import Reason

# An order number as operators print them: letters, digits and dashes, at least one digit
# (ORD-000123, 12345678, KS-2024-00017). Case is kept; lookups compare upper-cased.
_TOKEN = re.compile(r"(?<![\w-])([A-Za-zА-Яа-яЁё]{0,10}-?\d[\w-]{2,38})(?![\w-])")
# The words that introduce one: «заказ № 123», «номер заказа: ORD-1», «order #12»
_AFTER_KEYWORD = re.compile(
    r"(?i)(?:заказ\w*|order|№|#|номер)\s*(?:заказа\s*)?[:№#]?\s*№?\s*([A-Za-zА-Яа-яЁё]{0,10}-?\d[\w-]{2,38})(?![\w-])")
MAX_CANDIDATES = 20


def order_number_candidates(subject: str, text: str) -> list[str]:
    """Tokens that may be the order number, most likely first: those after «заказ»/«№»/«order» in the
    subject, then in the text, then any other token with a digit (subject first). At most 20, no repeats."""
    found: list[str] = []
    for source in (subject, text):
        found += [m.group(1) for m in _AFTER_KEYWORD.finditer(source or "")]
    for source in (subject, text):
        found += [m.group(1) for m in _TOKEN.finditer(source or "")]
    out: list[str] = []
    for token in found:
        token = token.strip("-_")
        if len(token) >= 3 and any(c.isdigit() for c in token) and token.upper() not in {t.upper() for t in out}:
            out.append(token)
    return out[:MAX_CANDIDATES]


def _words(*patterns: str) -> re.Pattern[str]:
    return re.compile(r"(?iu)(?<!\w)(?:" + "|".join(patterns) + r")")


# Word stems, matched at a word's start (Russian inflects: «болезни», «болел», «больничного»).
_ILLNESS = _words(r"болезн", r"болел(?!ьщ)", r"болею", r"боле[ею]т", r"забол", r"больничн", r"больна\b", r"болен\b", r"листок нетрудоспособности",
                  r"лист нетрудоспособности", r"\bэлн\b", r"температур", r"госпитализ", r"ковид", r"covid", r"пцр")
_DEATH = _words(r"смерт", r"умер", r"скончал", r"свидетельств\w* о смерти", r"похорон", r"погиб")
_CANCELLED = _words(r"отмен", r"отменён", r"отменен")
_POSTPONED = _words(r"перенос", r"перенес[её]н", r"перенесли")
_VOLUNTARY = _words(r"передумал", r"не смогу пойти", r"не сможем пойти", r"не могу пойти", r"не пойду", r"не пойд[её]м",
                    r"по собственной инициативе", r"по собственному желанию", r"планы изменились", r"изменились планы")
# «не болел», «никто не умер»: a negated word is no ground (the seed: «У меня все живы и здоровы»).
_NEGATED = re.compile(r"(?iu)\b(?:не|ни|никто не)\s+$")


def _mentions(pattern: re.Pattern[str], text: str) -> bool:
    for match in pattern.finditer(text):
        before = text[max(0, match.start() - 12):match.start()]
        if not _NEGATED.search(before):
            return True
    return False


@dataclass(frozen=True)
class RecognisedReason:
    reason: Reason
    why: str  # what in the letter decided it, for the audit note and the reply


def recognise_reason(subject: str, text: str, *, event_status: str) -> RecognisedReason:
    """The claim's reason from the letter's words: a cancelled or replaced event's own reason whatever
    the words (no other reason is taken for it); else death, illness, then postponement (only when the
    event's status says so: Art. 52.1, a buyer's word is not enough), then a voluntary refund
    (only when the letter says so: «передумал», «не смогу пойти»), «Прочее» otherwise.

    Death before illness: a letter about a relative's death often says they were ill first.
    """
    words = f"{subject or ''}\n{text or ''}"
    # A cancelled or replaced event takes only its own reason (states.policy.check_reason_for_event):
    # 100 % whatever the letter says, so it is not filed as illness or voluntary and refused.
    if event_status == "cancelled":
        return RecognisedReason(Reason.CANCELLED, "мероприятие отменено")
    if event_status == "replaced":
        return RecognisedReason(Reason.REPLACED, "мероприятие заменено")
    if _mentions(_DEATH, words):
        return RecognisedReason(Reason.DEATH, "в письме говорится о смерти близкого")
    if _mentions(_ILLNESS, words):
        return RecognisedReason(Reason.ILLNESS, "в письме говорится о болезни")
    if event_status == "cancelled" and _mentions(_CANCELLED, words):
        return RecognisedReason(Reason.CANCELLED, "мероприятие отменено")
    if event_status == "replaced" and (_mentions(_CANCELLED, words) or _mentions(_words(r"замен"), words)):
        return RecognisedReason(Reason.REPLACED, "мероприятие заменено")
    if event_status == "postponed" and _mentions(_POSTPONED, words):
        return RecognisedReason(Reason.POSTPONED, "мероприятие перенесено")
    if _mentions(_VOLUNTARY, words):
        return RecognisedReason(Reason.VOLUNTARY, "покупатель передумал идти")
    return RecognisedReason(Reason.OTHER, "причина не распознана: «Прочее», решает организатор")


def death_certificate_mentioned(subject: str, text: str) -> bool:
    return bool(re.search(r"(?iu)свидетельств\w* о смерти", f"{subject or ''}\n{text or ''}"))


# --- mail written by machines gets no answer (RFC 3834), and neither do replies to our replies --------

_BULK_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})
_MACHINE_SENDERS = re.compile(r"(?i)^(?:mailer-daemon|postmaster|no-?reply|noreply|bounce[s]?)([+@.-]|$)")


def automatic_mail(headers: Mapping[str, str], *, envelope_from: str, from_address: str, own_addresses: frozenset[str],
                   own_message_marker: str) -> str | None:
    """Why this letter must get no reply (a mail loop or a reply storm in the making), or None.

    RFC 3834: Auto-Submitted other than "no", Precedence bulk/junk/list/auto_reply, mailing lists
    (List-Id, List-Unsubscribe), X-Auto-Response-Suppress, a null envelope sender (a bounce); and
    mail from ourselves or from a mailer daemon, and replies to a message we sent (its Message-ID
    carries `own_message_marker`).
    `headers` maps lower-cased header names to their values.
    """
    auto = headers.get("auto-submitted", "").strip().lower()
    if auto and auto != "no":
        return f"Auto-Submitted: {auto[:40]}"
    precedence = headers.get("precedence", "").strip().lower()
    if precedence in _BULK_PRECEDENCE:
        return f"Precedence: {precedence}"
    for name in ("list-id", "list-unsubscribe", "x-auto-response-suppress", "x-autoreply", "x-autorespond"):
        if headers.get(name):
            return name
    if envelope_from in ("", "<>"):
        return "null envelope sender (a bounce)"
    for address in (from_address, envelope_from):
        if address.casefold() in own_addresses:
            return "our own address"
        if _MACHINE_SENDERS.match(address):
            return "a mailer daemon"
    if own_message_marker in headers.get("in-reply-to", "") + headers.get("references", ""):
        return "a reply to our own message"
    return None
