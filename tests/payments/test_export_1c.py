"""tasks.export_1c: 1CClientBankExchange 1.03 payment orders (cp1251, CRLF) and statements read back."""
from __future__ import annotations

from datetime import date, datetime

import pytest

from models.settings import Settings
from tasks.export_1c import (
    Payer,
    PaymentOrder,
    claim_number_from_purpose,
    parse_statement,
    payment_purpose,
    render_payment_orders,
)

PAYER = Payer.from_settings(Settings())
CREATED = datetime(2026, 3, 2, 14, 5, 9)


def order(n: int, kopecks: int, claim: str, name: str = "Салтыкова-Щедрина Алёна Юрьевна", **kw) -> PaymentOrder:
    return PaymentOrder(
        number=n,
        date=date(2026, 3, 2),
        amount_kopecks=kopecks,
        recipient_name=name,
        recipient_inn=kw.pop("inn", None),
        recipient_account="40602810700000000025",
        recipient_bik="049805746",
        purpose=payment_purpose(claim),
        claim_number=claim,
        **kw,
    )


ORDERS = [
    order(1, 175000, "R-2026-000123"),
    order(2, 5, "R-2026-000124", name="John Smith", inn="123456789047"),
    order(3, 1234567, "R-2026-000125", recipient_bank_name="ТВЕРСКОЕ ОТДЕЛЕНИЕ", recipient_bank_corr_account="30101810800000000746"),
]


def render(orders=ORDERS) -> bytes:
    return render_payment_orders(orders, payer=PAYER, created_at=CREATED, date_from=date(2026, 3, 1), date_to=date(2026, 3, 2))


def test_encoding_is_windows_1251():
    data = render()
    assert "Алёна".encode("cp1251") in data
    assert "Алёна".encode() not in data
    data.decode("cp1251")  # every byte is valid cp1251


def test_crlf_everywhere():
    data = render()
    assert data.endswith(b"\r\n")
    assert data.count(b"\n") == data.count(b"\r\n") == data.count(b"\r")


def test_one_header_and_one_section_per_order():
    lines = render().decode("cp1251").split("\r\n")
    assert lines[0] == "1CClientBankExchange"
    header = lines[: lines.index("СекцияДокумент=Платежное поручение")]
    assert header == [
        "1CClientBankExchange",
        "ВерсияФормата=1.03",
        "Кодировка=Windows",
        "Отправитель=vozvrat",
        "Получатель=",
        "ДатаСоздания=02.03.2026",
        "ВремяСоздания=14:05:09",
        "ДатаНачала=01.03.2026",
        "ДатаКонца=02.03.2026",
        f"РасчСчет={PAYER.account}",
        "Документ=Платежное поручение",
    ]
    assert lines.count("1CClientBankExchange") == 1 and lines.count("ВерсияФормата=1.03") == 1
    assert lines.count("СекцияДокумент=Платежное поручение") == 3
    assert lines.count("КонецДокумента") == 3
    assert lines[-2:] == ["КонецФайла", ""]


def test_section_fields():
    text = render([ORDERS[0]]).decode("cp1251")
    section = text.split("СекцияДокумент=Платежное поручение\r\n")[1].split("КонецДокумента")[0].split("\r\n")
    fields = dict(line.split("=", 1) for line in section if line)
    assert fields["Номер"] == "1"
    assert fields["Дата"] == "02.03.2026"
    assert fields["Сумма"] == "1750.00"
    assert fields["ПлательщикСчет"] == PAYER.account and fields["ПлательщикИНН"] == PAYER.inn
    assert fields["Плательщик"] == PAYER.name == "ООО «Возврат Билетов»"
    assert fields["ПлательщикКПП"] == PAYER.kpp and fields["ПлательщикБИК"] == PAYER.bank_bik
    assert fields["ПлательщикБанк1"] == PAYER.bank_name and fields["ПлательщикКорсчет"] == PAYER.bank_corr_account
    assert fields["ПолучательСчет"] == "40602810700000000025" and fields["ПолучательБИК"] == "049805746"
    assert fields["Получатель"] == "Салтыкова-Щедрина Алёна Юрьевна"
    assert fields["ПолучательИНН"] == ""
    assert "ПолучательБанк1" not in fields and "ПолучательКорсчет" not in fields
    assert (fields["ВидОплаты"], fields["Очередность"]) == ("01", "5")
    assert fields["НазначениеПлатежа"] == "Возврат стоимости билета по заявке № R-2026-000123; НДС не облагается"


