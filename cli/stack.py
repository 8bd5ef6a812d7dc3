"""The embedded stack: a local Prefect server (SQLite), the deployments served, the API, an SMTP sink
and the acquirer stand-in, each a child process on 127.0.0.1. Used by `make up`, `make demo` and the
flow tests. Everything lives under one folder (default ./var) and stops with the stack.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_taken(port: int) -> bool:
    """Something already listens on 127.0.0.1:port (a bind fails; TIME_WAIT leftovers do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


class PortInUse(RuntimeError):
    """A port the stack needs is taken: starting anyway would report another program as our part."""


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Stack:
    root: Path
    prefect_port: int = 4200
    api_port: int = 8000
    smtp_port: int = 8025
    acquirer_port: int = 8765
    inbound_port: int = 2525  # claims by email: the inbound SMTP server for the refunds address
    database_url: str | None = None
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @classmethod
    def on_free_ports(cls, root: Path, **kw) -> Stack:
        return cls(root=root, prefect_port=free_port(), api_port=free_port(), smtp_port=free_port(), acquirer_port=free_port(),
                   inbound_port=free_port(), **kw)

    # --- addresses ----------------------------------------------------------------------------
    @property
    def prefect_api_url(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}/api"

    @property
    def prefect_ui_url(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def acquirer_api_url(self) -> str:
        return f"http://127.0.0.1:{self.acquirer_port}/v3"

    @property
    def mail_dir(self) -> Path:
        return self.root / "mail"

    @property
    def ledger_path(self) -> Path:
        return self.root / "acquirer-ledger.json"

    @property
    def key_path(self) -> Path:
        """The stack's own key for bank details, generated on first start (0600) and reused."""
        return self.root / "secret.key"

    def _own_key(self) -> bool:
        # A key given from outside (VOZVRAT_SECRET_KEY or a key file) wins; otherwise the stack's own.
        return not (os.environ.get("VOZVRAT_SECRET_KEY") or os.environ.get("VOZVRAT_SECRET_KEY_FILE"))

    def ensure_secret_key(self) -> None:
        if self._own_key():
            from models.crypto import ensure_key_file

            ensure_key_file(self.key_path)
        if not (os.environ.get("VOZVRAT_LINK_SECRET") or os.environ.get("VOZVRAT_LINK_SECRET_FILE")):
            from tasks.buyer_links import ensure_link_secret_file

            ensure_link_secret_file(self.root / "link.key")  # buyers' signed links and sign-in codes

    def env(self) -> dict[str, str]:
        """The environment every part (and the caller) shares: settings are configuration only."""
        env = dict(os.environ)
        env.update(
            PREFECT_API_URL=self.prefect_api_url,
            PREFECT_HOME=str(self.root / "prefect"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_UI_API_URL=self.prefect_api_url,
            PREFECT_RUNNER_POLL_FREQUENCY="1",
            # Flow runs send heartbeats; the automations `make up` applies (tasks/automations.py) crash silent ones.
            PREFECT_FLOWS_HEARTBEAT_FREQUENCY="30",
            PREFECT_LOGGING_LEVEL=env.get("PREFECT_LOGGING_LEVEL", "INFO"),
            # Results of claim runs persist, so a resumed run replays finished steps from them.
            PREFECT_LOCAL_STORAGE_PATH=str(self.root / "prefect" / "storage"),
            VOZVRAT_DATABASE_URL=self.database_url or f"sqlite:///{self.root / 'vozvrat.db'}",
            VOZVRAT_SMTP_HOST="127.0.0.1",
            VOZVRAT_SMTP_PORT=str(self.smtp_port),
            VOZVRAT_ACQUIRER_API_URL=self.acquirer_api_url,
            VOZVRAT_API_PORT=str(self.api_port),
            VOZVRAT_PREFECT_UI_URL=self.prefect_ui_url,
            VOZVRAT_INBOUND_SMTP_PORT=str(self.inbound_port),
            VOZVRAT_DATA_DIR=env.get("VOZVRAT_DATA_DIR") or str(self.root),  # documents and raw inbound mail
        )
        if self._own_key():
            env["VOZVRAT_SECRET_KEY_FILE"] = str(self.key_path)
        if not (os.environ.get("VOZVRAT_LINK_SECRET") or os.environ.get("VOZVRAT_LINK_SECRET_FILE")):
            env["VOZVRAT_LINK_SECRET_FILE"] = str(self.root / "link.key")
        env.setdefault("VOZVRAT_PUBLIC_URL", self.api_url)  # links in buyers' emails point at this stack's API
        return env

    # --- processes ----------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.processes[name] = subprocess.Popen(args, env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def _wait(self, name: str, ready, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.processes[name]
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see {self.root / (name + '.log')}")
            if ready():
                return
            time.sleep(0.2)
        raise TimeoutError(f"{name} not ready after {timeout:.0f}s; see {self.root / (name + '.log')}")

    def _http_ok(self, url: str) -> bool:
        try:
            return httpx.get(url, timeout=1).status_code < 500
        except httpx.HTTPError:
            return False

    def start_smtp_sink(self) -> None:
        self._spawn("smtp-sink", [PYTHON, "-m", "tasks.smtp_sink", "--port", str(self.smtp_port), "--dir", str(self.mail_dir)])
        self._wait("smtp-sink", lambda: _port_open(self.smtp_port), 30)

    def _spawn_acquirer(self) -> None:
        # No implicit payments: a refund is checked against a payment registered with its amount
        # (`register_payment`), as YooKassa checks it against what the buyer paid.
        self._spawn("acquirer", [PYTHON, "-m", "standins.yookassa", "--port", str(self.acquirer_port), "--ledger", str(self.ledger_path)])

    def start_acquirer(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._spawn_acquirer()
        self._wait("acquirer", lambda: _port_open(self.acquirer_port), 30)

    def register_payment(self, payment_id: str, amount_kopecks: int) -> None:
        """Tell the acquirer stand-in about a buyer's payment (the sale the refund will go back to)."""
        value = f"{amount_kopecks // 100}.{amount_kopecks % 100:02d}"
        r = httpx.post(f"http://127.0.0.1:{self.acquirer_port}/_standin/payments",
                       json={"id": payment_id, "amount": {"value": value, "currency": "RUB"}}, timeout=5)
        r.raise_for_status()


    def register_payments(self, payments: dict[str, int]) -> None:
        """Many buyers' payments (payment id -> kopecks paid) in one call: a stadium's sales."""
        items = [{"id": pid, "amount": {"value": f"{k // 100}.{k % 100:02d}", "currency": "RUB"}} for pid, k in payments.items()]
        for start in range(0, len(items), 20_000):
            r = httpx.post(f"http://127.0.0.1:{self.acquirer_port}/_standin/payments", json={"payments": items[start : start + 20_000]},
                           timeout=120)
            r.raise_for_status()

    def start_prefect_server(self) -> None:
        """(Re)start the Prefect server on its port, with its database kept (an outage ends)."""
        self._spawn("prefect-server", [PYTHON, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.prefect_port)])
        self._wait("prefect-server", lambda: self._http_ok(self.prefect_api_url + "/health"), 90)

    def start_deployments(self) -> None:
        self._spawn("deployments", [PYTHON, "-m", "flows.serve"])
        self._wait("deployments", self._deployments_registered, 90)

    def start_run_starter(self) -> None:
        """Creates and resumes claims' flow runs from the run_action table (flows/run_starter.py)."""
        self._spawn("run-starter", [PYTHON, "-m", "flows.run_starter"])
        self._wait("run-starter", lambda: True, 5)

    def stop_process(self, name: str) -> None:
        proc = self.processes.pop(name)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)

    def check_ports(self, *, api: bool = True) -> None:
        """Refuse to start on a taken port: its health check would answer for another program (an
        earlier `make up` still running), and the stack would announce itself up with a part missing."""
        ports = [("Prefect server", self.prefect_port, "VOZVRAT_PREFECT_PORT"), ("SMTP sink", self.smtp_port, "VOZVRAT_SMTP_PORT"),
                 ("acquirer stand-in", self.acquirer_port, "VOZVRAT_ACQUIRER_PORT"),
                 ("inbound mail server", self.inbound_port, "VOZVRAT_INBOUND_SMTP_PORT")]
        if api:
            ports.append(("API", self.api_port, "VOZVRAT_API_PORT"))
        for what, port, variable in ports:
            if port_taken(port):
                raise PortInUse(f"port {port} for the {what} is already in use (another `make up`?): stop that program or set {variable}")

    def start(self, *, runner: bool = True, api: bool = True) -> Stack:
        self.check_ports(api=api)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "prefect").mkdir(exist_ok=True)
        self.ensure_secret_key()
        self._spawn("smtp-sink", [PYTHON, "-m", "tasks.smtp_sink", "--port", str(self.smtp_port), "--dir", str(self.mail_dir)])
        self._spawn_acquirer()
        self._spawn("prefect-server", [PYTHON, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.prefect_port)])
        self._spawn_db_upgrade()
        # After the schema exists: it keeps every letter in inbound_letter, and drains what a crash left at start.
        self._spawn("inbound-mail", [PYTHON, "-m", "tasks.inbound_mail", "--port", str(self.inbound_port)])
        self._wait("smtp-sink", lambda: _port_open(self.smtp_port), 30)
        self._wait("acquirer", lambda: _port_open(self.acquirer_port), 30)
        self._wait("inbound-mail", lambda: _port_open(self.inbound_port), 30)
        self._wait("prefect-server", lambda: self._http_ok(self.prefect_api_url + "/health"), 90)
        if runner:
            self._spawn("deployments", [PYTHON, "-m", "flows.serve"])
            self._wait("deployments", self._deployments_registered, 90)
        if runner:
            self.create_automations()
            self.start_run_starter()
        if api:
            self._spawn("api", [PYTHON, "-m", "uvicorn", "api.app:app", "--host", "127.0.0.1", "--port", str(self.api_port), "--log-level", "warning"])
            self._wait("api", lambda: self._http_ok(self.api_url + "/health"), 60)
        return self

    def create_automations(self, timeout: float = 60) -> None:
        """The Prefect automations ops rely on (`vozvrat ops automations`), once their deployments are served."""
        deadline = time.monotonic() + timeout
        while True:
            done = subprocess.run([PYTHON, "-m", "cli", "ops", "automations"], env=self.env(), capture_output=True, text=True)
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"vozvrat ops automations failed: {done.stderr.strip()[-300:]}")
            time.sleep(1)

    def _spawn_db_upgrade(self) -> None:
        subprocess.run([PYTHON, "-m", "cli", "db", "upgrade"], env=self.env(), check=True, capture_output=True)

    def _deployments_registered(self) -> bool:
        try:
            r = httpx.post(self.prefect_api_url + "/deployments/filter", json={"deployments": {"name": {"any_": ["refund-claim"]}}}, timeout=2)
            return r.status_code == 200 and len(r.json()) > 0
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        for _name, proc in reversed(list(self.processes.items())):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for proc in self.processes.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.processes.clear()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
