"""docs/lifecycle.md is generated from the transitions table and must never drift from it."""
from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from cli.db_commands import lifecycle_markdown
from cli.main import app
from states.lifecycle import ClaimState, Trigger, edges

DOC = Path(__file__).resolve().parents[2] / "docs" / "lifecycle.md"
runner = CliRunner()


def test_docs_lifecycle_md_is_up_to_date():
    assert DOC.exists(), f"{DOC} is missing: run `make diagram`"
    assert DOC.read_text(encoding="utf-8") == lifecycle_markdown(), f"{DOC} is stale: run `make diagram` and commit it"


def test_diagram_draws_every_edge_state_and_trigger():
    text = lifecycle_markdown()
    drawn = set(re.findall(r"^\s*(\w+) --> (\w+):", text, flags=re.M))
    assert drawn == edges()
    assert "[*] --> filed" in text
    for state in ClaimState:
        assert f'state "{state.value}" as {state.value}' in text
    for trigger in Trigger:
        assert re.search(rf": (.*\| )?{trigger.value}\b", text), trigger


def test_diagram_check_exits_1_on_a_stale_file_and_0_on_a_fresh_one(tmp_path):
    out = tmp_path / "lifecycle.md"
    out.write_text(lifecycle_markdown().replace("filed --> withdrawn", "filed --> paid"), encoding="utf-8")
    stale = runner.invoke(app, ["diagram", "--out", str(out), "--check"])
    assert stale.exit_code == 1
    assert "stale" in stale.stderr

    assert runner.invoke(app, ["diagram", "--out", str(out)]).exit_code == 0
    assert runner.invoke(app, ["diagram", "--out", str(out), "--check"]).exit_code == 0
    assert out.read_text(encoding="utf-8") == lifecycle_markdown()
