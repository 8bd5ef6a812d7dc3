"""`make demo` does not end on links to the stack it has just stopped; it points to `make up`.

Used to go wrong: the summary listed Prefect UI links to every claim's run, then the demo stopped
the stack, so each link led to a dead port.
"""
from __future__ import annotations

from pathlib import Path

from cli.demo import closing_lines
from cli.stack import Stack

LINKS = ["Flow runs in the Prefect UI (named after the claims):", "  VZ-1: http://127.0.0.1:4321/runs/flow-run/abc"]


def test_a_stopped_demo_prints_no_link_and_points_to_make_up():
    stack = Stack(root=Path("var/demo-x"), prefect_port=4321, api_port=8321)
    lines = closing_lines(stack, LINKS, kept_up=False)
    text = "\n".join(lines)
    assert "127.0.0.1" not in text and "http" not in text
    assert "stopped" in text and "`make up`" in text and "VOZVRAT_DEMO_KEEP_UP=1 make demo" in text


def test_a_demo_kept_up_lists_its_runs_with_the_live_addresses():
    stack = Stack(root=Path("var/demo-x"), prefect_port=4321, api_port=8321)
    lines = closing_lines(stack, LINKS, kept_up=True)
    assert "http://127.0.0.1:4321" in lines[0] and "http://127.0.0.1:8321/docs" in lines[0] and "Ctrl+C" in lines[0]
    assert lines[1:] == LINKS
