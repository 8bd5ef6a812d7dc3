"""`vozvrat secrets ...`: the key that encrypts bank details at rest (docs/ops.md "Secrets").

generate  print a new Fernet key (or write it to an owner-only file) for VOZVRAT_SECRET_KEY
rotate    re-encrypt every stored bank details token with the current key; with the embedded stack's
          key file, make a new key first and drop the old one when every token has moved
"""
from __future__ import annotations

from pathlib import Path

import typer

from cli.app import app
from cli.errors import fail

secrets_app = typer.Typer(help="The key for bank details at rest: generate, rotate.", no_args_is_help=True)
app.add_typer(secrets_app, name="secrets")

DB_HELP = "Database URL; default VOZVRAT_DATABASE_URL or the stack's sqlite:///var/vozvrat.db"


@secrets_app.command("generate")
def generate(out: Path | None = typer.Option(None, "--out", help="Write the key to this new file (mode 0600) instead of printing it")) -> None:
    """A new Fernet key for VOZVRAT_SECRET_KEY."""
    from cryptography.fernet import Fernet

    from models.crypto import write_key_file

    key = Fernet.generate_key().decode("ascii")
    if out is None:
        typer.echo(key)
        return
    if out.exists():
        fail(f"{out} exists; a key file is never overwritten here (rotate with `vozvrat secrets rotate`)")
    try:
        write_key_file(out, [key])
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}")
    typer.echo(f"wrote a new key to {out} (mode 0600)")


@secrets_app.command("rotate")
def rotate(db: str | None = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Re-encrypt stored bank details with the current key (see docs/ops.md "Secrets").

    With VOZVRAT_SECRET_KEY="NEW,OLD": every token moves to NEW; then drop OLD from the variable.
    With the embedded stack's key file (VOZVRAT_SECRET_KEY_FILE): a new key is generated and put
    first, every token moves to it, and the old key is removed from the file.
    """
    from cryptography.fernet import Fernet
    from sqlalchemy.exc import SQLAlchemyError

    from models.crypto import DecryptionError, SecretKeyError, read_key_file, reencrypt_bank_details, secret_keys, write_key_file
    from models.db import make_engine
    from models.settings import get_settings

    settings = get_settings()
    from_env = settings.secret_key is not None and bool(settings.secret_key.get_secret_value().strip())
    engine = make_engine(db or settings.database_url)
    try:
        if from_env or not settings.secret_key_file:
            keys = secret_keys()
            count = reencrypt_bank_details(engine, keys=keys)
            typer.echo(f"re-encrypted {count} bank details with the first key of VOZVRAT_SECRET_KEY"
                       + ("; the other keys can now be removed from it" if len(keys) > 1 else ""))
            return
        path = Path(settings.secret_key_file)
        old = read_key_file(path)
        new = Fernet.generate_key().decode("ascii")
        write_key_file(path, [new, *old])  # from here on, new details use the new key; old ones still open
        count = reencrypt_bank_details(engine, keys=[new, *old])
        write_key_file(path, [new])
        typer.echo(f"re-encrypted {count} bank details with a new key; {path} now holds only the new key")
    except (SecretKeyError, DecryptionError) as exc:
        fail(str(exc))
    except (OSError, SQLAlchemyError) as exc:
        fail(f"rotation stopped, run it again (every stored token still opens): {exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    finally:
        engine.dispose()
