"""Bank transfers for cash and BSO tickets: bank details (validated, encrypted), the 1C export (marked
before written, never twice, rewritable byte for byte) and the bank statement that closes them."""
from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from models.claim_store import ClaimNotFound
from models.payouts import Payout
from models.tables import Claim
from tasks.export_1c import Payer, StatementError, parse_statement
from tasks.payouts import (
    BankDetailsNotExpected,
    export_bank_transfers,
    mark_export_batch,
    mark_paid_from_statement,
    open_payouts,
    read_bank_details,
    submit_bank_details,
    write_export_file,
)
from tests import factories
from tests.payments import bank_statement

MSK = ZoneInfo("Europe/Moscow")
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=MSK)
LATER = NOW + timedelta(hours=1)
BIK, ACCOUNT = "049805746", "40602810700000000025"  # the Bank of Russia's published example
OTHER_ACCOUNT = "40817810899910004312"
payout_t, claim_t = Payout.__table__, Claim.__table__
PAYER = Payer(name="ООО «Возврат Билетов»", inn="7707083893", kpp="773601001", account="40702810900000000001",
              bank_name="ПАО СБЕРБАНК", bank_bik="044525225", bank_corr_account="30101810400000000225")


def cash_claim(engine, *, payment_method="cash", price=350000) -> int:
    with engine.begin() as conn:
        return factories.claim_in_payout(conn, payment_method=payment_method, price_paid=price, now=NOW)


def claim_row(engine, claim_id):
    with engine.connect() as conn:
        return conn.execute(select(claim_t).where(claim_t.c.id == claim_id)).mappings().one()


def payout_rows(engine) -> list:
    with engine.connect() as conn:
        return list(conn.execute(select(payout_t).order_by(payout_t.c.id)).mappings())


NAMES = ["Петров Пётр Петрович", "Сидорова Анна-Мария", "Ким Ольга"]


def with_details(engine, n=2, **kw) -> list[int]:
    ids = []
    for i in range(n):
        claim_id = cash_claim(engine, price=350000 + 100 * i, **kw)
        assert submit_bank_details(engine, claim_id=claim_id, bik=BIK, account=ACCOUNT, name=NAMES[i], now=NOW, actor="buyer") == []
        ids.append(claim_id)
    return ids


def test_valid_details_are_stored_encrypted_and_move_the_claim_to_payout(engine):
    claim_id = cash_claim(engine)
    assert claim_row(engine, claim_id)["state"] == "needs_bank_details"

    errors = submit_bank_details(engine, claim_id=claim_id, bik=BIK, account=ACCOUNT, name="Петров Пётр Петрович", inn="7707083893", now=NOW, actor="buyer")

    assert errors == []
    row = claim_row(engine, claim_id)
    assert row["state"] == "payout_pending"
    assert ACCOUNT not in row["bank_details"] and "Петров" not in row["bank_details"]  # encrypted at rest
    assert read_bank_details(row["bank_details"]) == {"bik": BIK, "account": ACCOUNT, "name": "Петров Пётр Петрович", "inn": "7707083893"}


def test_invalid_details_give_russian_errors_per_field_and_write_nothing(engine):
    claim_id = cash_claim(engine)
    errors = submit_bank_details(engine, claim_id=claim_id, bik="12345", account="4060281070", name="", now=NOW, actor="buyer")
    assert {e.field for e in errors} == {"bik", "account", "name"}
    assert all(e.message_ru for e in errors)
    row = claim_row(engine, claim_id)
    assert (row["state"], row["bank_details"]) == ("needs_bank_details", None)

    bad_key = submit_bank_details(engine, claim_id=claim_id, bik=BIK, account="40602810700000000026", name="Петров Пётр", now=NOW, actor="buyer")
    assert [e.code for e in bad_key] == ["account_key"]


