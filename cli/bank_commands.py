"""`vozvrat check-bank`: check a buyer's bank details the way the payout will (states.bank)."""
from __future__ import annotations

import typer

from cli.app import app
from states.bank import validate_bank_details


@app.command("check-bank")
def check_bank(
    bik: str = typer.Option(..., "--bik", help="БИК банка получателя, 9 цифр"),
    account: str = typer.Option(..., "--account", help="Счёт получателя, 20 цифр"),
    name: str | None = typer.Option(None, "--name", help="ФИО получателя (если не указано, не проверяется)"),
    inn: str | None = typer.Option(None, "--inn", help="ИНН получателя, если есть"),
) -> None:
    """Check BIK, account control key, recipient name and INN; exit 0 and print "ok" when valid."""
    errors = validate_bank_details(bik=bik, account=account, name=name or "", inn=inn)
    if name is None:
        # Checking only the BIK/account pair is the common support question ("is this account right?").
        errors = [e for e in errors if e.field != "name"]
    if errors:
        for error in errors:
            typer.echo(error.message_ru)
        raise typer.Exit(code=1)
    typer.echo("ok")
