"""`make up`: the embedded stack on its usual ports, until Ctrl+C."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from cli.stack import PortInUse, Stack

console = Console()


class PaymentMirror:
    """The embedded stack plays the acquirer that took the buyers' card payments: card orders that reach
    the database (`vozvrat sales import`, `PUT /operator/orders`) are registered with the stand-in, so
    their refunds go back to the card instead of failing with «Payment doesn't exist» and asking every
    buyer for bank details. The stand-in still checks every refund against the amount paid."""

    def __init__(self, stack: Stack, database_url: str) -> None:
        self.stack, self.database_url, self.last_id, self.engine = stack, database_url, 0, None

    def sync(self) -> None:
        import httpx
        from sqlalchemy import text

        from models.db import make_engine

        try:
            if self.engine is None:
                self.engine = make_engine(self.database_url)
            with self.engine.connect() as conn:
                rows = conn.execute(text(
                    "SELECT id, acquirer_payment_id, payment_amount FROM ticket_order WHERE id > :last AND payment_method = 'card'"
                    " AND acquirer_payment_id IS NOT NULL AND payment_amount IS NOT NULL ORDER BY id"), {"last": self.last_id}).all()
            if not rows:
                return
            try:  # a stadium's sales in one call
                self.stack.register_payments({r.acquirer_payment_id: int(r.payment_amount) for r in rows})
                self.last_id = rows[-1].id
                return
            except httpx.HTTPStatusError:
                pass
            for r in rows:  # one by one: a payment the stand-in refuses (another amount) does not hold back the rest
                try:
                    self.stack.register_payment(r.acquirer_payment_id, int(r.payment_amount))
                except httpx.HTTPStatusError as exc:
                    console.print(f"[yellow]order {r.id}: payment {r.acquirer_payment_id} not mirrored: {exc.response.text[:200]}[/yellow]")
                self.last_id = r.id
        except Exception as exc:  # noqa: BLE001 - a missing table or a bad row must not stop the stack; said once per change
            message = f"card payments not mirrored to the acquirer stand-in: {str(exc).splitlines()[0][:200]}"
            if message != getattr(self, "_said", None):
                self._said = message
                console.print(f"[yellow]{message}[/yellow]")


SAMPLE_HINT = "The database starts empty; load the sample sales data:  .venv/bin/vozvrat sales import docs/sample-sales.jsonl"
KILL_SWITCH_ON = ("[bold yellow]outbound mail is HELD[/bold yellow] (VOZVRAT_OUTBOUND_EMAIL_ENABLED={value}): every message waits in the"
                  " outbox, nothing reaches the SMTP sink; restart without it to send")

DB_SWITCH_ON = ("[bold yellow]outbound mail is HELD[/bold yellow] by {by} since {at} UTC (vozvrat mail hold: {reason}): every message"
                " waits in the outbox; `vozvrat mail release --as LOGIN` to send")


def _switch_held(database_url: str):
    """The database's kill switch when it holds mail (tasks/mail_switch.py), else None (also when unreadable)."""
    from models.db import make_engine
    from tasks.mail_switch import mail_switch_state

    engine = make_engine(database_url)
    try:
        state = mail_switch_state(engine)
    except Exception:  # noqa: BLE001 - a database the stack could not read: no word about a switch in it
        return None
    finally:
        engine.dispose()
    return state if state.held else None


def _has_orders(database_url: str) -> bool:
    from sqlalchemy import text

    from models.db import make_engine

    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT 1 FROM ticket_order LIMIT 1")).first() is not None
    except Exception:  # noqa: BLE001 - a database the stack could not read is as good as empty for this hint
        return False
    finally:
        engine.dispose()


def notes(database_url: str) -> list[str]:
    """The lines after the banner: the sample data hint while the database has no orders (a restarted
    stack keeps its data: no «starts empty»), and the kill switch when it holds all mail (the parts
    inherit this environment, and read the switch as tasks/outbox.py does)."""
    from tasks.outbox import email_enabled_now

    out = [] if _has_orders(database_url) else [SAMPLE_HINT]
    if not email_enabled_now():
        out.append(KILL_SWITCH_ON.format(value=os.environ.get("VOZVRAT_OUTBOUND_EMAIL_ENABLED", "")))
    held = _switch_held(database_url)
    if held is not None:
        from rich.markup import escape

        at = f"{held.changed_at:%Y-%m-%d %H:%M}" if held.changed_at else "?"
        out.append(DB_SWITCH_ON.format(by=escape(held.changed_by or "?"), at=at, reason=escape(held.reason or "")))
    return out


