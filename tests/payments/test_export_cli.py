"""`vozvrat payouts ...` on a SQLite file: bank details (masked), export-1c, mark-paid, run."""
from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from cli.main import app
from models.db import make_engine
from models.tables import Claim, ClaimTransition
from tasks.export_1c import Payer, parse_statement
from tasks.payouts import OPERATOR_TZ
from tests import factories
from tests.payments import bank_statement

runner = CliRunner()
NOW = datetime.now(UTC)
BIK, ACCOUNT = "049805746", "40602810700000000025"


@pytest.fixture
def db(sqlite_url):
    return sqlite_url


def new_claim(db, **kw) -> int:
    engine = make_engine(db)
    with engine.begin() as conn:
        claim_id = factories.claim_in_payout(conn, now=NOW, **kw)
    engine.dispose()
    return claim_id


def state(db, claim_id) -> str:
    engine = make_engine(db)
    with engine.connect() as conn:
        value = conn.execute(select(Claim.__table__.c.state).where(Claim.__table__.c.id == claim_id)).scalar_one()
    engine.dispose()
    return value


def invoke(*args, input=None):
    return runner.invoke(app, list(args), input=input)


def details(db, claim_id, account=ACCOUNT, *extra):
    """The account number is typed at the hidden prompt (twice), never passed as an argument."""
    return invoke("payouts", "bank-details", str(claim_id), "--bik", BIK, "--name", "Петров Пётр Петрович", *extra, "--db", db,
                  input=f"{account}\n{account}\n")


def test_bank_details_are_saved_and_shown_masked(db):
    claim_id = new_claim(db, payment_method="cash")
    result = details(db, claim_id)
    assert result.exit_code == 0, result.output
    assert ACCOUNT not in result.output and "40602" in result.output and "0025" in result.output
    assert "payout_pending" in result.output
    assert state(db, claim_id) == "payout_pending"


def test_the_account_number_is_never_a_command_line_argument(db, tmp_path):
    # Used to go wrong: `--account 40602…` put the buyer's account into `ps` and the shell history.
    claim_id = new_claim(db, payment_method="cash")
    on_the_line = invoke("payouts", "bank-details", str(claim_id), "--bik", BIK, "--account", ACCOUNT, "--name", "Петров Пётр", "--db", db)
    assert on_the_line.exit_code == 2 and state(db, claim_id) == "needs_bank_details"
    typed = details(db, claim_id)
    assert typed.exit_code == 0, typed.output
    assert ACCOUNT not in typed.output  # the hidden prompt does not echo it
    assert state(db, claim_id) == "payout_pending"

    other = new_claim(db, payment_method="cash")
    from_file = tmp_path / "details.json"
    from_file.write_text(json.dumps({"bik": BIK, "account": ACCOUNT, "name": "Сидорова Анна"}, ensure_ascii=False), encoding="utf-8")
    result = invoke("payouts", "bank-details", str(other), "--from-file", str(from_file), "--db", db)
    assert result.exit_code == 0, result.output
    assert state(db, other) == "payout_pending"


def test_bank_details_changes_are_audited_with_the_os_user_and_need_force_and_a_reason(db):
    claim_id = new_claim(db, payment_method="cash")
    assert details(db, claim_id).exit_code == 0
    again = details(db, claim_id, "40817810899910004312")
    assert again.exit_code == 2 and again.stderr.count("\n") == 1 and "не ждёт" in again.stderr
    no_reason = details(db, claim_id, "40817810899910004312", "--force")
    assert no_reason.exit_code == 2 and "--reason" in no_reason.stderr
    forced = details(db, claim_id, "40817810899910004312", "--force", "--reason", "опечатка в счёте")
    assert forced.exit_code == 0, forced.output
    engine = make_engine(db)
    with engine.connect() as conn:
        t = ClaimTransition.__table__
        rows = conn.execute(select(t.c.actor, t.c.note).where(t.c.claim_id == claim_id, t.c.trigger == "bank_details_set").order_by(t.c.id)).all()
    engine.dispose()
    assert [r.actor for r in rows] == [f"ops:{getpass.getuser()}"] * 2
    assert "опечатка" in rows[1].note


def test_invalid_bank_details_exit_2_with_one_line(db):
    claim_id = new_claim(db, payment_method="cash")
    result = details(db, claim_id, account="40602810700000000026")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "контрольный ключ" in result.stderr
    assert state(db, claim_id) == "needs_bank_details"
    assert details(db, 999999).exit_code == 2


def test_export_then_nothing_to_export_then_mark_paid(db, tmp_path):
    claim_id = new_claim(db, payment_method="bso")
    assert details(db, claim_id).exit_code == 0
    # run opens the payout (no card refunds to send: the acquirer is never reached)
    run = invoke("payouts", "run", "--db", db, "--api-url", "http://127.0.0.1:9/v3")
    assert run.exit_code == 0, run.output

    out = tmp_path / "orders.txt"
    result = invoke("payouts", "export-1c", "--out", str(out), "--db", db)
    assert result.exit_code == 0, result.output
    assert "exported 1" in result.output
    (entry,) = parse_statement(out.read_bytes())
    assert entry.amount_kopecks == 350000

    second = tmp_path / "second.txt"
    again = invoke("payouts", "export-1c", "--out", str(second), "--db", db)
    assert again.exit_code == 0 and "nothing to export" in again.output
    assert not second.exists()

    # Used to go wrong: our own payment-order file was taken for a bank statement and closed the transfer.
    own = invoke("payouts", "mark-paid", str(out), "--db", db)
    assert own.exit_code == 2 and own.stderr.count("\n") == 1 and "СекцияРасчСчет" in own.stderr
    assert state(db, claim_id) == "payout_pending"

    statement = tmp_path / "statement.txt"
    statement.write_bytes(bank_statement.statement_for(out.read_bytes(), payer=Payer.from_settings(),
                                                        debit_date=NOW.astimezone(OPERATOR_TZ).date() + timedelta(days=1)))
    paid = invoke("payouts", "export-1c", "--mark-paid", str(statement), "--db", db)
    assert paid.exit_code == 0, paid.output
    assert "paid 1" in paid.output
    assert state(db, claim_id) == "paid"
    assert "already paid 1" in invoke("payouts", "mark-paid", str(statement), "--db", db).output


def test_export_cli_bad_input_exits_2(db, tmp_path):
    assert invoke("payouts", "export-1c", "--db", db).exit_code == 2
    assert invoke("payouts", "export-1c", "--out", "a", "--mark-paid", "b", "--db", db).exit_code == 2
    missing = invoke("payouts", "mark-paid", str(tmp_path / "missing.txt"), "--db", db)
    assert missing.exit_code == 2 and missing.stderr.startswith("error: ")
    junk = tmp_path / "junk.txt"
    junk.write_bytes(b"hello")
    assert invoke("payouts", "mark-paid", str(junk), "--db", db).exit_code == 2
    assert invoke("payouts", "export-1c", "--out", str(tmp_path / "x"), "--batch", "nope", "--db", db).exit_code == 2


def test_run_pays_card_claims_through_the_standin(db, standin):
    payment_id = standin.payment("3500.00")
    claim_id = new_claim(db, acquirer_payment_id=payment_id)
    result = invoke("payouts", "run", "--db", db, "--api-url", standin.server.api_url)
    assert result.exit_code == 0, result.output
    assert state(db, claim_id) == "paid"
    assert [r["status"] for r in standin.ledger()["refunds"]] == ["succeeded"]
