"""A dead dependency is a clear 503, not a crash (issue 9, item 5): real uvicorn servers on broken databases.

Used to: with the database down every endpoint answered a plain-text 500 and `/health` hung for 10 s;
the CLI printed a traceback.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.api.uvicorn_server import REPO, api_server, closed_port

ENDPOINTS = [
    ("post", "/claims", {"ticket_id": 1, "reason": "voluntary"}),
    ("post", "/claims/VZ-0000001-1/documents", {"kind": "other"}),
    ("get", "/claims/VZ-0000001-1", None),
    ("post", "/claims/VZ-0000001-1/withdrawal", {}),
    ("post", "/buyer/session", {"order_number": "ORD-1", "email": "buyer@example.ru"}),
    ("post", "/buyer/session/verify", {"order_number": "ORD-1", "code": "123456"}),
    ("get", "/organizer/claims/1", None),
    ("post", "/organizer/claims/1/decision", {"decision": "approve"}),
    ("post", "/organizer/claims/1/extension", {"reason": "Проверка документов"}),
    ("post", "/organizer/decisions", {"claim_ids": [1], "decision": "approve"}),
]

# The other dependencies are unreachable too: the report must still come within a second.
NOTHING_ELSE = {
    "PREFECT_API_URL": f"http://127.0.0.1:{closed_port()}/api",
    "VOZVRAT_SMTP_PORT": str(closed_port()),
    "VOZVRAT_ACQUIRER_API_URL": f"http://127.0.0.1:{closed_port()}/v3",
    "VOZVRAT_INBOUND_SMTP_PORT": str(closed_port()),
}


def _unopenable_sqlite(tmp_path) -> str:
    # A path under a regular file cannot be opened by anyone, root included (chmod would not stop root).
    (tmp_path / "not-a-directory").write_text("")
    return f"sqlite:///{tmp_path / 'not-a-directory' / 'vozvrat.db'}"


@pytest.fixture(scope="module", params=["postgresql-closed-port", "sqlite-unopenable"])
def dead_database_server(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    url = (f"postgresql://postgres@127.0.0.1:{closed_port()}/vozvrat" if request.param.startswith("postgresql")
           else _unopenable_sqlite(root))
    with api_server({"VOZVRAT_DATABASE_URL": url, **NOTHING_ELSE}, root / "api.log") as base_url:
        yield base_url


def _assert_database_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "5"
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"detail": [{"loc": ["database"], "type": "database_unavailable",
                                    "msg": "База данных временно недоступна. Ничего не записано, повторите запрос позже."}]}


def test_every_endpoint_answers_503_with_retry_after_and_a_russian_message(dead_database_server):
    with httpx.Client(base_url=dead_database_server, headers={"Authorization": "Bearer some-token"}, timeout=10) as client:
        for method, path, body in ENDPOINTS:
            started = time.monotonic()
            _assert_database_unavailable(client.request(method, path, json=body))
            assert time.monotonic() - started < 2, path


def test_health_answers_within_a_second_and_names_the_database(dead_database_server):
    started = time.monotonic()
    r = httpx.get(dead_database_server + "/health", timeout=10)
    assert time.monotonic() - started < 1.0
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    report = r.json()
    assert report["status"] == "unavailable"
    assert {name: dep["status"] for name, dep in report["dependencies"].items()} == {
        "database": "down", "prefect": "down", "smtp": "down", "acquirer": "down", "inbound_mail": "down"}
    assert report["message"] == "Недоступны: база данных, Prefect, SMTP, эквайер, приём писем."


@pytest.fixture
def hung_postgres():
    """A PostgreSQL that takes the TCP connection and never answers (a hung server, a stopped proxy)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)  # never accept(): the kernel completes handshakes, nobody speaks
        yield f"postgresql://postgres@127.0.0.1:{listener.getsockname()[1]}/vozvrat"


def test_a_hung_database_is_503_after_the_connect_timeout_and_health_still_answers_within_a_second(hung_postgres, tmp_path):
    """Used to: with no connect timeout a request waited on a silent server for as long as TCP lasts."""
    with api_server({"VOZVRAT_DATABASE_URL": hung_postgres, **NOTHING_ELSE}, tmp_path / "api.log") as base_url:
        started = time.monotonic()
        r = httpx.get(base_url + "/health", timeout=10)
        assert time.monotonic() - started < 1.0
        assert r.status_code == 503
        assert r.json()["dependencies"]["database"] == {"status": "down", "latency_ms": None, "error": "нет ответа за 0.7 с"}
        started = time.monotonic()
        _assert_database_unavailable(httpx.post(base_url + "/claims", json={"ticket_id": 1, "reason": "voluntary"}, timeout=30,
                                                headers={"Authorization": "Bearer vzs_some-key"}))
        assert time.monotonic() - started < 8  # libpq's connect_timeout (3 s), not forever


