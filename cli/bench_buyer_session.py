"""`python -m cli.bench_buyer_session`: does POST /buyer/session answer a real order slower than an
unknown one? A real API server (uvicorn, its own process, a fresh SQLite database), N requests of
each kind interleaved over HTTP; prints one JSON line with the median and p90 of each and their
difference. `--floor-ms` sets VOZVRAT_BUYER_CODE_FLOOR_MS for the server (0: no floor); `--repo`
runs another checkout's API (to measure a revision before a change). Outbound mail is off (the
code stays in the outbox); the per-address limit is off for the run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200, help="requests of each kind")
    parser.add_argument("--floor-ms", type=int, default=None, help="VOZVRAT_BUYER_CODE_FLOOR_MS (default: the setting's default)")
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose API to run")
    args = parser.parse_args(argv)

    from sqlalchemy import insert

    from models.db import make_engine
    from models.migrate import upgrade
    from models.tables import Order

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        engine = make_engine(url)
        now = datetime.now(UTC)
        with engine.begin() as conn:
            conn.execute(insert(Order.__table__), [
                {"number": f"T-{i}", "buyer_name": f"Покупатель {i}", "buyer_email": f"t{i}@example.ru", "buyer_phone": "", "channel": "site",
                 "payment_method": "card", "acquirer_payment_id": f"pay-{i}", "created_at": now - timedelta(days=3)} for i in range(args.requests)
            ])
        engine.dispose()
        env = {**os.environ, "VOZVRAT_DATABASE_URL": url, "VOZVRAT_SECRET_KEY": Fernet.generate_key().decode(), "VOZVRAT_DATA_DIR": tmp,
               "VOZVRAT_OUTBOUND_EMAIL_ENABLED": "false", "VOZVRAT_BUYER_CODE_REQUESTS_PER_IP": "0", "PREFECT_LOGGING_LEVEL": "WARNING"}
        if args.floor_ms is not None:
            env["VOZVRAT_BUYER_CODE_FLOOR_MS"] = str(args.floor_ms)
        port = _free_port()
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.app:app", "--port", str(port), "--log-level", "warning"],
                                cwd=args.repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base, timeout=30) as http:
                for _ in range(300):
                    try:
                        http.get("/health")
                        break
                    except httpx.TransportError:
                        time.sleep(0.1)
                times: dict[str, list[float]] = {"real": [], "unknown": []}
                for i in range(args.requests):  # interleaved: load drifts hit both kinds alike
                    for kind, body in (("real", {"order_number": f"T-{i}", "email": f"t{i}@example.ru"}),
                                       ("unknown", {"order_number": f"NO-{i}", "email": f"t{i}@example.ru"})):
                        started = time.perf_counter()
                        r = http.post("/buyer/session", json=body)
                        times[kind].append((time.perf_counter() - started) * 1000)
                        assert r.status_code == 202, r.text
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    def stats(values: list[float]) -> dict[str, float]:
        ordered = sorted(values)
        return {"median_ms": round(statistics.median(ordered), 2), "p90_ms": round(ordered[int(len(ordered) * 0.9)], 2)}

    real, unknown = stats(times["real"]), stats(times["unknown"])
    print(json.dumps({"bench": "buyer_session_timing", "repo": str(args.repo), "floor_ms": args.floor_ms, "requests_each": args.requests,
                      "real_order": real, "unknown_order": unknown, "median_difference_ms": round(real["median_ms"] - unknown["median_ms"], 2),
                      "machine": platform.node(), "cpus": os.cpu_count(), "loadavg_1m": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