def test_details_go_only_to_a_claim_that_waits_for_them_and_each_change_is_audited(engine, tmp_path):
    # Used to go wrong: details could be set on any claim (even paid or exported), with no audit row.
    (claim_id,) = with_details(engine, 1)
    before = claim_row(engine, claim_id)["bank_details"]
    with pytest.raises(BankDetailsNotExpected, match="не ждёт"):
        submit_bank_details(engine, claim_id=claim_id, bik=BIK, account=OTHER_ACCOUNT, name="Петров Пётр", now=LATER, actor="ops:anna")
    with pytest.raises(BankDetailsNotExpected, match="причин"):
        submit_bank_details(engine, claim_id=claim_id, bik=BIK, account=OTHER_ACCOUNT, name="Петров Пётр", now=LATER, actor="ops:anna",
                            force=True, reason=" ")
    assert claim_row(engine, claim_id)["bank_details"] == before

    assert submit_bank_details(engine, claim_id=claim_id, bik=BIK, account=OTHER_ACCOUNT, name="Петров Пётр", now=LATER,
                               actor="ops:anna", force=True, reason="покупатель ошибся в номере счёта") == []
    assert read_bank_details(claim_row(engine, claim_id)["bank_details"])["account"] == OTHER_ACCOUNT
    (first, correction) = [a for a in audit_of(engine, claim_id) if a.trigger == "bank_details_set"]
    assert first.actor == "buyer" and correction.actor == "ops:anna"
    assert "ошибся" in correction.note and OTHER_ACCOUNT not in correction.note and OTHER_ACCOUNT[-4:] in correction.note

    open_payouts(engine, now=LATER)
    export_bank_transfers(engine, out=tmp_path / "orders.txt", now=LATER, payer=PAYER)
    with pytest.raises(BankDetailsNotExpected, match="выгружено"):  # the bank holds an order with these details
        submit_bank_details(engine, claim_id=claim_id, bik=BIK, account=ACCOUNT, name="Петров Пётр", now=LATER, actor="ops:anna",
                            force=True, reason="ещё раз")


def test_details_for_an_unknown_claim(engine):
    with pytest.raises(ClaimNotFound):
        submit_bank_details(engine, claim_id=999999, bik=BIK, account=ACCOUNT, name="Петров Пётр", now=NOW, actor="buyer")


def test_bso_with_details_is_paid_by_transfer(engine):
    (claim_id,) = with_details(engine, 1, payment_method="bso")
    assert open_payouts(engine, now=NOW) == 1
    (p,) = payout_rows(engine)
    assert (p["claim_id"], p["channel"], p["status"], p["amount"]) == (claim_id, "bank_transfer", "pending", 350000)


def test_export_writes_a_valid_1c_file_marks_it_and_never_exports_twice(engine, tmp_path):
    ids = with_details(engine, 2)
    open_payouts(engine, now=NOW)
    out = tmp_path / "orders.txt"

    assert export_bank_transfers(engine, out=out, now=NOW, payer=PAYER) == 2

    data = out.read_bytes()
    assert data.startswith("1CClientBankExchange\r\nВерсияФормата=1.03\r\n".encode("cp1251"))
    entries = parse_statement(data)
    numbers = [claim_row(engine, i)["number"] for i in ids]
    assert [e.claim_number for e in entries] == numbers
    assert [e.amount_kopecks for e in entries] == [350000, 350100]
    assert {e.recipient_account for e in entries} == {ACCOUNT}
    assert {e.payer_account for e in entries} == {PAYER.account}
    rows = payout_rows(engine)
    assert {r["status"] for r in rows} == {"exported"}
    assert len({r["export_batch"] for r in rows}) == 1

    second = tmp_path / "again.txt"
    assert export_bank_transfers(engine, out=second, now=LATER, payer=PAYER) == 0
    assert not second.exists()

    # the batch's file can be rewritten at any time, identical (a crash after the mark lost nothing)
    rewritten = tmp_path / "rewritten.txt"
    assert write_export_file(engine, batch=rows[0]["export_batch"], out=rewritten, payer=PAYER) == 2
    assert rewritten.read_bytes() == data


def test_a_crash_between_mark_and_write_leaves_a_batch_that_can_be_written(engine, tmp_path):
    with_details(engine, 1)
    open_payouts(engine, now=NOW)
    marked = mark_export_batch(engine, now=NOW)  # ...and the process dies here
    assert marked.count == 1
    assert export_bank_transfers(engine, out=tmp_path / "x.txt", now=LATER, payer=PAYER) == 0  # not exported twice
    assert write_export_file(engine, batch=marked.batch, out=tmp_path / "late.txt", payer=PAYER) == 1


DEBITED = (NOW + timedelta(days=1)).date()


def exported(engine, tmp_path, n=2) -> tuple[list[int], bytes]:
    ids = with_details(engine, n)
    open_payouts(engine, now=NOW)
    out = tmp_path / "orders.txt"
    export_bank_transfers(engine, out=out, now=NOW, payer=PAYER)
    return ids, out.read_bytes()


def audit_of(engine, claim_id):
    from models.tables import ClaimTransition

    t = ClaimTransition.__table__
    with engine.connect() as conn:
        return conn.execute(select(t.c.trigger, t.c.actor, t.c.note).where(t.c.claim_id == claim_id).order_by(t.c.id)).all()


