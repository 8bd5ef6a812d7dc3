"""The `vozvrat` process work pool and its concurrency, set on the Prefect server idempotently.

Two limits share a burst between workers (docs/deploy.md, "Concurrency"):
- the pool's concurrency limit (VOZVRAT_POOL_CONCURRENCY, default 8): flow runs Pending or Running
  in the whole pool at once, whatever the number of workers; what the claims database and the
  acquirer bear;
- each worker's `--limit` (VOZVRAT_WORKER_LIMIT, default 4, `vozvrat deploy worker`): runs one worker
  holds at once. Without it the first worker to poll takes a whole burst (50 claims seen on one
  worker while the other idled); with it the rest stays Scheduled for the next worker's poll.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

POOL_NAME = os.environ.get("VOZVRAT_POOL", "vozvrat")
POOL_CONCURRENCY = int(os.environ.get("VOZVRAT_POOL_CONCURRENCY", "8"))
WORKER_LIMIT = int(os.environ.get("VOZVRAT_WORKER_LIMIT", "4"))


@dataclass(frozen=True)
class PoolState:
    name: str
    type: str
    concurrency_limit: int | None
    outcome: str  # created | updated | unchanged


def ensure_work_pool(*, name: str = POOL_NAME, concurrency_limit: int = POOL_CONCURRENCY) -> PoolState:
    """Create the process pool with its concurrency limit, or set the limit on the existing one."""
    if concurrency_limit < 1:
        raise ValueError(f"pool concurrency {concurrency_limit}: at least 1")
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            pool = client.create_work_pool(WorkPoolCreate(
                name=name, type=ProcessWorker.type, concurrency_limit=concurrency_limit,
                base_job_template=ProcessWorker.get_default_base_job_template(),
                description="vozvrat flow runs; workers: `vozvrat deploy worker` (docs/deploy.md)"))
            return PoolState(pool.name, pool.type, pool.concurrency_limit, "created")
        if pool.type != ProcessWorker.type:
            raise ValueError(f"work pool {name!r} is of type {pool.type!r}; vozvrat runs on a process pool")
        if pool.concurrency_limit == concurrency_limit:
            return PoolState(pool.name, pool.type, pool.concurrency_limit, "unchanged")
        client.update_work_pool(name, WorkPoolUpdate(concurrency_limit=concurrency_limit))
        return PoolState(name, pool.type, concurrency_limit, "updated")


# --- a worker's own environment -------------------------------------------------------------------

HEARTBEAT_FREQUENCY_S = "30"  # Prefect's minimum; the heartbeat automation's grace is a few of these


def worker_environment(env: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The environment a worker passes to its runs, and what is wrong with it (empty when ready).

    A worker's runs get their settings from the worker's own environment, never from the deployment
    (docs/deploy.md, "Settings on every worker"): so a worker with a setting missing must not start,
    rather than fail every run it takes.
    """
    from pathlib import Path

    env = dict(env)
    problems: list[str] = []
    home = env.get("VOZVRAT_HOME", "").strip()
    if not home:
        problems.append("VOZVRAT_HOME is not set (the checkout with prefect.yaml and .venv on this host)")
    elif not (Path(home) / "prefect.yaml").is_file():
        problems.append(f"VOZVRAT_HOME={home} has no prefect.yaml (not a vozvrat checkout)")
    url = env.get("VOZVRAT_DATABASE_URL", "").strip()
    if not url:
        problems.append("VOZVRAT_DATABASE_URL is not set (postgresql://user@host/db, shared by every worker)")
    elif not url.startswith("postgresql"):
        problems.append("VOZVRAT_DATABASE_URL is not PostgreSQL: a SQLite file cannot be shared by workers on several hosts")
    if not env.get("PREFECT_API_URL", "").strip():
        problems.append("PREFECT_API_URL is not set (http://<prefect-server>:4200/api)")
    if not (env.get("VOZVRAT_SECRET_KEY", "").strip() or env.get("VOZVRAT_SECRET_KEY_FILE", "").strip()):
        problems.append("neither VOZVRAT_SECRET_KEY nor VOZVRAT_SECRET_KEY_FILE is set (the key for bank details)")
    storage = env.get("PREFECT_LOCAL_STORAGE_PATH", "").strip()
    if env.get("PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK", "").strip():
        pass  # a storage block every worker reaches (S3, a shared file system block)
    elif not storage:
        problems.append("PREFECT_LOCAL_STORAGE_PATH is not set (a folder shared by every worker, e.g. an NFS mount) "
                        "and no PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK")
    else:
        path = Path(storage).expanduser()
        if not path.is_absolute():
            problems.append(f"PREFECT_LOCAL_STORAGE_PATH={storage} is not an absolute path")
        elif not path.is_dir():
            problems.append(f"PREFECT_LOCAL_STORAGE_PATH={storage} does not exist (mount the shared result storage first)")
        elif home and path.resolve().is_relative_to(Path(home).resolve()):
            problems.append(f"PREFECT_LOCAL_STORAGE_PATH={storage} is inside the checkout; results belong on shared storage")
    env.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", HEARTBEAT_FREQUENCY_S)
    return env, problems
