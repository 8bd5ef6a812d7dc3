"""`vozvrat events cancel|replace`: one command body for both actions; each refuses bad input in one line."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cli.main import app


@pytest.mark.parametrize("command", ["cancel", "replace"])
def test_a_chunk_size_below_one_is_refused_in_one_line(command: str) -> None:
    result = CliRunner().invoke(app, ["events", command, "7", "--reason", "Отмена", "--chunk-size", "0"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == ["error: --chunk-size is at least 1"]


@pytest.mark.parametrize(("command", "summary"), [("cancel", "Cancel an event"), ("replace", "Replace an event")])
def test_each_command_keeps_its_own_help(command: str, summary: str) -> None:
    result = CliRunner().invoke(app, ["events", command, "--help"])
    assert result.exit_code == 0
    assert summary in result.output and "--chunk-size" in result.output
