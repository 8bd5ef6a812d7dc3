"""`vozvrat check-bank`, run through Typer's CliRunner on the real `vozvrat` app."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner


@pytest.fixture()
def app():
    from cli.main import app

    return app


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
