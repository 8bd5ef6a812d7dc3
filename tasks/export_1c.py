"""Bank transfers for accounting: payment orders in the 1C "Клиент-банк" exchange format 1.03, and the
bank statement read back in the same format (DESIGN "Payment channels").

Pure functions: `render_payment_orders` returns the file's bytes, a task writes them.
Format: text in Windows-1251, CRLF line ends, `Key=Value` lines; a header, then one
`СекцияДокумент=Платежное поручение` ... `КонецДокумента` per order, then `КонецФайла`.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

from states.money import format_rub

__all__ = [
    "AccountSection",
    "BankStatement",
    "Payer",
    "PaymentOrder",
    "StatementEntry",
    "StatementError",
    "claim_number_from_purpose",
    "parse_statement",
    "read_bank_statement",
    "payment_purpose",
    "render_payment_orders",
]

ENCODING = "cp1251"
CRLF = "\r\n"
DOCUMENT_KIND = "Платежное поручение"
SENDER = "vozvrat"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CLAIM_IN_PURPOSE = re.compile(r"заявк\w*\s*№\s*([0-9A-Za-zА-Яа-я][0-9A-Za-zА-Яа-я/\-]*)", re.IGNORECASE)


@dataclass(frozen=True)
class Payer:
    """The operator paying the refunds (its account in its bank)."""

    name: str
    inn: str
    kpp: str
    account: str
    bank_name: str
    bank_bik: str
    bank_corr_account: str

    @classmethod
    def from_settings(cls, settings=None) -> Payer:
        if settings is None:
            from models.settings import get_settings

            settings = get_settings()
        return cls(
            name=settings.operator_name,
            inn=settings.operator_inn,
            kpp=settings.operator_kpp,
            account=settings.operator_account,
            bank_name=settings.operator_bank_name,
            bank_bik=settings.operator_bank_bik,
            bank_corr_account=settings.operator_bank_corr_account,
        )


@dataclass(frozen=True)
class PaymentOrder:
    number: int | str
    date: date
    amount_kopecks: int
    recipient_name: str
    recipient_inn: str | None
    recipient_account: str
    recipient_bik: str
    purpose: str
    claim_number: str
    recipient_bank_name: str | None = None
    recipient_bank_corr_account: str | None = None


@dataclass(frozen=True)
class StatementEntry:
    number: str
    date: date | None
    amount_kopecks: int
    purpose: str
    recipient_account: str
    payer_account: str = ""
    recipient_name: str = ""
    claim_number: str | None = None
    debit_date: date | None = None  # ДатаСписано: the day the bank debited the payer's account


def payment_purpose(claim_number: str) -> str:
    """The purpose line accounting and the bank see; `claim_number_from_purpose` reads it back."""
    return f"Возврат стоимости билета по заявке № {claim_number}; НДС не облагается"


def claim_number_from_purpose(purpose: str) -> str | None:
    match = _CLAIM_IN_PURPOSE.search(purpose or "")
    return match.group(1).rstrip(";.,") if match else None


def _rub(kopecks: int) -> str:
    if kopecks <= 0:
        raise ValueError(f"a payment order needs a positive amount, got {kopecks} kopecks")
    return format_rub(kopecks)


def _d(value: date) -> str:
    return value.strftime("%d.%m.%Y")


def _line(key: str, value: object) -> str:
    text = "" if value is None else str(value)
    # A line break inside a value would start a new Key=Value line: a buyer-supplied name could
    # otherwise forge a field (e.g. another ПолучательСчет) in the file the bank executes.
    if _CONTROL.search(text):
        raise ValueError(f"{key}: control characters are not allowed in a 1C exchange value")
    return f"{key}={text}"


def render_payment_orders(
    orders: Sequence[PaymentOrder],
    *,
    payer: Payer,
    created_at: datetime,
    date_from: date,
    date_to: date,
) -> bytes:
    """The 1CClientBankExchange 1.03 file with one payment order per refund, in Windows-1251 with CRLF.

    ВидОплаты=01 (payment order), Очередность=5 (ordinary payments, Art. 855 of the Civil Code).
    Raises ValueError when a value cannot be written in Windows-1251 or contains a line break.
    """
    lines = [
        "1CClientBankExchange",
        _line("ВерсияФормата", "1.03"),
        _line("Кодировка", "Windows"),
        _line("Отправитель", SENDER),
        _line("Получатель", ""),
        _line("ДатаСоздания", _d(created_at.date())),
        _line("ВремяСоздания", created_at.strftime("%H:%M:%S")),
        _line("ДатаНачала", _d(date_from)),
        _line("ДатаКонца", _d(date_to)),
        _line("РасчСчет", payer.account),
        _line("Документ", DOCUMENT_KIND),
    ]
    for order in orders:
        lines += [
            _line("СекцияДокумент", DOCUMENT_KIND),
            _line("Номер", order.number),
            _line("Дата", _d(order.date)),
            _line("Сумма", _rub(order.amount_kopecks)),
            _line("ПлательщикСчет", payer.account),
            _line("Плательщик", payer.name),
            _line("ПлательщикИНН", payer.inn),
            _line("ПлательщикКПП", payer.kpp),
            _line("ПлательщикБанк1", payer.bank_name),
            _line("ПлательщикБИК", payer.bank_bik),
            _line("ПлательщикКорсчет", payer.bank_corr_account),
            _line("ПолучательСчет", order.recipient_account),
            _line("Получатель", order.recipient_name),
            _line("ПолучательИНН", order.recipient_inn or ""),
        ]
        if order.recipient_bank_name:
            lines.append(_line("ПолучательБанк1", order.recipient_bank_name))
        lines.append(_line("ПолучательБИК", order.recipient_bik))
        if order.recipient_bank_corr_account:
            lines.append(_line("ПолучательКорсчет", order.recipient_bank_corr_account))
        lines += [
            _line("ВидПлатежа", "электронно"),
            _line("ВидОплаты", "01"),
            _line("Очередность", "5"),
            _line("НазначениеПлатежа", order.purpose or payment_purpose(order.claim_number)),
            "КонецДокумента",
        ]
    lines.append("КонецФайла")
    text = CRLF.join(lines) + CRLF
    try:
        return text.encode(ENCODING)
    except UnicodeEncodeError as exc:
        bad = text[exc.start : exc.end]
        raise ValueError(f"character {bad!r} cannot be written in Windows-1251 (1C exchange file)") from exc


def _decode(data: bytes) -> str:
    head = data[:4096].decode("latin-1")
    # The header names the encoding: Windows (cp1251) or DOS (cp866); the key itself is Cyrillic, so
    # look for its value in both encodings.
    if "Кодировка=DOS".encode("cp866").decode("latin-1") in head:
        return data.decode("cp866")
    return data.decode(ENCODING)


def _parse_date(text: str) -> date | None:
    try:
        return datetime.strptime(text.strip(), "%d.%m.%Y").date()
    except ValueError:
        return None


def _parse_kopecks(text: str) -> int:
    try:
        value = Decimal(text.strip().replace(",", "."))
    except InvalidOperation as exc:
        raise ValueError(f"Сумма={text!r} is not an amount") from exc
    if not value.is_finite() or value != value.quantize(Decimal("0.01")) or abs(value) >= 10**15:
        raise ValueError(f"Сумма={text!r} is not an amount in rubles and kopecks")
    return int(value * 100)


def _lines(data: bytes) -> list[str]:
    text = _decode(data)
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if not lines or lines[0].lstrip("\ufeff").strip() != "1CClientBankExchange":
        raise StatementError("not a 1CClientBankExchange file")
    return [raw.strip() for raw in lines[1:]]


def _entry(fields: dict[str, str]) -> StatementEntry:
    purpose = fields.get("НазначениеПлатежа", "")
    return StatementEntry(
        number=fields.get("Номер", "").strip(),
        date=_parse_date(fields.get("Дата", "")),
        amount_kopecks=_parse_kopecks(fields.get("Сумма", "0")),
        purpose=purpose,
        recipient_account=(fields.get("ПолучательСчет", "") or fields.get("ПолучательРасчСчет", "")).strip(),
        payer_account=(fields.get("ПлательщикСчет", "") or fields.get("ПлательщикРасчСчет", "")).strip(),
        recipient_name=fields.get("Получатель1", "") or fields.get("Получатель", ""),
        claim_number=claim_number_from_purpose(purpose),
        debit_date=_parse_date(fields.get("ДатаСписано", "")),
    )


def _read(data: bytes) -> tuple[list[dict[str, str]], list[StatementEntry]]:
    """The account sections (СекцияРасчСчет ... КонецРасчСчет) and the documents of a 1C exchange file."""
    sections: list[dict[str, str]] = []
    entries: list[StatementEntry] = []
    current: dict[str, str] | None = None
    kind = ""
    for line in _lines(data):
        if line.startswith("СекцияДокумент="):
            current, kind = {}, "document"
        elif line == "СекцияРасчСчет":
            current, kind = {}, "account"
        elif line == "КонецДокумента" and kind == "document" and current is not None:
            entries.append(_entry(current))
            current = None
        elif line == "КонецРасчСчет" and kind == "account" and current is not None:
            sections.append(current)
            current = None
        elif current is not None and "=" in line:
            key, _, value = line.partition("=")
            current.setdefault(key, value)
    return sections, entries


def parse_statement(data: bytes) -> list[StatementEntry]:
    """Documents (СекцияДокумент ... КонецДокумента) of any 1CClientBankExchange file, each with the
    claim number found in its purpose. Reading a document is not trusting it: `read_bank_statement`
    says whether the file is a bank's statement of our account."""
    return _read(data)[1]


