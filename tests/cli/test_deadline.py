"""`vozvrat deadline`: working days on the Russian production calendar."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli.main import app
from states.calendar import PUBLISHED_YEARS

runner = CliRunner()


@pytest.mark.parametrize(
    ("start", "n", "expected"),
    [
        ("2024-12-26", "10", {"deadline": "2025-01-20", "provisional": False}),
        ("2024-12-26", "2", {"deadline": "2024-12-28", "provisional": False}),
        ("2026-03-06", "1", {"deadline": "2026-03-10", "provisional": False}),
        (f"{max(PUBLISHED_YEARS)}-12-20", "20", None),
    ],
)
def test_deadline_json(start, n, expected):
    result = runner.invoke(app, ["deadline", "--from", start, "--working-days", n, "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    if expected is None:  # spans into the first year without published transfers
        assert data["provisional"] is True
        assert data["deadline"].startswith(str(max(PUBLISHED_YEARS) + 1))
    else:
        assert data == expected


def test_deadline_human_output():
    result = runner.invoke(app, ["deadline", "--from", "2024-12-26", "--working-days", "10"])
    assert result.exit_code == 0 and "2025-01-20" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "2024-12-26", "--working-days", "0"], "at least 1"),
        (["--from", "2024-12-26", "--working-days", "-3"], "at least 1"),
        (["--from", "2024-12-26", "--working-days", "ten"], "whole number"),
        (["--from", "26.12.2024", "--working-days", "10"], "--from: malformed date"),
        (["--from", "2024-02-30", "--working-days", "10"], "--from: malformed date"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args, message):
    result = runner.invoke(app, ["deadline", *args, "--json"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
