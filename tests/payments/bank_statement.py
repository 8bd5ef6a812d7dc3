"""A bank's statement in the 1C "Клиент-банк" exchange format (bank to client), as Sber Business
exports it: the header, one СекцияРасчСчет per account with its period and balances, then every
document of the period (our debits with ДатаСписано, incoming payments with ДатаПоступило)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date

from tasks.export_1c import Payer, parse_statement

CRLF = "\r\n"


@dataclass(frozen=True)
class Doc:
    number: str
    date: date
    kopecks: int
    payer_account: str
    payer_name: str
    recipient_account: str
    recipient_name: str
    purpose: str
    debit_date: date | None = None  # ДатаСписано (a debit of the statement's account)
    credit_date: date | None = None  # ДатаПоступило (money coming in)
    recipient_bik: str = "044525225"


def _d(value: date | None) -> str:
    return value.strftime("%d.%m.%Y") if value else ""


def _rub(kopecks: int) -> str:
    return f"{kopecks // 100}.{kopecks % 100:02d}"


def render(docs: list[Doc], *, payer: Payer, date_from: date, date_to: date, opening: int = 100_000_000,
           account: str | None = None, with_section: bool = True) -> bytes:
    account = account or payer.account
    debited = sum(d.kopecks for d in docs if d.payer_account == account)
    credited = sum(d.kopecks for d in docs if d.recipient_account == account)
    lines = [
        "1CClientBankExchange", "ВерсияФормата=1.03", "Кодировка=Windows", "Отправитель=СберБизнес",
        "Получатель=Бухгалтерия предприятия", f"ДатаСоздания={_d(date_to)}", "ВремяСоздания=09:12:44",
        f"ДатаНачала={_d(date_from)}", f"ДатаКонца={_d(date_to)}", f"РасчСчет={account}",
        "Документ=Платежное поручение",
    ]
    if with_section:
        lines += [
            "СекцияРасчСчет", f"ДатаНачала={_d(date_from)}", f"ДатаКонца={_d(date_to)}", f"РасчСчет={account}",
            f"НачальныйОстаток={_rub(opening)}", f"ВсегоПоступило={_rub(credited) if credited else '0.00'}",
            f"ВсегоСписано={_rub(debited) if debited else '0.00'}", f"КонечныйОстаток={_rub(opening + credited - debited)}",
            "КонецРасчСчет",
        ]
    for d in docs:
        lines += [
            "СекцияДокумент=Платежное поручение", f"Номер={d.number}", f"Дата={_d(d.date)}", f"Сумма={_rub(d.kopecks)}",
            f"ПлательщикСчет={d.payer_account}", f"ДатаСписано={_d(d.debit_date)}", f"Плательщик={d.payer_name}",
            f"Плательщик1={d.payer_name}", f"ПлательщикРасчСчет={d.payer_account}", f"ПлательщикБИК={payer.bank_bik}",
            f"ПолучательСчет={d.recipient_account}", f"ДатаПоступило={_d(d.credit_date)}", f"Получатель={d.recipient_name}",
            f"Получатель1={d.recipient_name}", f"ПолучательРасчСчет={d.recipient_account}", f"ПолучательБИК={d.recipient_bik}",
            "ВидОплаты=01", "Очередность=5", f"НазначениеПлатежа={d.purpose}", "КонецДокумента",
        ]
    lines.append("КонецФайла")
    return (CRLF.join(lines) + CRLF).encode("cp1251")


def debits_of(export_file: bytes, *, debit_date: date) -> list[Doc]:
    """The payment orders of our 1C export as the bank shows them once executed."""
    return [
        Doc(number=e.number, date=e.date, kopecks=e.amount_kopecks, payer_account=e.payer_account, payer_name="ООО «Возврат Билетов»",
            recipient_account=e.recipient_account, recipient_name=e.recipient_name, purpose=e.purpose, debit_date=debit_date)
        for e in parse_statement(export_file)
    ]


def incoming(payer: Payer, *, on: date) -> Doc:
    """Money from a customer: in every real statement, and none of our business here."""
    return Doc(number="512", date=on, kopecks=1_250_000, payer_account="40702810438000012345", payer_name="ООО «Билетный агент»",
               recipient_account=payer.account, recipient_name=payer.name, purpose="Оплата по договору 17/2026. НДС не облагается",
               credit_date=on)


def statement_for(export_file: bytes, *, payer: Payer, debit_date: date, change=None) -> bytes:
    """A realistic statement covering the export: our debits (optionally changed by `change(doc)`), plus an incoming payment."""
    docs = debits_of(export_file, debit_date=debit_date)
    if change:
        docs = [change(d) for d in docs]
    first = min(d.date for d in docs)
    return render([*docs, incoming(payer, on=debit_date)], payer=payer, date_from=first, date_to=debit_date)


__all__ = ["Doc", "debits_of", "incoming", "render", "replace", "statement_for"]
