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
from tasks.export_1c import Payer, parse_statement
from tasks.payouts import (
    export_bank_transfers,
    mark_export_batch,
    mark_paid_from_statement,
    open_payouts,
    read_bank_details,
    submit_bank_details,
    write_export_file,
)
from tests import factories

MSK = ZoneInfo("Europe/Moscow")
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=MSK)
LATER = NOW + timedelta(hours=1)
BIK, ACCOUNT = "049805746", "40602810700000000025"  # the Bank of Russia's published example
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
        assert submit_bank_details(engine, claim_id=claim_id, bik=BIK, account=ACCOUNT, name=NAMES[i], now=NOW) == []
        ids.append(claim_id)
    return ids


def test_valid_details_are_stored_encrypted_and_move_the_claim_to_payout(engine):
    claim_id = cash_claim(engine)
    assert claim_row(engine, claim_id)["state"] == "needs_bank_details"

    errors = submit_bank_details(engine, claim_id=claim_id, bik=BIK, account=ACCOUNT, name="Петров Пётр Петрович", inn="7707083893", now=NOW)

    assert errors == []
    row = claim_row(engine, claim_id)
    assert row["state"] == "payout_pending"
    assert ACCOUNT not in row["bank_details"] and "Петров" not in row["bank_details"]  # encrypted at rest
    assert read_bank_details(row["bank_details"]) == {"bik": BIK, "account": ACCOUNT, "name": "Петров Пётр Петрович", "inn": "7707083893"}


def test_invalid_details_give_russian_errors_per_field_and_write_nothing(engine):
    claim_id = cash_claim(engine)
    errors = submit_bank_details(engine, claim_id=claim_id, bik="12345", account="4060281070", name="", now=NOW)
    assert {e.field for e in errors} == {"bik", "account", "name"}
    assert all(e.message_ru for e in errors)
    row = claim_row(engine, claim_id)
    assert (row["state"], row["bank_details"]) == ("needs_bank_details", None)

    bad_key = submit_bank_details(engine, claim_id=claim_id, bik=BIK, account="40602810700000000026", name="Петров Пётр", now=NOW)
    assert [e.code for e in bad_key] == ["account_key"]


def test_details_for_an_unknown_claim(engine):
    with pytest.raises(ClaimNotFound):
        submit_bank_details(engine, claim_id=999999, bik=BIK, account=ACCOUNT, name="Петров Пётр", now=NOW)


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


def test_the_bank_statement_marks_exported_transfers_paid(engine, tmp_path):
    ids = with_details(engine, 2)
    open_payouts(engine, now=NOW)
    out = tmp_path / "orders.txt"
    export_bank_transfers(engine, out=out, now=NOW, payer=PAYER)

    report = mark_paid_from_statement(engine, out.read_bytes(), now=LATER)

    assert sorted(report.paid) == sorted(claim_row(engine, i)["number"] for i in ids)
    assert {claim_row(engine, i)["state"] for i in ids} == {"paid"}
    assert {r["status"] for r in payout_rows(engine)} == {"paid"}
    again = mark_paid_from_statement(engine, out.read_bytes(), now=LATER)
    assert (again.paid, len(again.already_paid)) == ([], 2)


def test_a_statement_with_a_wrong_amount_or_an_unknown_claim_changes_nothing(engine, tmp_path):
    (claim_id,) = with_details(engine, 1)
    open_payouts(engine, now=NOW)
    out = tmp_path / "orders.txt"
    export_bank_transfers(engine, out=out, now=NOW, payer=PAYER)
    number = claim_row(engine, claim_id)["number"]
    data = out.read_bytes().replace("Сумма=3500.00".encode("cp1251"), "Сумма=3400.00".encode("cp1251"))

    report = mark_paid_from_statement(engine, data, now=LATER)
    assert report.paid == [] and len(report.mismatched) == 1
    assert claim_row(engine, claim_id)["state"] == "payout_pending"

    unknown = out.read_bytes().replace(number.encode("cp1251"), b"VZ-9999999-1")
    assert mark_paid_from_statement(engine, unknown, now=LATER).unknown == ["VZ-9999999-1"]
    with pytest.raises(ValueError):
        mark_paid_from_statement(engine, b"not a statement", now=LATER)
