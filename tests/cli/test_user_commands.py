"""`vozvrat users …`: accounts created from a hidden prompt or a file, never a password argument; tokens printed once."""
from __future__ import annotations

import json
from datetime import UTC, datetime

from typer.testing import CliRunner

from api.auth import resolve_bearer
from cli.main import app
from models.db import make_engine
from tasks.accounts import authenticate
from tests import factories

runner = CliRunner()


def test_users_are_added_listed_tokened_revoked_and_disabled(sqlite_url, tmp_path):
    engine = make_engine(sqlite_url)
    with engine.begin() as conn:
        org = factories.organizer(conn)
    # The hidden prompt asks twice.
    r = runner.invoke(app, ["users", "add", "Anna@Org.ru", "--organizer", str(org), "--name", "Анна", "--db", sqlite_url],
                      input="correct horse battery\ncorrect horse battery\n")
    assert r.exit_code == 0, r.output
    assert f"organizer:{org}:user:anna@org.ru" in r.output
    assert authenticate(engine, "anna@org.ru", "correct horse battery") is not None
    secret_file = tmp_path / "pw"
    secret_file.write_text("supervisor password\n", encoding="utf-8")
    r = runner.invoke(app, ["users", "add", "ivan@operator.ru", "--staff", "supervisor", "--password-file", str(secret_file), "--db", sqlite_url])
    assert r.exit_code == 0 and "staff:supervisor:ivan@operator.ru" in r.output, r.output

    r = runner.invoke(app, ["users", "token", "anna@org.ru", "--name", "crm", "--days", "30", "--db", sqlite_url])
    assert r.exit_code == 0, r.output
    secret = r.stdout.strip()
    assert secret.startswith("vzu_")
    assert resolve_bearer(engine, secret, now=datetime.now(UTC)).audit == f"organizer:{org}:user:anna@org.ru"

    listed = json.loads(runner.invoke(app, ["users", "list", "--json", "--db", sqlite_url]).stdout)
    assert {(u["login"], u["kind"], u["role"]) for u in listed} == {("anna@org.ru", "organizer", None), ("ivan@operator.ru", "staff", "supervisor")}
    assert next(u for u in listed if u["login"] == "anna@org.ru")["tokens"][0]["name"] == "crm"

    assert runner.invoke(app, ["users", "revoke-token", "anna@org.ru", "crm", "--db", sqlite_url]).exit_code == 0
    assert resolve_bearer(engine, secret, now=datetime.now(UTC)) is None

    assert runner.invoke(app, ["users", "disable", "ivan@operator.ru", "--db", sqlite_url]).exit_code == 0
    assert authenticate(engine, "ivan@operator.ru", "supervisor password") is None
    engine.dispose()


def test_bad_input_is_exit_2_with_one_line(sqlite_url, tmp_path):
    cases = [
        (["users", "add", "x@y.ru"], None),  # neither --organizer nor --staff
        (["users", "add", "x@y.ru", "--staff", "boss"], None),
        (["users", "add", "x@y.ru", "--organizer", "999"], "a long enough password\na long enough password\n"),  # no such organizer
        (["users", "add", "x@y.ru", "--staff", "support", "--password-file", str(tmp_path / "missing")], None),
        (["users", "add", "x@y.ru", "--staff", "support"], "short\nshort\n"),
        (["users", "add", "x@y.ru", "--staff", "support"], None),  # no terminal, nothing on stdin: not getpass's «Aborted.» (exit 1)
        (["users", "add", "x@y.ru", "--staff", "support"], "a long enough password\nanother password!\n"),
        (["users", "disable", "nobody@y.ru"], None),
        (["users", "token", "nobody@y.ru", "--name", "crm"], None),
        (["users", "revoke-token", "nobody@y.ru", "crm"], None),
    ]
    for args, stdin in cases:
        r = runner.invoke(app, [*args, "--db", sqlite_url], input=stdin)
        assert r.exit_code == 2, (args, r.output)
        assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error: "), (args, r.stderr)


def test_a_password_is_never_an_argument():
    r = runner.invoke(app, ["users", "add", "x@y.ru", "--staff", "support", "--password", "secret123456"])
    assert r.exit_code == 2 and "--password" in r.stderr
