"""`vozvrat check-bank`, run through Typer's CliRunner on an app standing in for cli.main.app.

cli.main imports every area's commands; the test gives cli.bank_commands a fresh app of its own so it
does not depend on the other areas being importable.
"""
from __future__ import annotations

import importlib
import sys
import types

import pytest
import typer
from typer.testing import CliRunner


@pytest.fixture()
def app(monkeypatch):
    fake_main = types.ModuleType("cli.main")
    fake_main.app = typer.Typer()

    @fake_main.app.callback()
    def _root() -> None:  # keeps Typer in sub-command mode
        pass

    monkeypatch.setitem(sys.modules, "cli.main", fake_main)
    monkeypatch.delitem(sys.modules, "cli.bank_commands", raising=False)
    importlib.import_module("cli.bank_commands")
    monkeypatch.delitem(sys.modules, "cli.bank_commands", raising=False)
    return fake_main.app


def run(app, *args):
    return CliRunner().invoke(app, ["check-bank", *args])


def test_valid_details_print_ok(app):
    result = run(app, "--bik", "049805746", "--account", "40602810700000000025", "--name", "Иванов Иван")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "ok"


def test_name_is_optional(app):
    result = run(app, "--bik", "049805000", "--account", "30101810800000000746")
    assert (result.exit_code, result.output.strip()) == (0, "ok")


def test_invalid_details_exit_1_with_one_line_per_reason(app):
    result = run(app, "--bik", "04980574", "--account", "40602810700000000026", "--name", "Иванов", "--inn", "1")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines == [
        "БИК должен состоять из 9 цифр",
        "Укажите ФИО получателя полностью: хотя бы фамилию и имя",
        "ИНН указан неверно: 10 или 12 цифр с верной контрольной суммой",
    ], lines


def test_wrong_key_is_reported(app):
    result = run(app, "--bik", "049805746", "--account", "40602810700000000026")
    assert result.exit_code == 1
    assert result.output.strip() == "Номер счёта не соответствует БИК: проверьте контрольный ключ"
