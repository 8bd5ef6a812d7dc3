"""`vozvrat payouts ...`: pay refunds once by hand (the same steps as the payout-run flow), export bank
transfers to 1C, close them from the bank statement, and take a buyer's bank details.

Bank details are shown masked only (DESIGN "Security"); card data never passes through here.
"""
from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer

from cli.app import app
from cli.errors import fail, hidden_prompt

payouts_app = typer.Typer(help="Paying refunds: card refunds, bank transfers, the 1C file.", no_args_is_help=True)
app.add_typer(payouts_app, name="payouts")

DB_HELP = "Database URL; default VOZVRAT_DATABASE_URL or the stack's sqlite:///var/vozvrat.db"


def _engine(db: str | None):
    from models.db import make_engine
    from models.settings import get_settings

    return make_engine(db or get_settings().database_url)


def _now() -> datetime:
    return datetime.now(UTC)


def _need_secret_key() -> None:
    """Bank details are encrypted: without a key, one line and exit 2 before anything is read or written."""
    from models.crypto import SecretKeyError, secret_keys

    try:
        secret_keys()
    except SecretKeyError as exc:
        fail(str(exc))


def _first_line(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{exc.__class__.__name__}: {text}"


def _acquirer(api_url: str | None):
    from models.settings import get_settings
    from tasks.acquirer import YooKassaAcquirer

    settings = get_settings()
    return YooKassaAcquirer(
        api_url=api_url or settings.acquirer_api_url,
        shop_id=settings.acquirer_shop_id,
        secret_key=settings.acquirer_secret_key.get_secret_value(),
    )


@payouts_app.command("run")
def run(
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
    api_url: str | None = typer.Option(None, "--api-url", help="Acquirer API URL; default VOZVRAT_ACQUIRER_API_URL"),
) -> None:
    """Retry failed payouts that are due, open payouts for claims in payout_pending, send card refunds,
    poll pending ones: once (the payout-run and payout-reconcile steps)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    from sqlalchemy.exc import SQLAlchemyError

    from tasks.acquirer import AcquirerError
    from tasks.payouts import open_payouts, reconcile_pending, retry_due_payouts, submit_card_refunds

    acquirer = _acquirer(api_url)
    engine = _engine(db)
    now = _now()
    try:
        retried = retry_due_payouts(engine, now=now)
        opened = open_payouts(engine, now=now)
        submitted = submit_card_refunds(engine, acquirer, now=now)
        reconciled = reconcile_pending(engine, acquirer, now=now)
    except AcquirerError as exc:
        fail(f"the acquirer refused the run: {exc}")
    except SQLAlchemyError as exc:
        fail(f"database error: {_first_line(exc)}")
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback; each payout's own failure is recorded
        fail(f"payout run stopped: {_first_line(exc)}")
    finally:
        engine.dispose()

    table = Table(title=f"Payout run: {len(retried)} failed payout(s) retried, {opened} payout(s) opened")
    table.add_column("step")
    names = ("asked", "succeeded", "failed", "retry later", "pending", "deferred")
    for name in names:
        table.add_column(name, justify="right")
    for step, r in (("card refunds", submitted), ("reconcile", reconciled)):
        table.add_row(step, *(str(v) for v in (r.asked, r.succeeded, r.failed, r.retry_later, r.pending, r.deferred)))
    console = Console()
    console.print(table)
    for line in submitted.failures + reconciled.failures:
        console.print(f"[red]failed:[/red] {escape(line)}", soft_wrap=True)
    for line in submitted.anomalies + reconciled.anomalies:
        console.print(f"[yellow]attention:[/yellow] {escape(line)}", soft_wrap=True)


@payouts_app.command("retry")
def retry(
    claim_number: str = typer.Argument(..., help="The claim's number, e.g. VZ-0000123-1"),
    reason: str = typer.Option("", "--reason", help="Why it is retried (required; kept in the audit trail)"),
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
    api_url: str | None = typer.Option(None, "--api-url", help="Acquirer API URL; default VOZVRAT_ACQUIRER_API_URL"),
) -> None:
    """Retry a failed payout by hand (payout_failed -> payout_pending) and send it at once; the audit
    row names you (ops:<login>) and the reason. A refund whose outcome was unknown is asked again with
    its own key, so it is never paid twice."""
    import getpass

    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    from models.tables import Claim
    from tasks.acquirer import AcquirerError
    from tasks.payouts import RetryRefused, open_payouts, retry_payout_by_ops, submit_card_refunds

    if not " ".join(reason.split()):
        fail("a retry needs a reason (--reason)")
    actor = f"ops:{getpass.getuser()}"
    acquirer = _acquirer(api_url)
    engine = _engine(db)
    now = _now()
    try:
        done = retry_payout_by_ops(engine, claim_number=claim_number.strip(), reason=reason, actor=actor, now=now)
        typer.echo(f"claim {done.number}: payout_failed -> {done.state} by {actor}")
        open_payouts(engine, now=now, claim_ids=[done.claim_id])
        report = submit_card_refunds(engine, acquirer, now=now, claim_ids=[done.claim_id])
        with engine.connect() as conn:
            state = conn.execute(select(Claim.__table__.c.state).where(Claim.__table__.c.id == done.claim_id)).scalar_one()
    except RetryRefused as exc:
        fail(str(exc))
    except AcquirerError as exc:
        fail(f"claim {claim_number} is back in payout_pending, but the acquirer refused the run: {exc}")
    except SQLAlchemyError as exc:
        fail(f"database error: {_first_line(exc)}")
    except Exception as exc:  # noqa: BLE001
        fail(f"retry stopped: {_first_line(exc)}")
    finally:
        engine.dispose()
    for line in report.failures + report.anomalies:
        typer.echo(line, err=True)
    if report.asked == 0 and state == "payout_pending":
        typer.echo(f"claim {claim_number}: payout_pending (a bank transfer, or sent by the next payout run)")
    else:
        typer.echo(f"claim {claim_number}: {state}")


@payouts_app.command("export-1c")
def export_1c(
    out: Path | None = typer.Option(None, "--out", help="Write the 1C «Клиент-банк» file of pending bank transfers here"),
    mark_paid_file: Path | None = typer.Option(None, "--mark-paid", help="Close transfers from this bank statement (1C format)"),
    batch: str | None = typer.Option(None, "--batch", help="With --out: rewrite the file of an earlier export batch"),
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Export approved bank transfers to 1C once each (marked, then written), or close them from a statement."""
    if (out is None) == (mark_paid_file is None):
        fail("give exactly one of --out FILE or --mark-paid FILE")
    _need_secret_key()
    if mark_paid_file is not None:
        if batch:
            fail("--batch goes with --out, not with --mark-paid")
        _mark_paid(mark_paid_file, db)
        return

    from sqlalchemy.exc import SQLAlchemyError

    from tasks.payouts import mark_export_batch, write_export_file

    engine = _engine(db)
    try:
        if batch:
            try:
                count = write_export_file(engine, batch=batch, out=out)
            except LookupError:
                fail(f"no export batch {batch}")
            typer.echo(f"rewrote {count} payment order(s) of batch {batch} to {out}")
            return
        marked = mark_export_batch(engine, now=_now())
        for line in marked.skipped:
            typer.echo(f"not exported: {line}", err=True)
        if not marked.batch:
            typer.echo("nothing to export: no approved bank transfers waiting")
            return
        try:
            count = write_export_file(engine, batch=marked.batch, out=out)
        except (OSError, ValueError) as exc:
            # The payouts are marked: nothing is exported twice; write the file again from the batch.
            fail(f"batch {marked.batch} is marked exported but {out} was not written ({_first_line(exc)}); "
                 f"rerun with --batch {marked.batch} --out FILE")
        typer.echo(f"exported {count} bank transfer(s) to {out} (batch {marked.batch})")
    except SQLAlchemyError as exc:
        fail(f"database error: {_first_line(exc)}")
    finally:
        engine.dispose()


@payouts_app.command("mark-paid")
def mark_paid(
    statement: Path = typer.Argument(..., help="The bank statement in 1C «Клиент-банк» format"),
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Close exported bank transfers the statement shows as paid (claim -> paid)."""
    _mark_paid(statement, db)


def _mark_paid(statement: Path, db: str | None) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    from tasks.payouts import mark_paid_from_statement

    _need_secret_key()
    try:
        data = statement.read_bytes()
    except OSError as exc:
        fail(f"cannot read {statement}: {exc.strerror or exc}")
    engine = _engine(db)
    try:
        report = mark_paid_from_statement(engine, data, now=_now())
    except ValueError as exc:
        fail(f"{statement}: {exc}")
    except SQLAlchemyError as exc:
        fail(f"database error: {_first_line(exc)}")
    finally:
        engine.dispose()
    typer.echo(f"statement {statement.name}: {report}")
    for line in report.mismatched:
        typer.echo(f"amount differs, left for a person: {line}", err=True)
    for number in report.unknown:
        typer.echo(f"no exported transfer for claim {number}", err=True)


def _details_from_file(path: Path) -> dict[str, str]:
    """A JSON object {"bik", "account", "name", "inn"?} from a file (or "-" for stdin), one line of error otherwise."""
    import json
    import sys

    try:
        raw = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc.__class__.__name__}")
    try:
        data = json.loads(raw)
    except ValueError:
        fail(f"{path}: not JSON; expected {{\"bik\": ..., \"account\": ..., \"name\": ..., \"inn\": ...}}")
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values() if v is not None):
        fail(f"{path}: expected a JSON object of strings with bik, account, name (inn optional)")
    unknown = set(data) - {"bik", "account", "name", "inn"}
    if unknown:
        fail(f"{path}: unknown field(s) {', '.join(sorted(unknown))}")
    return {k: v for k, v in data.items() if v is not None}


def _ops_actor() -> str:
    import getpass

    try:
        return f"ops:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name for this uid (a container)
        import os

        return f"ops:uid-{os.getuid()}"


@payouts_app.command("bank-details")
def bank_details(
    claim_id: int = typer.Argument(..., help="The claim's id"),
    from_file: Path | None = typer.Option(None, "--from-file", help='JSON {"bik", "account", "name", "inn"?}; "-" reads stdin. '
                                             "Without it the account number is asked for with hidden input"),
    bik: str | None = typer.Option(None, "--bik", help="БИК банка получателя, 9 цифр"),
    name: str | None = typer.Option(None, "--name", help="ФИО получателя"),
    inn: str | None = typer.Option(None, "--inn", help="ИНН получателя, если есть"),
    force: bool = typer.Option(False, "--force", help="Ops correction: replace the details of a claim that does not wait for them"),
    reason: str | None = typer.Option(None, "--reason", help="Why the details are corrected (required with --force)"),
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Store a buyer's bank details (encrypted) on a claim waiting for them, and move it to payout.

    The account number is never an argument (it would stay in `ps` and the shell history): it is read
    from --from-file or asked for with hidden input. Every change is audited as ops:<your login>.
    """
    from sqlalchemy import select

    from models.claim_store import ClaimNotFound, ConflictError
    from models.tables import Claim
    from states.bank import mask_account
    from tasks.payouts import BankDetailsNotExpected, submit_bank_details

    if force and not (reason or "").strip():
        fail("--force needs --reason: the audit keeps why the details were corrected")
    _need_secret_key()
    fields = _details_from_file(from_file) if from_file is not None else {}
    for key, value in (("bik", bik), ("name", name), ("inn", inn)):
        if value is not None:
            if key in fields:
                fail(f"--{key} is given twice: on the command line and in {from_file}")
            fields[key] = value
    for key in ("bik", "name"):
        if not fields.get(key):
            fail(f"--{key} is required (or \"{key}\" in --from-file)")
    if "account" not in fields:
        fields["account"] = hidden_prompt("Счёт получателя (20 цифр)", confirm=True, instead="--from-file")
    engine = _engine(db)
    try:
        try:
            errors = submit_bank_details(engine, claim_id=claim_id, bik=fields["bik"], account=fields["account"], name=fields["name"],
                                         inn=fields.get("inn"), now=_now(), actor=_ops_actor(), force=force, reason=reason)
        except ClaimNotFound:
            fail(f"claim {claim_id} not found")
        except BankDetailsNotExpected as exc:
            fail(exc.message_ru)
        except ConflictError:
            fail(f"claim {claim_id} changed meanwhile; run the command again")
        if errors:
            fail("; ".join(e.message_ru for e in errors))
        with engine.connect() as conn:
            number, state = conn.execute(
                select(Claim.__table__.c.number, Claim.__table__.c.state).where(Claim.__table__.c.id == claim_id)
            ).one()
    finally:
        engine.dispose()
    typer.echo(f"claim {number}: bank details saved (БИК {fields['bik'].strip()}, счёт {mask_account(fields['account'])}); state {state}")
