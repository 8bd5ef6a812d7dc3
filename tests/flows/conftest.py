"""A real embedded stack for the flow tests: Prefect server (SQLite), the deployments served, the run
starter, the API, an aiosmtpd sink and the acquirer stand-in, on free ports, started once for the
package's tests."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest

from cli.stack import Stack

# What a stack exports to its callers. A value left in the environment by another stack (or a shell)
# must not leak in: Stack.env() keeps an outside PUBLIC_URL or link secret, as an operator's would.
_STACK_OWNED = ("VOZVRAT_PUBLIC_URL", "VOZVRAT_LINK_SECRET", "VOZVRAT_LINK_SECRET_FILE", "VOZVRAT_SECRET_KEY_FILE")


@contextmanager
def running_stack(root: Path) -> Iterator[Stack]:
    """The embedded stack on free ports, this process's settings pointed at it, all of it undone on exit.

    Use it from one fixture per package or module: a package-scoped fixture requested from another package
    is cached apart from its own package's, and the two stacks' environments would overlay each other."""
    s = Stack.on_free_ports(root)
    mp = pytest.MonkeyPatch()
    for key in _STACK_OWNED:
        mp.delenv(key, raising=False)
    # The run starter sweeps every 2 s for claims quiet for 3 s: a lost run is found while a test polls.
    mp.setenv("VOZVRAT_SWEEP_INTERVAL_S", "2")
    mp.setenv("VOZVRAT_SWEEP_GRACE_S", "3")
    # No re-run automation on this stack's server: a crashed run is replaced at once.
    mp.setenv("VOZVRAT_CRASH_RERUN_GRACE_S", "0")
    try:
        s.start()
    except BaseException:
        s.stop()  # a part that did not come up in time: the parts already started must not outlive the test
        mp.undo()
        raise
    for key, value in s.env().items():
        mp.setenv(key, value)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from models.db import get_engine
    from models.settings import get_settings

    get_settings.cache_clear()
    get_engine.cache_clear()
    try:
        # Prefect reads its settings once per process: point this process's client at the stack
        # explicitly, or it would quietly start a temporary server of its own.
        with temporary_settings(updates={PREFECT_API_URL: s.prefect_api_url}):
            yield s
    finally:
        s.stop()
        mp.undo()
        get_settings.cache_clear()
        get_engine.cache_clear()


@pytest.fixture(scope="package")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("stack")) as s:
        yield s


@pytest.fixture(scope="package")
def site_key(stack) -> dict[str, str]:
    """The operator's site: buyer endpoints take its service key (or that order's buyer token, issue 10)."""
    from datetime import UTC, datetime

    from models.db import get_engine
    from tasks.auth import create_service_key

    return {"Authorization": f"Bearer {create_service_key(get_engine(), 'site', now=datetime.now(UTC))}"}


def wait_for(what: str, check: Callable[[], object], timeout: float = 120.0, interval: float = 0.3):
    """Poll a condition the system reaches on its own (a flow run finishing); not a clock wait."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def mail_in(folder: Path) -> list:
    parser = BytesParser(policy=policy.default)
    return [parser.parsebytes(p.read_bytes()) for p in sorted(folder.glob("*.eml"))]


def body_text(message) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


def claim_run(claim_id: int, engine=None) -> str:
    """The claim's flow run, once the run starter has created it."""
    from sqlalchemy import select

    from models.db import get_engine
    from models.tables import Claim

    def run_id():
        with (engine or get_engine()).connect() as conn:
            return conn.execute(select(Claim.flow_run_id).where(Claim.id == claim_id)).scalar_one()

    return wait_for(f"claim {claim_id}'s run created", run_id)


def run_of(flow_run_id: str):
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


def run_state(flow_run_id: str) -> str | None:
    run = run_of(flow_run_id)
    return run.state.type.value if run.state else None


def waiting_in(flow_run_id: str, claim_state: str) -> bool:
    """Suspended, waiting in this claim state (the pause key names it: claim-<id>-<state>-v<version>)."""
    from tasks.run_actions import paused_in

    state = run_of(flow_run_id).state
    return bool(state and state.type.value == "PAUSED" and paused_in(state.state_details.pause_key) == claim_state)