def test_known_recipient_bank_is_written():
    text = render([ORDERS[2]]).decode("cp1251")
    assert "ПолучательБанк1=ТВЕРСКОЕ ОТДЕЛЕНИЕ\r\n" in text
    assert "ПолучательКорсчет=30101810800000000746\r\n" in text


@pytest.mark.parametrize(("kopecks", "text"), [(175000, "1750.00"), (5, "0.05"), (1234567, "12345.67"), (100, "1.00")])
def test_amounts_in_rubles_with_a_dot(kopecks, text):
    assert f"Сумма={text}\r\n".encode("cp1251") in render([order(1, kopecks, "R-1")])


def test_zero_amount_is_refused():
    with pytest.raises(ValueError, match="positive"):
        render([order(1, 0, "R-1")])


def test_line_break_in_a_value_cannot_forge_a_field():
    with pytest.raises(ValueError, match="Получатель"):
        render([order(1, 100, "R-1", name="Иван Петров\r\nПолучательСчет=40817810000000000000")])


def test_character_outside_windows_1251_is_a_clear_error():
    with pytest.raises(ValueError, match="Windows-1251"):
        render([order(1, 100, "R-1", name="Иван Петров 🎫")])


def test_round_trip_render_then_parse():
    entries = parse_statement(render())
    assert [e.number for e in entries] == ["1", "2", "3"]
    assert [e.amount_kopecks for e in entries] == [175000, 5, 1234567]
    assert [e.claim_number for e in entries] == ["R-2026-000123", "R-2026-000124", "R-2026-000125"]
    assert entries[0].recipient_name == "Салтыкова-Щедрина Алёна Юрьевна"
    assert entries[0].recipient_account == "40602810700000000025"
    assert entries[0].payer_account == PAYER.account
    assert entries[0].date == date(2026, 3, 2)


def test_parse_a_bank_statement_with_account_sections_and_lf():
    statement = "\n".join(
        [
            "1CClientBankExchange",
            "ВерсияФормата=1.03",
            "Кодировка=Windows",
            "СекцияРасчСчет",
            "РасчСчет=40702810900000000001",
            "НачальныйОстаток=100000.00",
            "КонецРасчСчет",
            "СекцияДокумент=Платежное поручение",
            "Номер=17",
            "Дата=03.03.2026",
            "Сумма=1750",
            "ПлательщикСчет=40702810900000000001",
            "ПолучательСчет=40817810099910004312",
            "Получатель1=Петров Пётр",
            "НазначениеПлатежа=Возврат стоимости билета по заявке №R-77; НДС не облагается",
            "КонецДокумента",
            "КонецФайла",
            "",
        ]
    ).encode("cp1251")
    [entry] = parse_statement(statement)
    assert (entry.number, entry.amount_kopecks, entry.claim_number) == ("17", 175000, "R-77")
    assert entry.recipient_account == "40817810099910004312" and entry.recipient_name == "Петров Пётр"


def test_parse_refuses_another_format():
    with pytest.raises(ValueError, match="1CClientBankExchange"):
        parse_statement("Номер=1\r\n".encode("cp1251"))


@pytest.mark.parametrize(
    ("purpose", "claim"),
    [
        ("Возврат стоимости билета по заявке № R-1; НДС не облагается", "R-1"),
        ("возврат по Заявке №  2026/15. Без НДС", "2026/15"),
        ("Оплата по счёту 15", None),
    ],
)
def test_claim_number_from_purpose(purpose, claim):
    assert claim_number_from_purpose(purpose) == claim