def test_health_is_200_when_only_the_database_is_up_and_names_what_is_down(sqlite_url, tmp_path):
    with api_server({"VOZVRAT_DATABASE_URL": sqlite_url, **NOTHING_ELSE}, tmp_path / "api.log") as base_url:
        started = time.monotonic()
        r = httpx.get(base_url + "/health", timeout=10)
        assert time.monotonic() - started < 1.0
    assert r.status_code == 200 and "retry-after" not in r.headers
    report = r.json()
    assert report["status"] == "degraded" and report["message"] == "Недоступны: Prefect, SMTP, эквайер, приём писем."
    assert report["dependencies"]["database"]["status"] == "up"
    assert {report["dependencies"][n]["status"] for n in ("prefect", "smtp", "acquirer", "inbound_mail")} == {"down"}


def test_health_reports_the_inbound_mail_server(sqlite_url, tmp_path):
    """The inbound SMTP server for claims by email (tasks/inbound_mail.py) is a dependency of its own:
    up while it greets, down (and named in Russian) once it has stopped."""
    from models.db import make_engine
    from tasks.inbound_mail import InboundConfig, start_inbound

    engine = make_engine(sqlite_url)
    inbound = start_inbound(engine, port=0, config=InboundConfig(refunds_address="vozvrat@example.ru", own_addresses=frozenset(),
                                                                 max_bytes=100_000))
    env = {"VOZVRAT_DATABASE_URL": sqlite_url, **NOTHING_ELSE, "VOZVRAT_INBOUND_SMTP_PORT": str(inbound.port)}
    stopped = False
    try:
        with api_server(env, tmp_path / "api.log") as base_url:
            up = httpx.get(base_url + "/health", timeout=10).json()
            inbound.stop()
            stopped = True
            down = httpx.get(base_url + "/health", timeout=10).json()
    finally:
        if not stopped:
            inbound.stop()
        engine.dispose()
    assert up["dependencies"]["inbound_mail"]["status"] == "up" and "приём писем" not in up["message"]
    assert down["dependencies"]["inbound_mail"]["status"] == "down" and "приём писем" in down["message"]


@pytest.mark.parametrize("kind", ["postgresql-closed-port", "sqlite-unopenable"])
def test_cli_exits_2_with_one_line_when_the_database_is_unreachable(kind, tmp_path):
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/vozvrat" if kind.startswith("postgresql") else _unopenable_sqlite(tmp_path)
    result = subprocess.run([sys.executable, "-m", "cli", "organizers", "token", "1", "--db", url],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    # An unreachable server is "unavailable"; a SQLite file that cannot be opened is "no database here"
    # (cli/errors.py tells the user to start the stack or build it).
    start = "error: database unavailable: " if kind.startswith("postgresql") else "error: no database here (unable to open database file)"
    assert line.startswith(start) and line.endswith("check VOZVRAT_DATABASE_URL or --db"), line
    assert ("Connection refused" if kind.startswith("postgresql") else "unable to open database file") in line


def test_health_says_when_the_kill_switch_holds_outbound_mail(sqlite_url, tmp_path):
    """Used to go wrong: with VOZVRAT_OUTBOUND_EMAIL_ENABLED=false `make up` and /health said «all up» while
    no message left: an operator who forgot the switch had nothing telling them why buyers got no mail."""
    env = {"VOZVRAT_DATABASE_URL": sqlite_url, **NOTHING_ELSE}
    with api_server(env | {"VOZVRAT_OUTBOUND_EMAIL_ENABLED": "false"}, tmp_path / "held.log") as base_url:
        held = httpx.get(base_url + "/health", timeout=10).json()
    with api_server(env | {"VOZVRAT_OUTBOUND_EMAIL_ENABLED": "true"}, tmp_path / "sending.log") as base_url:
        sending = httpx.get(base_url + "/health", timeout=10).json()
    assert held["outbound_email"] == "held"
    assert held["message"].endswith("Исходящая почта остановлена (VOZVRAT_OUTBOUND_EMAIL_ENABLED=false): письма ждут в очереди.")
    assert sending["outbound_email"] == "sending" and "почта" not in sending["message"]
