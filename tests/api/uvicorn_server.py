"""A real API server for a test: `uvicorn api.app:app` in its own process on a free port.

The database URL and every other setting come from the environment given, as in production; the
server's log goes to a file the failing test can show.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from cli.stack import free_port

REPO = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    """A port nothing listens on (taken from the OS, then released)."""
    return free_port()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def api_server(env: dict[str, str], log: Path, *, startup_timeout: float = 60.0, port: int | None = None) -> Iterator[str]:
    """Start the API with these settings and yield its base URL; stop it (its process group) after.
    `port`: a port chosen beforehand (when the settings name the server's own URL); a free one otherwise."""
    port = port or free_port()
    full_env = {**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING", **env}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.app:app", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            cwd=REPO, env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + startup_timeout
        while not _listening(port):
            if proc.poll() is not None:
                raise RuntimeError(f"the API exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the API did not listen within {startup_timeout:.0f}s:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)
        base_url = f"http://127.0.0.1:{port}"
        # Readiness, as `make up` waits for it: the first request warms the process (imports, pools).
        httpx.get(base_url + "/health", timeout=30)
        yield base_url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