def test_the_bank_statement_marks_exported_transfers_paid(engine, tmp_path):
    ids, orders = exported(engine, tmp_path)
    statement = bank_statement.statement_for(orders, payer=PAYER, debit_date=DEBITED)

    report = mark_paid_from_statement(engine, statement, now=LATER, payer=PAYER)

    assert sorted(report.paid) == sorted(claim_row(engine, i)["number"] for i in ids)
    assert report.without_claim == 1  # the incoming payment is not ours to close
    assert {claim_row(engine, i)["state"] for i in ids} == {"paid"}
    assert {r["status"] for r in payout_rows(engine)} == {"paid"}
    trigger, actor, note = audit_of(engine, ids[0])[-1]
    assert (trigger, actor) == ("payout_succeeded", "bank") and DEBITED.strftime("%d.%m.%Y") in note
    again = mark_paid_from_statement(engine, statement, now=LATER, payer=PAYER)
    assert (again.paid, len(again.already_paid)) == ([], 2)


def test_our_own_payment_order_file_closes_nothing(engine, tmp_path):
    # Used to go wrong: `mark-paid` took our own exported payment-order file and marked the claims paid.
    ids, orders = exported(engine, tmp_path)
    with pytest.raises(StatementError, match="СекцияРасчСчет"):
        mark_paid_from_statement(engine, orders, now=LATER, payer=PAYER)
    assert {claim_row(engine, i)["state"] for i in ids} == {"payout_pending"}
    assert {r["status"] for r in payout_rows(engine)} == {"exported"}


@pytest.mark.parametrize("forge, message", [
    (lambda orders: bank_statement.render(bank_statement.debits_of(orders, debit_date=None), payer=PAYER,
                                          date_from=NOW.date(), date_to=DEBITED), "ДатаСписано"),
    (lambda orders: bank_statement.render(bank_statement.debits_of(orders, debit_date=DEBITED), payer=PAYER,
                                          date_from=NOW.date(), date_to=DEBITED, account="40702810000000000099"), "not for our account"),
    (lambda orders: bank_statement.render(bank_statement.debits_of(orders, debit_date=DEBITED + timedelta(days=9)), payer=PAYER,
                                          date_from=NOW.date(), date_to=DEBITED), "outside the statement period"),
    (lambda orders: bank_statement.render(bank_statement.debits_of(orders, debit_date=DEBITED), payer=PAYER,
                                          date_from=NOW.date(), date_to=DEBITED, with_section=False), "СекцияРасчСчет"),
    (lambda orders: b"not a statement", "1CClientBankExchange"),
])
def test_a_file_that_is_not_a_statement_of_our_account_changes_nothing(engine, tmp_path, forge, message):
    ids, orders = exported(engine, tmp_path)
    with pytest.raises(StatementError, match=message):
        mark_paid_from_statement(engine, forge(orders), now=LATER, payer=PAYER)
    assert {claim_row(engine, i)["state"] for i in ids} == {"payout_pending"}
    assert {r["status"] for r in payout_rows(engine)} == {"exported"}


@pytest.mark.parametrize("change, field", [
    (lambda d: bank_statement.replace(d, kopecks=d.kopecks - 10000), "Сумма"),
    (lambda d: bank_statement.replace(d, number=str(int(d.number) + 100)), "Номер"),
    (lambda d: bank_statement.replace(d, date=d.date - timedelta(days=1)), "Дата"),
    (lambda d: bank_statement.replace(d, recipient_account="40817810099910004312"), "ПолучательСчет"),
])
def test_a_debited_document_that_is_not_our_payment_order_is_left_for_a_person(engine, tmp_path, change, field):
    (claim_id,), orders = exported(engine, tmp_path, n=1)
    statement = bank_statement.statement_for(orders, payer=PAYER, debit_date=DEBITED, change=change)
    report = mark_paid_from_statement(engine, statement, now=LATER, payer=PAYER)
    assert report.paid == [] and len(report.mismatched) == 1 and field in report.mismatched[0]
    assert ACCOUNT not in report.mismatched[0]  # shown masked
    assert claim_row(engine, claim_id)["state"] == "payout_pending"


def test_a_statement_naming_an_unknown_claim_closes_nothing(engine, tmp_path):
    (claim_id,), orders = exported(engine, tmp_path, n=1)
    number = claim_row(engine, claim_id)["number"]
    statement = bank_statement.statement_for(orders, payer=PAYER, debit_date=DEBITED,
                                             change=lambda d: bank_statement.replace(d, purpose=d.purpose.replace(number, "VZ-9999999-1")))
    assert mark_paid_from_statement(engine, statement, now=LATER, payer=PAYER).unknown == ["VZ-9999999-1"]
    assert claim_row(engine, claim_id)["state"] == "payout_pending"
