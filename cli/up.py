"""`make up`: the embedded stack on its usual ports, until Ctrl+C."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from rich.console import Console

from cli.stack import Stack

console = Console()


def main() -> None:
    root = Path(os.environ.get("VOZVRAT_VAR", "var")).absolute()
    stack = Stack(
        root=root,
        prefect_port=int(os.environ.get("VOZVRAT_PREFECT_PORT", "4200")),
        api_port=int(os.environ.get("VOZVRAT_API_PORT", "8000")),
        smtp_port=int(os.environ.get("VOZVRAT_SMTP_PORT", "8025")),
        acquirer_port=int(os.environ.get("VOZVRAT_ACQUIRER_PORT", "8765")),
        database_url=os.environ.get("VOZVRAT_DATABASE_URL"),
    )
    console.print(f"starting the vozvrat stack in {root} …")
    stack.start()
    env = stack.env()
    key_export = f" VOZVRAT_SECRET_KEY_FILE={env['VOZVRAT_SECRET_KEY_FILE']}" if env.get("VOZVRAT_SECRET_KEY_FILE") else ""
    key_export += f" VOZVRAT_LINK_SECRET_FILE={env['VOZVRAT_LINK_SECRET_FILE']}" if env.get("VOZVRAT_LINK_SECRET_FILE") else ""
    console.print(f"""[bold]vozvrat is up[/bold]
  Prefect UI      {stack.prefect_ui_url}   (claim runs are named after claim numbers; suspended = waiting for an organizer)
  deployments     refund-claim, sla-watch (every 15 min), outbox-dispatch, payout-run, payout-reconcile — served by `python -m flows.serve`
  run starter     creates and resumes claims' runs from the run_action table, sweeps for lost ones — `python -m flows.run_starter`
  API             {stack.api_url}/docs
  buyers          {stack.api_url}/buyer (sign in with an order number and the code emailed to it; status links in every email)
  SMTP sink       127.0.0.1:{stack.smtp_port}, mail kept in {stack.mail_dir}
  acquirer        {stack.acquirer_api_url} (YooKassa stand-in), ledger {stack.ledger_path}
  database        {env['VOZVRAT_DATABASE_URL']}
  bank details    encrypted with {env.get('VOZVRAT_SECRET_KEY_FILE') or 'VOZVRAT_SECRET_KEY'} (rotate: vozvrat secrets rotate)
  logs            {root}/*.log
To use the CLI against it:  export PREFECT_API_URL={stack.prefect_api_url} VOZVRAT_DATABASE_URL={env['VOZVRAT_DATABASE_URL']}{key_export}
Ctrl+C stops everything.""", soft_wrap=True)
    stopping = False

    def _stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stopping:
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
