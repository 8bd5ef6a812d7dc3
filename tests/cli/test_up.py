"""`make up` with a port already taken exits non-zero with one line, and never announces itself up.

Used to go wrong: the health check of the taken port answered for the program already there (an
earlier `make up`), so the stack printed «vozvrat is up» with its own part dead.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cli.stack import PortInUse, Stack, free_port, port_taken

REPO = Path(__file__).resolve().parents[2]
PORT_VARIABLES = ["VOZVRAT_PREFECT_PORT", "VOZVRAT_API_PORT", "VOZVRAT_SMTP_PORT", "VOZVRAT_ACQUIRER_PORT", "VOZVRAT_INBOUND_SMTP_PORT"]


@pytest.fixture
def occupied_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize("taken", PORT_VARIABLES)
def test_make_up_on_a_taken_port_exits_1_with_one_line_and_starts_nothing(taken, occupied_port, tmp_path):
    env = {**os.environ, "VOZVRAT_VAR": str(tmp_path / "var")}
    env.update({variable: str(free_port()) for variable in PORT_VARIABLES})
    env[taken] = str(occupied_port)
    result = subprocess.run([sys.executable, "-m", "cli.up"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"port {occupied_port}" in lines[0] and taken in lines[0]
    assert "is up" not in result.stdout
    assert not (tmp_path / "var").exists(), "nothing may be started or written"


def test_check_ports_names_the_part_and_passes_on_free_ports(occupied_port, tmp_path):
    stack = Stack.on_free_ports(tmp_path)
    stack.check_ports()
    stack.api_port = occupied_port
    with pytest.raises(PortInUse, match=f"port {occupied_port} for the API"):
        stack.check_ports()
    stack.check_ports(api=False)  # a stack without its API does not need the port
    assert port_taken(occupied_port) and not port_taken(free_port())


def test_make_up_mirrors_card_orders_to_the_acquirer_stand_in(tmp_path):
    """Sample sales imported into `make up` used to fail every card refund («Payment doesn't exist»)."""
    import sqlite3

    from cli.up import PaymentMirror

    db = tmp_path / "v.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE ticket_order (id INTEGER PRIMARY KEY, payment_method TEXT, acquirer_payment_id TEXT, payment_amount INTEGER)")
        conn.executemany("INSERT INTO ticket_order VALUES (?, ?, ?, ?)",
                         [(1, "card", "p1", 1000), (2, "cash", None, 500), (3, "card", "p3", 2500)])

    class FakeStack:
        def __init__(self):
            self.seen: dict[str, int] = {}

        def register_payments(self, payments):
            self.seen.update(payments)

    stack = FakeStack()
    mirror = PaymentMirror(stack, f"sqlite:///{db}")
    mirror.sync()
    assert stack.seen == {"p1": 1000, "p3": 2500}
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO ticket_order VALUES (4, 'card', 'p4', 700)")
    stack.seen.clear()
    mirror.sync()
    assert stack.seen == {"p4": 700}, "only new orders are sent"


def test_the_banner_says_empty_only_while_it_is_and_says_when_the_kill_switch_holds_mail(tmp_path, monkeypatch):
    """Used to go wrong: a restarted `make up` said «The database starts empty» over a database full of
    orders, and with VOZVRAT_OUTBOUND_EMAIL_ENABLED=false it announced itself up without a word about
    every message waiting in the outbox."""
    from datetime import UTC, datetime

    from cli.up import SAMPLE_HINT, notes
    from models.db import make_engine
    from models.migrate import upgrade
    from tests import factories as f

    url = f"sqlite:///{tmp_path / 'v.db'}"
    upgrade(url)
    monkeypatch.setenv("VOZVRAT_OUTBOUND_EMAIL_ENABLED", "true")
    assert notes(url) == [SAMPLE_HINT]
    engine = make_engine(url)
    with engine.begin() as conn:
        f.order(conn, created_at=datetime(2026, 11, 1, tzinfo=UTC))
    engine.dispose()
    assert notes(url) == []
    monkeypatch.setenv("VOZVRAT_OUTBOUND_EMAIL_ENABLED", "false")
    (held,) = notes(url)
    assert "outbound mail is HELD" in held and "VOZVRAT_OUTBOUND_EMAIL_ENABLED=false" in held
    # The database's switch, thrown live (vozvrat mail hold), is said too, with who held it.
    from tasks.accounts import create_user
    from tasks.mail_switch import set_mail_switch

    monkeypatch.setenv("VOZVRAT_OUTBOUND_EMAIL_ENABLED", "true")
    engine = make_engine(url)
    anna = create_user(engine, login="anna@example.ru", password="correct horse battery", kind="staff", role="supervisor",
                       now=datetime(2026, 11, 1, tzinfo=UTC)).principal
    set_mail_switch(engine, held=True, principal=anna, now=datetime(2026, 11, 2, 8, 15, tzinfo=UTC), reason="взлом [srv]")
    engine.dispose()
    (held,) = notes(url)
    assert "outbound mail is HELD" in held and "staff:supervisor:anna@example.ru since 2026-11-02 08:15" in held and r"взлом \[srv]" in held
    assert notes(f"sqlite:///{tmp_path / 'missing' / 'x.db'}")[0] == SAMPLE_HINT  # unreadable: the hint, no crash