class StatementError(ValueError):
    """The file is not a bank statement of our account in the 1C exchange format: nothing may be closed by it."""


@dataclass(frozen=True)
class AccountSection:
    account: str
    date_from: date
    date_to: date


@dataclass(frozen=True)
class BankStatement:
    section: AccountSection  # our account's section
    debits: list[StatementEntry]  # documents paid from our account, each with its debit date
    other_documents: int  # incoming payments and documents of other accounts


def read_bank_statement(data: bytes, *, account: str) -> BankStatement:
    """A bank's statement of `account` (1C "Клиент-банк" exchange, the bank-to-client direction).

    What makes it a statement and not a payment-order file (ours, or anybody's): a СекцияРасчСчет
    section for our account with its period (ДатаНачала, ДатаКонца), and for every document paid
    from our account the day the bank debited it (ДатаСписано) inside that period. Anything less is a
    StatementError naming the first problem.
    """
    sections, entries = _read(data)
    if not sections:
        raise StatementError("not a bank statement: no СекцияРасчСчет account section (a payment-order file is not a statement)")
    ours = [s for s in sections if s.get("РасчСчет", "").strip() == account]
    if not ours:
        shown = ", ".join(sorted({s.get("РасчСчет", "").strip() or "?" for s in sections}))
        raise StatementError(f"the statement is for account {shown}, not for our account {account}")
    fields = ours[0]
    date_from, date_to = _parse_date(fields.get("ДатаНачала", "")), _parse_date(fields.get("ДатаКонца", ""))
    if date_from is None or date_to is None or date_to < date_from:
        raise StatementError(f"the account section of {account} has no valid period (ДатаНачала, ДатаКонца)")
    debits: list[StatementEntry] = []
    for e in entries:
        if e.payer_account != account:
            continue
        label = f"document №{e.number or '?'}"
        if e.debit_date is None:
            raise StatementError(f"{label} from our account has no ДатаСписано: a statement shows when the bank debited it")
        if not date_from <= e.debit_date <= date_to:
            raise StatementError(f"{label}: ДатаСписано {_d(e.debit_date)} is outside the statement period {_d(date_from)}-{_d(date_to)}")
        if e.date is None or e.date > e.debit_date:
            raise StatementError(f"{label}: Дата is missing or later than its ДатаСписано")
        debits.append(e)
    return BankStatement(AccountSection(account, date_from, date_to), debits, len(entries) - len(debits))
