"""`vozvrat service-keys`: a key is shown once, listed by name only, and revoked at once."""
from __future__ import annotations

from datetime import UTC, datetime

from typer.testing import CliRunner

from cli.main import app
from models.db import make_engine
from tasks.auth import resolve_service_key


def run(*args):
    return CliRunner().invoke(app, ["service-keys", *args])


def test_create_list_revoke(sqlite_url):
    created = run("create", "sales-system", "--db", sqlite_url)
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip()
    assert secret.startswith("vzs_")
    engine = make_engine(sqlite_url)
    now = datetime.now(UTC)
    assert resolve_service_key(engine, secret, now=now).audit == "service:sales-system"

    listed = run("list", "--db", sqlite_url)
    assert "sales-system" in listed.stdout and "live" in listed.stdout and secret not in listed.stdout

    assert run("revoke", "sales-system", "--db", sqlite_url).exit_code == 0
    assert resolve_service_key(engine, secret, now=now) is None
    assert "revoked" in run("list", "--db", sqlite_url).stdout
    engine.dispose()


def test_mistakes_are_one_line_and_exit_2(sqlite_url):
    run("create", "site", "--db", sqlite_url)
    for args in (("create", "site"), ("revoke", "nobody"), ("create", "  ")):
        result = run(*args, "--db", sqlite_url)
        assert result.exit_code == 2, args
        assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")
