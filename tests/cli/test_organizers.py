from typer.testing import CliRunner

from cli.main import app
from models.db import make_engine
from tasks.intake import organizer_for_token
from tests import factories as f


def test_token_is_printed_once_and_identifies_the_organizer(sqlite_url):
    engine = make_engine(sqlite_url)
    with engine.begin() as conn:
        org = f.organizer(conn)
    result = CliRunner().invoke(app, ["organizers", "token", str(org), "--db", sqlite_url])
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    assert organizer_for_token(engine, token) == org
    assert organizer_for_token(engine, token + "x") is None


def test_unknown_organizer_is_one_line_and_exit_2(sqlite_url):
    result = CliRunner().invoke(app, ["organizers", "token", "999", "--db", sqlite_url])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == ["error: no organizer with id 999"]
