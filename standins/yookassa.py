"""A local stand-in for YooKassa's v3 refunds API, a real HTTP server (stdlib, threaded).

The product reaches it only through `acquirer_api_url` (the official SDK does not know it is talking
to a stand-in). What it does, as YooKassa does:

- HTTP Basic auth with shop id / secret key; otherwise 401 `invalid_credentials`.
- POST /v3/refunds needs an `Idempotence-Key` header (400 `invalid_request` otherwise). A repeated key
  with the same body replays the FIRST response byte for byte; the same key with another body is a
  400 `invalid_request` naming the `Idempotence-Key` parameter. Only 200 answers are remembered, so a
  request that got a 500 can be retried with the same key.
- A refund may not exceed what is left of the payment (amount minus pending and succeeded refunds).
- GET /v3/refunds/{id} returns the refund in its current state.
- Errors have YooKassa's shape: {"type": "error", "id", "code", "description", "parameter"?}.

Payments are registered explicitly with what the buyer paid: POST /_standin/payments {"id"?: 36 chars,
"amount": {"value", "currency"}} (the embedded stack: `Stack.register_payment`), or many at once with
{"payments": [{"id", "amount"}, ...]} (a stadium's sales, one ledger write). An unknown payment is a
400 `invalid_request` on `payment_id`, as YooKassa answers: the stand-in never invents a payment.

Admin endpoints (no auth; the stand-in listens on localhost):
- POST /_standin/faults   {"kind": "error_500" | "error_429" | "timeout" | "cancel" | "pending", "count": N,
                           "reason": "insufficient_funds" (cancel), "delay": seconds (timeout),
                           "status": 500..599 (error_500: which 5xx, default 500),
                           "apply": bool (500/timeout: was the refund made before the answer was lost;
                           default false for 500, true for timeout; a 429 is never applied),
                           "payment_id": id (only refunds of this payment meet the fault)}. Faults queue
                           up and hit the next POST /v3/refunds calls that pass auth and validation
                           (with `payment_id`, the next ones for that payment).
- POST /_standin/settle   {"refund_id"?: id, "status": "succeeded" | "canceled", "reason"?} settles one
                           pending refund, or all of them without refund_id.
- GET  /_standin/ledger   {"refunds": [...], "payments": [...]} current state.
- POST /_standin/reset    forgets pending faults (the ledger is kept).

Durability: every change is appended to a JSON-lines ledger file and fsynced before the answer leaves;
on start the file is replayed (payments, refunds, idempotency keys), so "refunded exactly once" holds
across stand-in restarts. Concurrent requests share fsyncs (group commit): each answer waits until an
fsync covering its own line has finished, so sixteen refunds in flight cost one disk flush, not sixteen.

Run: python -m standins.yookassa --port 8765 --ledger var/acquirer-ledger.json
     [--shop-id 100500 --secret-key test_standin_secret]  (defaults: VOZVRAT_ACQUIRER_* settings)
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["YooKassaStandIn", "main"]

_REFUND_PATH = re.compile(r"^/v3/refunds/([0-9a-f-]{36})$")


class _HttpError(Exception):
    def __init__(self, status: int, code: str, description: str, parameter: str | None = None):
        super().__init__(description)
        self.status, self.code, self.description, self.parameter = status, code, description, parameter

    def body(self) -> dict[str, Any]:
        body = {"type": "error", "id": str(uuid.uuid4()), "code": self.code, "description": self.description}
        if self.parameter:
            body["parameter"] = self.parameter
        return body


def _kopecks(amount: Any, parameter: str = "amount") -> int:
    try:
        if not isinstance(amount, dict) or amount.get("currency") != "RUB":
            raise ValueError
        value = Decimal(str(amount["value"]))
        if value <= 0 or value != value.quantize(Decimal("0.01")):
            raise ValueError
    except (KeyError, ValueError, InvalidOperation):
        raise _HttpError(400, "invalid_request", "Invalid amount: a positive RUB value with 2 decimals", parameter) from None
    return int(value * 100)


def _money(kopecks: int) -> dict[str, str]:
    return {"value": f"{kopecks // 100}.{kopecks % 100:02d}", "currency": "RUB"}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class _Fault:
    kind: str
    reason: str | None = None
    delay: float = 5.0
    apply: bool = False
    status: int = 500
    payment_id: str | None = None


@dataclass
class _State:
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    # idempotency key -> (sha256 of the canonical body, first 200 answer)
    keys: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)


class YooKassaStandIn:
    """The stand-in server. `start()` runs it in a daemon thread (tests); `serve_forever()` in the foreground."""

    def __init__(
        self,
        *,
        shop_id: str,
        secret_key: str,
        ledger_path: str | os.PathLike[str],
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.shop_id, self.secret_key = shop_id, secret_key
        self.ledger_path = Path(ledger_path)
        self._lock = threading.RLock()
        self._sync_lock = threading.Lock()
        self._written = 0  # ledger lines written (and flushed to the OS)
        self._synced = 0  # ledger lines known to be on disk
        self._ledger_file: Any = None
        self._faults: deque[_Fault] = deque()
        self._stopping = threading.Event()
        self._state = _State()
        self._replay_ledger()
        self._server = _Server((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def api_url(self) -> str:
        return f"http://{self._server.server_address[0]}:{self.port}/v3"

    def start(self) -> YooKassaStandIn:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="yookassa-standin", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers holding a "timeout" fault
        self._server.shutdown()
        self._server.server_close()
        if self._ledger_file is not None:
            self._ledger_file.close()
        if self._thread:
            self._thread.join(timeout=5)

    # ---- durable ledger --------------------------------------------------------------------------

    def _append(self, record: dict[str, Any]) -> int:
        """Write a ledger line (under the caller's lock) and apply it; returns its number. The caller
        makes it durable with `_durable(number)` before answering, outside the lock."""
        if self._ledger_file is None:
            self.ledger_path.parent.mkdir(parents=True, exist_ok=True)
            self._ledger_file = open(self.ledger_path, "a", encoding="utf-8")  # noqa: SIM115 - lives with the server
        self._ledger_file.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
        self._ledger_file.flush()
        self._written += 1
        self._apply(record)
        return self._written

    def _durable(self, line: int) -> None:
        """Return once ledger line `line` is on disk; one fsync serves every line written before it."""
        if line <= 0:
            return
        with self._sync_lock:
            if self._synced >= line:
                return
            with self._lock:
                target = self._written
                fileno = self._ledger_file.fileno()
            os.fsync(fileno)
            self._synced = target

    def _apply(self, record: dict[str, Any]) -> None:
        s = self._state
        if record["event"] == "payment":
            s.payments[record["payment"]["id"]] = record["payment"]
        elif record["event"] == "refund":
            s.refunds[record["refund"]["id"]] = record["refund"]
            if record.get("idempotency_key"):
                s.keys[record["idempotency_key"]] = (record["body_sha256"], record["refund"])
        elif record["event"] == "settle":
            s.refunds[record["refund"]["id"]] = record["refund"]

    def _replay_ledger(self) -> None:
        if not self.ledger_path.exists():
            return
        with open(self.ledger_path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    self._apply(json.loads(line))

    # ---- domain ----------------------------------------------------------------------------------

    def add_payments(self, items: list[dict[str, Any]]) -> int:
        """Register many payments ({"id", "amount"}) with one durable write; returns how many are known."""
        line = 0
        with self._lock:
            for item in items:
                payment_id, amount = item.get("id"), _kopecks(item.get("amount"))
                if not isinstance(payment_id, str) or len(payment_id) != 36:
                    raise _HttpError(400, "invalid_request", "Payment id must be 36 characters", "id")
                known = self._state.payments.get(payment_id)
                if known is not None:
                    if known["amount"] != _money(amount):
                        raise _HttpError(400, "invalid_request", "Payment with this id already exists with another amount", "id")
                    continue
                payment = {"id": payment_id, "status": "succeeded", "paid": True, "amount": _money(amount), "created_at": _now()}
                line = self._append({"event": "payment", "payment": payment})
        self._durable(line)
        return len(items)

    def add_payment(self, *, amount_kopecks: int, payment_id: str | None = None) -> dict[str, Any]:
        payment = self._add_payment(amount_kopecks=amount_kopecks, payment_id=payment_id)
        self._durable(self._written)
        return payment

    def _add_payment(self, *, amount_kopecks: int, payment_id: str | None = None) -> dict[str, Any]:
        with self._lock:
            payment_id = payment_id or str(uuid.uuid4())
            if len(payment_id) != 36:
                raise _HttpError(400, "invalid_request", "Payment id must be 36 characters", "id")
            known = self._state.payments.get(payment_id)
            if known is not None:
                # A payment is made once: registering it again must not raise what can be refunded.
                if known["amount"] != _money(amount_kopecks):
                    raise _HttpError(400, "invalid_request", "Payment with this id already exists with another amount", "id")
                return known
            payment = {
                "id": payment_id,
                "status": "succeeded",
                "paid": True,
                "amount": _money(amount_kopecks),
                "created_at": _now(),
            }
            self._append({"event": "payment", "payment": payment})
            return payment

    def _refunded_kopecks(self, payment_id: str) -> int:
        return sum(
            _kopecks(r["amount"])
            for r in self._state.refunds.values()
            if r["payment_id"] == payment_id and r["status"] in ("pending", "succeeded")
        )

    def _create_refund(self, key: str, raw_body: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw_body or b"{}")
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            raise _HttpError(400, "invalid_request", "Request body is not a JSON object") from None
        digest = hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        with self._lock:
            seen = self._state.keys.get(key)
            if seen is not None:
                if seen[0] != digest:
                    raise _HttpError(
                        400,
                        "invalid_request",
                        "Idempotence key duplicated: this key was used with other request parameters",
                        "Idempotence-Key",
                    )
                return seen[1]
        payment_id = body.get("payment_id")
        if not isinstance(payment_id, str) or len(payment_id) != 36:
            raise _HttpError(400, "invalid_request", "Invalid payment_id", "payment_id")
        amount = _kopecks(body.get("amount"))
        description = body.get("description")
        fault = self._next_fault(payment_id)
        if fault and (fault.kind == "error_429" or fault.kind in ("error_500", "timeout") and not fault.apply):
            self._raise_fault(fault)
        with self._lock:
            seen = self._state.keys.get(key)  # a concurrent twin may have won while we were unlocked
            if seen is not None:
                if seen[0] != digest:
                    raise _HttpError(400, "invalid_request", "Idempotence key duplicated", "Idempotence-Key")
                return seen[1]
            payment = self._state.payments.get(payment_id)
            if payment is None:
                raise _HttpError(400, "invalid_request", "Payment doesn't exist or access denied", "payment_id")
            left = _kopecks(payment["amount"]) - self._refunded_kopecks(payment_id)
            if amount > left:
                raise _HttpError(
                    400,
                    "invalid_request",
                    f"Refund amount exceeds the amount left to refund ({_money(left)['value']} RUB)",
                    "amount",
                )
            refund: dict[str, Any] = {
                "id": str(uuid.uuid4()),
                "payment_id": payment_id,
                "status": "succeeded",
                "amount": _money(amount),
                "created_at": _now(),
            }
            if description:
                refund["description"] = str(description)
            if fault and fault.kind == "cancel":
                refund["status"] = "canceled"
                refund["cancellation_details"] = {
                    "party": "yoo_money",
                    "reason": fault.reason or "general_decline",
                }
            elif fault and fault.kind == "pending":
                refund["status"] = "pending"
            line = self._append({"event": "refund", "refund": refund, "idempotency_key": key, "body_sha256": digest})
        self._durable(line)
        if fault and fault.kind in ("error_500", "timeout"):
            self._raise_fault(fault)  # apply=True: made, but the answer is lost
        return refund

    def _raise_fault(self, fault: _Fault) -> None:
        if fault.kind == "timeout":
            self._stopping.wait(fault.delay)
            raise _DropConnection()
        if fault.kind == "error_429":
            raise _HttpError(429, "too_many_requests", "Too many requests (stand-in fault)")
        raise _HttpError(fault.status, "internal_server_error", "Internal server error (stand-in fault)")

    def _next_fault(self, payment_id: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.payment_id in (None, payment_id):
                    self._faults.remove(fault)
                    return fault
            return None

    def add_faults(self, spec: dict[str, Any]) -> int:
        kind = spec.get("kind")
        if kind not in ("error_500", "error_429", "timeout", "cancel", "pending"):
            raise _HttpError(400, "invalid_request", "kind must be error_500, error_429, timeout, cancel or pending", "kind")
        count = int(spec.get("count", 1))
        status = int(spec.get("status", 500))
        if not 500 <= status <= 599:
            raise _HttpError(400, "invalid_request", "status must be a 5xx code", "status")
        fault = _Fault(
            kind=kind,
            reason=spec.get("reason"),
            delay=float(spec.get("delay", 5.0)),
            apply=bool(spec.get("apply", kind == "timeout")) and kind != "error_429",
            status=status,
            payment_id=spec.get("payment_id"),
        )
        with self._lock:
            self._faults.extend(fault for _ in range(count))
            return len(self._faults)

    def settle(self, spec: dict[str, Any]) -> list[dict[str, Any]]:
        status = spec.get("status", "succeeded")
        if status not in ("succeeded", "canceled"):
            raise _HttpError(400, "invalid_request", "status must be succeeded or canceled", "status")
        with self._lock:
            wanted = spec.get("refund_id")
            pending = [
                r for r in self._state.refunds.values()
                if r["status"] == "pending" and (wanted is None or r["id"] == wanted)
            ]
            if wanted is not None and not pending:
                raise _HttpError(404, "not_found", "No pending refund with this id", "refund_id")
            settled = []
            for refund in pending:
                refund = dict(refund, status=status)
                if status == "canceled":
                    refund["cancellation_details"] = {
                        "party": "yoo_money",
                        "reason": spec.get("reason") or "general_decline",
                    }
                self._append({"event": "settle", "refund": refund})
                settled.append(refund)
        self._durable(self._written)
        return settled

    def ledger(self) -> dict[str, Any]:
        with self._lock:
            return {
                "refunds": sorted(self._state.refunds.values(), key=lambda r: r["created_at"]),
                "payments": list(self._state.payments.values()),
            }

    def reset_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    # ---- HTTP ------------------------------------------------------------------------------------

    def _authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return user == self.shop_id and password == self.secret_key

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "yookassa-standin"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # request bodies may carry personal data; the ledger is the record

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body, ensure_ascii=False).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json;charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _json_body(self) -> dict[str, Any]:
                raw = self._body()
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    raise _HttpError(400, "invalid_request", "Request body is not JSON") from None
                if not isinstance(body, dict):
                    raise _HttpError(400, "invalid_request", "Request body is not a JSON object")
                return body

            def _dispatch(self, method: str) -> None:
                try:
                    status, body = self._route(method)
                except _HttpError as e:
                    status, body = e.status, e.body()
                except _DropConnection:
                    self.close_connection = True
                    return
                self._send(status, body)

            def _route(self, method: str) -> tuple[int, dict[str, Any]]:
                path = self.path.split("?", 1)[0]
                if path.startswith("/_standin/"):
                    return self._admin(method, path)
                if not path.startswith("/v3/"):
                    raise _HttpError(404, "not_found", "Unknown path")
                if not standin._authorized(self.headers.get("Authorization")):
                    self._body()
                    raise _HttpError(
                        401, "invalid_credentials",
                        "Authentication by given credentials failed. Check the shop id and secret key",
                    )
                if method == "POST" and path == "/v3/refunds":
                    raw = self._body()
                    key = self.headers.get("Idempotence-Key")
                    if not key:
                        raise _HttpError(400, "invalid_request", "Idempotence-Key header is required", "Idempotence-Key")
                    if len(key) > 64:
                        raise _HttpError(400, "invalid_request", "Idempotence-Key is longer than 64 characters", "Idempotence-Key")
                    return 200, standin._create_refund(key, raw)
                match = _REFUND_PATH.match(path)
                if method == "GET" and match:
                    with standin._lock:
                        refund = standin._state.refunds.get(match.group(1))
                    if refund is None:
                        raise _HttpError(404, "not_found", "Refund doesn't exist or access denied", "refund_id")
                    return 200, refund
                raise _HttpError(404, "not_found", "Unknown path")

            def _admin(self, method: str, path: str) -> tuple[int, dict[str, Any]]:
                if method == "GET" and path == "/_standin/ledger":
                    return 200, standin.ledger()
                if method != "POST":
                    raise _HttpError(404, "not_found", "Unknown admin path")
                body = self._json_body()
                if path == "/_standin/payments" and "payments" in body:
                    return 200, {"count": standin.add_payments(list(body["payments"] or []))}
                if path == "/_standin/payments":
                    return 200, standin.add_payment(
                        amount_kopecks=_kopecks(body.get("amount")), payment_id=body.get("id")
                    )
                if path == "/_standin/faults":
                    return 200, {"queued": standin.add_faults(body)}
                if path == "/_standin/settle":
                    return 200, {"settled": standin.settle(body)}
                if path == "/_standin/reset":
                    standin.reset_faults()
                    return 200, {"queued": 0}
                raise _HttpError(404, "not_found", "Unknown admin path")

            def do_GET(self) -> None:  # noqa: N802
                self._dispatch("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._dispatch("POST")

        return Handler


class _Server(ThreadingHTTPServer):
    # A mass cancellation opens VOZVRAT_ACQUIRER_CONCURRENCY connections at once: socketserver's
    # default listen backlog of 5 refuses some of them on a busy machine.
    request_queue_size = 128


class _DropConnection(Exception):
    """Close the connection without an answer (the client sees a timeout or a reset)."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m standins.yookassa", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--ledger", default="var/acquirer-ledger.json")
    parser.add_argument("--shop-id", default=None)
    parser.add_argument("--secret-key", default=None)
    args = parser.parse_args(argv)
    shop_id, secret_key = args.shop_id, args.secret_key
    if shop_id is None or secret_key is None:
        from models.settings import get_settings

        settings = get_settings()
        shop_id = shop_id or settings.acquirer_shop_id
        secret_key = secret_key or settings.acquirer_secret_key.get_secret_value()
    standin = YooKassaStandIn(
        shop_id=shop_id, secret_key=secret_key, ledger_path=args.ledger,
        host=args.host, port=args.port,
    )
    print(f"YooKassa stand-in on {standin.api_url} (ledger {standin.ledger_path})", flush=True)
    try:
        standin.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
