"""states.bank: BIK / account control key (Bank of Russia 7-1-3), recipient name, INN, masking."""
from __future__ import annotations

import pytest

from states.bank import FieldError, account_key_matches, mask_account, validate_bank_details

NAME = "Иванов Иван Иванович"
# The Bank of Russia's published examples of the control-key calculation.
OFFICIAL = [
    ("049805746", "40602810700000000025"),  # account at a credit institution
    ("049805000", "30101810800000000746"),  # correspondent account at an RKC
]


def codes(errors: list[FieldError]) -> set[tuple[str, str]]:
    return {(e.field, e.code) for e in errors}


@pytest.mark.parametrize(("bik", "account"), OFFICIAL)
def test_official_examples_are_valid(bik, account):
    assert validate_bank_details(bik=bik, account=account, name=NAME) == []


def test_correspondent_account_checks_against_the_banks_own_bik():
    # Invoices print "к/с 30101810400000000225, БИК 044525225": the bank's BIK, not the RKC's.
    assert account_key_matches("044525225", "30101810400000000225")
    assert account_key_matches("049805746", "30101810800000000746")


@pytest.mark.parametrize(("bik", "account"), OFFICIAL)
def test_any_single_digit_change_in_the_account_is_caught(bik, account):
    for i in range(20):
        for d in "0123456789":
            if d == account[i]:
                continue
            changed = account[:i] + d + account[i + 1 :]
            errors = validate_bank_details(bik=bik, account=changed, name=NAME)
            assert codes(errors) == {("account", "account_key")}, changed


def test_a_changed_bik_breaks_the_key():
    # The last three digits of the BIK take part in the key of an ordinary account.
    errors = validate_bank_details(bik="049805747", account="40602810700000000025", name=NAME)
    assert codes(errors) == {("account", "account_key")}
    assert errors[0].message_ru == "Номер счёта не соответствует БИК: проверьте контрольный ключ"


@pytest.mark.parametrize("bik", ["04980574", "0498057460", "", "04980574a", "０４９８０５７４６"])
def test_bad_bik_format(bik):
    errors = validate_bank_details(bik=bik, account="40602810700000000025", name=NAME)
    assert ("bik", "bik_format") in codes(errors)
    assert "БИК должен состоять из 9 цифр" in [e.message_ru for e in errors]
    # A bad BIK says nothing about the key: no second, misleading account error.
    assert ("account", "account_key") not in codes(errors)


def test_bik_of_another_country_is_refused():
    assert ("bik", "bik_country") in codes(
        validate_bank_details(bik="949805746", account="40602810700000000025", name=NAME)
    )


@pytest.mark.parametrize(
    "account", ["4060281070000000002", "406028107000000000250", "40602810700000000O25", "4060 2810 7000 0000 0025"]
)
def test_bad_account_format(account):
    errors = validate_bank_details(bik="049805746", account=account, name=NAME)
    assert codes(errors) == {("account", "account_format")}


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("", "name_required"),
        ("   ", "name_required"),
        ("Иванов", "name_words"),
        ("Иванов 3", "name_chars"),
        ("Иванов И.И.", "name_chars"),
        ("Ivanov\nIvan", None),
        ("Салтыков-Щедрин Михаил", None),
        ("John Smith", None),
        ("Ёлкина Алёна", None),
        ("Иванов -Иван", "name_chars"),
    ],
)
def test_recipient_name(name, code):
    errors = validate_bank_details(bik="049805746", account="40602810700000000025", name=name)
    assert codes(errors) == ({("name", code)} if code else set())


@pytest.mark.parametrize("inn", ["7707083893", "123456789047", "1234567894"])
def test_valid_inn(inn):
    assert validate_bank_details(bik="049805746", account="40602810700000000025", name=NAME, inn=inn) == []


@pytest.mark.parametrize("inn", ["7707083894", "123456789048", "12345", "77070838930", "abcdefghij"])
def test_invalid_inn(inn):
    errors = validate_bank_details(bik="049805746", account="40602810700000000025", name=NAME, inn=inn)
    assert codes(errors) == {("inn", "inn_invalid")}


def test_all_errors_are_reported_together_in_russian():
    errors = validate_bank_details(bik="12", account="1", name="", inn="1")
    assert {e.field for e in errors} == {"bik", "account", "name", "inn"}
    assert all(any("а" <= ch.lower() <= "я" for ch in e.message_ru) for e in errors)


def test_field_error_is_frozen():
    error = FieldError("bik", "bik_format", "x")
    with pytest.raises(AttributeError):
        error.code = "y"  # type: ignore[misc]


def test_mask_account():
    assert mask_account("40817810099910004312") == "40817•••••••••••4312"
    assert mask_account(" 40817810099910004312 ") == "40817•••••••••••4312"
    masked = mask_account("40602810700000000025")
    assert "10700000000" not in masked and masked.endswith("0025") and len(masked) == 20


def test_mask_short_value_hides_everything():
    assert mask_account("12345") == "•••••"
