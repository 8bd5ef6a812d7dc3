"""`vozvrat mail hold / release / status`: a staff supervisor throws the kill switch on the running stack;
anyone else, or bad input, gets exit 2 with one line."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from cli.main import app
from models.db import make_engine
from models.tables import MailSwitchChange
from tasks.accounts import create_user
from tasks.mail_switch import mail_switch_state

runner = CliRunner()
NOW = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
PASSWORD = "correct horse battery"


@pytest.fixture
def world(sqlite_url, tmp_path):
    engine = make_engine(sqlite_url)
    create_user(engine, login="anna@example.ru", password=PASSWORD, kind="staff", role="supervisor", now=NOW)
    create_user(engine, login="sam@example.ru", password=PASSWORD, kind="staff", role="support", now=NOW)
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n", encoding="utf-8")
    yield engine, sqlite_url, str(pw)
    engine.dispose()


def one_line_error(result, text: str) -> None:
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: ") and text in line, line


def test_a_supervisor_holds_and_releases_mail_and_the_audit_names_them(world):
    engine, url, pw = world
    r = runner.invoke(app, ["mail", "hold", "--reason", "взлом: фальшивые приглашения", "--as", "anna@example.ru",
                            "--password-file", pw, "--db", url])
    assert r.exit_code == 0 and "outbound mail held by staff:supervisor:anna@example.ru" in r.output, r.output
    state = mail_switch_state(engine)
    assert state.held and state.reason == "взлом: фальшивые приглашения" and state.changed_by == "staff:supervisor:anna@example.ru"

    r = runner.invoke(app, ["mail", "status", "--db", url], env={"COLUMNS": "300"})
    assert r.exit_code == 0 and "held by staff:supervisor:anna@example.ru" in r.output and "фальшивые приглашения" in r.output, r.output
    r = runner.invoke(app, ["mail", "hold", "--reason", "ещё", "--as", "anna@example.ru", "--password-file", pw, "--db", url])
    assert r.exit_code == 0 and "already held" in r.output, r.output

    r = runner.invoke(app, ["mail", "release", "--as", "anna@example.ru", "--password-file", pw, "--db", url])
    assert r.exit_code == 0 and "outbound mail released" in r.output, r.output
    assert mail_switch_state(engine).held is False
    r = runner.invoke(app, ["mail", "status", "--db", url], env={"COLUMNS": "300"})
    assert r.exit_code == 0 and r.output.startswith("outbound mail: sending"), r.output
    with engine.connect() as conn:
        rows = conn.execute(select(MailSwitchChange.__table__.c.principal, MailSwitchChange.__table__.c.held)).all()
    assert [tuple(r) for r in rows] == [("staff:supervisor:anna@example.ru", True), ("staff:supervisor:anna@example.ru", False)]


def test_who_may_not_and_bad_input_exit_2_with_one_line(world):
    engine, url, pw = world
    one_line_error(runner.invoke(app, ["mail", "hold", "--reason", "взлом", "--db", url]), "--as LOGIN")
    one_line_error(runner.invoke(app, ["mail", "hold", "--as", "anna@example.ru", "--password-file", pw, "--db", url]),
                   "--reason: укажите причину")
    one_line_error(runner.invoke(app, ["mail", "hold", "--reason", "a\x01b", "--as", "anna@example.ru", "--password-file", pw, "--db", url]),
                   "управляющие символы")
    one_line_error(runner.invoke(app, ["mail", "hold", "--reason", "взлом", "--as", "sam@example.ru", "--password-file", pw, "--db", url]),
                   "только старший смены (supervisor)")
    one_line_error(runner.invoke(app, ["mail", "release", "--as", "sam@example.ru", "--password-file", pw, "--db", url]),
                   "только старший смены (supervisor)")
    wrong = pw + ".wrong"
    with open(wrong, "w", encoding="utf-8") as fh:
        fh.write("nope\n")
    one_line_error(runner.invoke(app, ["mail", "hold", "--reason", "взлом", "--as", "anna@example.ru", "--password-file", wrong, "--db", url]),
                   "wrong login or password")
    assert mail_switch_state(engine).held is False
    with engine.connect() as conn:
        assert conn.execute(select(MailSwitchChange.__table__.c.id)).first() is None  # nothing refused left a change
