"""Every `vozvrat` command: the stack's database by default, and one line with exit 2 for bad input, an
unreachable or unmigrated database or a bad URL; no password ever printed."""
from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from cli.errors import mask_passwords
from cli.main import app
from cli.stack import Stack
from models.settings import Settings, get_settings


@pytest.fixture
def default_settings(monkeypatch, tmp_path):
    """No VOZVRAT_DATABASE_URL, in a fresh folder: what a new user has."""
    monkeypatch.delenv("VOZVRAT_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def one_line_exit_2(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_the_cli_and_the_stack_share_one_default_database(default_settings):
    default = make_url(Settings().database_url)
    stack_url = make_url(Stack(root=Path("var").absolute()).env()["VOZVRAT_DATABASE_URL"])
    assert Path(default.database).absolute() == Path(stack_url.database)


def test_before_make_up_a_command_says_so_and_leaves_no_stray_file(default_settings):
    # Used to go wrong: `vozvrat organizers token 1` made an empty ./vozvrat.db and printed a 71-line traceback.
    line = one_line_exit_2(CliRunner().invoke(app, ["organizers", "token", "1"]))
    assert "make up" in line and "vozvrat db upgrade" in line
    assert list(default_settings.iterdir()) == []


def test_db_upgrade_builds_the_default_database_under_var(default_settings):
    result = CliRunner().invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert (default_settings / "var" / "vozvrat.db").is_file()
    assert CliRunner().invoke(app, ["service-keys", "list"]).exit_code == 0


def test_an_unmigrated_database_is_one_line(tmp_path):
    empty = tmp_path / "empty.db"
    empty.touch()
    line = one_line_exit_2(CliRunner().invoke(app, ["service-keys", "list", "--db", f"sqlite:///{empty}"]))
    assert "not migrated" in line and "vozvrat db upgrade" in line


@pytest.mark.parametrize("args", [
    ["organizers", "token", "1"],
    ["service-keys", "create", "x"],
    ["sales", "import", "docs/sample-sales.jsonl", "--quiet"],
    ["db", "upgrade"],
])
def test_an_unreachable_database_never_shows_its_password(args, monkeypatch):
    url = "postgresql://vozvrat:hunter2secret@127.0.0.1:1/vozvrat"
    monkeypatch.setenv("VOZVRAT_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, args)
    finally:
        get_settings.cache_clear()
    line = one_line_exit_2(result)
    assert "hunter2secret" not in result.output
    assert "unavailable" in line or "cannot upgrade postgresql://vozvrat:***@" in line


def test_a_bad_database_url_is_one_line():
    line = one_line_exit_2(CliRunner().invoke(app, ["service-keys", "list", "--db", "nonsense://x"]))
    assert "invalid database URL" in line


@pytest.mark.parametrize(("args", "says"), [
    (["organizers", "token", "abc"], "vozvrat organizers token: Invalid value for 'organizer_id'"),
    (["organizers", "token"], "Missing argument"),
    (["no-such-command"], "No such command"),
    (["--bogus"], "No such option"),
    (["service-keys", "list", "--db"], "requires an argument"),
])
def test_bad_input_is_one_line_not_a_box(args, says):
    line = one_line_exit_2(CliRunner().invoke(app, args))
    assert says in line


def test_passwords_are_masked_in_any_url():
    assert mask_passwords("cannot reach postgresql+psycopg://u:p%40ss@db:5432/x or amqp://guest:guest@mq/") == (
        "cannot reach postgresql+psycopg://u:***@db:5432/x or amqp://guest:***@mq/")
    assert mask_passwords("host=db password=s3cret user=u") == "host=db password=*** user=u"
    assert mask_passwords("sqlite:///var/vozvrat.db") == "sqlite:///var/vozvrat.db"