def main() -> None:
    root = Path(os.environ.get("VOZVRAT_VAR", "var")).absolute()
    stack = Stack(
        root=root,
        prefect_port=int(os.environ.get("VOZVRAT_PREFECT_PORT", "4200")),
        api_port=int(os.environ.get("VOZVRAT_API_PORT", "8000")),
        smtp_port=int(os.environ.get("VOZVRAT_SMTP_PORT", "8025")),
        acquirer_port=int(os.environ.get("VOZVRAT_ACQUIRER_PORT", "8765")),
        inbound_port=int(os.environ.get("VOZVRAT_INBOUND_SMTP_PORT", "2525")),
        database_url=os.environ.get("VOZVRAT_DATABASE_URL"),
    )
    try:
        stack.check_ports()
    except PortInUse as exc:
        print(f"vozvrat: not started: {exc}", file=sys.stderr)
        sys.exit(1)
    console.print(f"starting the vozvrat stack in {root} …")
    try:
        stack.start()
    except (PortInUse, RuntimeError, TimeoutError) as exc:  # a part exited or never answered: nothing is up
        stack.stop()
        print(f"vozvrat: not started: {exc}", file=sys.stderr)
        sys.exit(1)
    env = stack.env()
    # The crash and re-run automations, as on a deployed server (tasks/automations.py); idempotent.
    applied = subprocess.run([sys.executable, "-m", "cli", "deploy", "automations"], env=env, capture_output=True, text=True)
    if applied.returncode != 0:
        console.print(f"[red]automations not applied: {applied.stderr.strip()[-300:]}[/red]")
    key_export = f" VOZVRAT_SECRET_KEY_FILE={env['VOZVRAT_SECRET_KEY_FILE']}" if env.get("VOZVRAT_SECRET_KEY_FILE") else ""
    key_export += f" VOZVRAT_LINK_SECRET_FILE={env['VOZVRAT_LINK_SECRET_FILE']}" if env.get("VOZVRAT_LINK_SECRET_FILE") else ""
    # The run links the CLI prints (events cancel) and the acquirer it pays through follow this stack's ports.
    key_export += f" VOZVRAT_PREFECT_UI_URL={env['VOZVRAT_PREFECT_UI_URL']} VOZVRAT_ACQUIRER_API_URL={env['VOZVRAT_ACQUIRER_API_URL']}"
    # ... and the mail the CLI sends itself (a buyer's code, `vozvrat outbox dispatch`) goes to this stack's SMTP server.
    key_export += f" VOZVRAT_SMTP_PORT={env['VOZVRAT_SMTP_PORT']} VOZVRAT_PUBLIC_URL={env['VOZVRAT_PUBLIC_URL']}"
    console.print(f"""[bold]vozvrat is up[/bold]
  Prefect UI      {stack.prefect_ui_url}   (claim runs are named after claim numbers; a waiting run's state says whom it waits on and until when)
  deployments     refund-claim, sla-watch (every 15 min), outbox-dispatch (when mail is left behind), payout-run, payout-reconcile, escalation-alert (automation) — served by `python -m flows.serve`
  run starter     creates and resumes claims' runs from the run_action table, sweeps for lost ones — `python -m flows.run_starter`
  automations     crash runs whose heartbeat stopped, re-run crashed claim runs (Prefect UI → Automations; tasks/automations.py)
  API             {stack.api_url}/docs
  buyers          {stack.api_url}/buyer (sign in with an order number and the code emailed to it; status links in every email)
  SMTP sink       127.0.0.1:{stack.smtp_port}, mail kept in {stack.mail_dir}
  inbound mail    127.0.0.1:{stack.inbound_port} takes claims by email for {env.get('VOZVRAT_REFUNDS_ADDRESS', 'vozvrat@example.ru')} (raw letters in {root}/inbound; vozvrat inbound list)
  acquirer        {stack.acquirer_api_url} (YooKassa stand-in), ledger {stack.ledger_path}
  database        {env['VOZVRAT_DATABASE_URL']}
  bank details    encrypted with {env.get('VOZVRAT_SECRET_KEY_FILE') or 'VOZVRAT_SECRET_KEY'} (rotate: vozvrat secrets rotate)
  logs            {root}/*.log
To use the CLI against it:  export PREFECT_API_URL={stack.prefect_api_url} VOZVRAT_DATABASE_URL={env['VOZVRAT_DATABASE_URL']}{key_export}""",
                  soft_wrap=True)
    for line in notes(env["VOZVRAT_DATABASE_URL"]):
        console.print(line, soft_wrap=True)
    console.print("Ctrl+C stops everything.")
    stopping = False

    def _stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    mirror = PaymentMirror(stack, env["VOZVRAT_DATABASE_URL"])
    try:
        while not stopping:
            mirror.sync()
            for name, proc in stack.processes.items():
                if proc.poll() is not None:
                    console.print(f"[red]{name} exited with {proc.returncode}; see {root / (name + '.log')}[/red]")
                    stopping = True
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        console.print("stopping …")
        stack.stop()


if __name__ == "__main__":
    main()
