import json

from sqlalchemy import inspect
from typer.testing import CliRunner

from cli.main import app
from models.db import make_engine


def test_db_upgrade_builds_the_named_database_and_is_repeatable(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    monkeypatch.setenv("VOZVRAT_DATABASE_URL", url)
    from models.settings import get_settings

    get_settings.cache_clear()
    try:
        for _ in range(2):
            result = CliRunner().invoke(app, ["db", "upgrade"])
            assert result.exit_code == 0, result.output
    finally:
        get_settings.cache_clear()
    tables = set(inspect(make_engine(url)).get_table_names())
    assert {"claim", "claim_transition", "outbox", "ticket", "event", "payout", "regime", "document", "alembic_version"} <= tables


def test_db_upgrade_of_an_unreachable_database_is_one_line_and_exit_2():
    result = CliRunner().invoke(app, ["db", "upgrade", "--url", "postgresql://nobody@127.0.0.1:1/none"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot upgrade")


def test_bench_transitions_prints_one_json_line_with_both_rates():
    result = CliRunner().invoke(app, ["bench", "transitions", "--claims", "300", "--chunk-size", "100", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["claims"] == figures["paid"] == 300
    assert figures["audit_rows"] == 4 * 300 and figures["outbox_rows"] == 2 * 300
    assert figures["claims_per_s"] > 0 and figures["raw_insert_rows_per_s"] > 0
