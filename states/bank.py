"""Bank details of a buyer paid by bank transfer: pure validation and masking, no I/O.

DESIGN "Payment channels": a cash / box-office / BSO purchase is refunded only by transfer to full
bank details (BIK, 20-digit account with its control key, recipient name). python-stdnum checks the
INN (`stdnum.ru.inn`) but has no BIK or account check (stdnum.ru holds only inn and ogrn), so the
Bank of Russia control-key algorithm is written here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from stdnum.exceptions import ValidationError as StdnumValidationError
from stdnum.ru import inn as stdnum_inn

__all__ = [
    "FieldError",
    "account_key_matches",
    "mask_account",
    "validate_bank_details",
]

# Bank of Russia, "Порядок расчета контрольного ключа в номере лицевого счета" (ЦБ РФ № 515, 08.09.1997):
# weights 7-1-3 repeated over the 23 digits "3-digit bank code + 20-digit account".
_WEIGHTS = (7, 1, 3) * 8
_NAME_WORD = re.compile(r"^[A-Za-zА-Яа-яЁё]+(?:-[A-Za-zА-Яа-яЁё]+)*$")


@dataclass(frozen=True)
class FieldError:
    field: str
    code: str
    message_ru: str


def _bank_code(bik: str) -> str:
    """The 3 digits prefixed to the account for the key check.

    An account at a credit institution uses BIK digits 7-9 (the institution's number in its RKC,
    050..999). An account at a Bank of Russia division (RKC: BIK digits 7-9 are 000..049, e.g. a
    correspondent account 30101... checked against the RKC BIK 049805000) uses "0" + BIK digits 5-6.
    """
    if int(bik[6:9]) < 50:
        return "0" + bik[4:6]
    return bik[6:9]


def account_key_matches(bik: str, account: str) -> bool:
    """True when the control key (digit 9) of `account` checks against `bik` (7-1-3 weighting).

    A correspondent account (class 30101) is held at the Bank of Russia, so it is checked in the RKC
    form even when the bank's own BIK is given (as on every invoice: "к/с 30101... БИК 044525225").
    """
    code = "0" + bik[4:6] if account.startswith("30101") else _bank_code(bik)
    digits = code + account
    return sum((int(d) * w) % 10 for d, w in zip(digits, _WEIGHTS)) % 10 == 0


def validate_bank_details(
    *, bik: str, account: str, name: str, inn: str | None = None
) -> list[FieldError]:
    """All problems with the buyer's bank details, one error per field; [] when they can be paid."""
    errors: list[FieldError] = []
    bik = (bik or "").strip()
    account = (account or "").strip()

    bik_ok = len(bik) == 9 and bik.isascii() and bik.isdigit()
    if not bik_ok:
        errors.append(FieldError("bik", "bik_format", "БИК должен состоять из 9 цифр"))
    elif not bik.startswith("04"):
        # Russian BIKs start with the country code 04 (since 2021 also 00/01/02 for treasury bodies).
        if bik[:2] not in ("00", "01", "02"):
            errors.append(FieldError("bik", "bik_country", "БИК должен начинаться с 04: проверьте номер"))
            bik_ok = False

    if not (len(account) == 20 and account.isascii() and account.isdigit()):
        errors.append(FieldError("account", "account_format", "Номер счёта должен состоять из 20 цифр"))
    elif bik_ok and not account_key_matches(bik, account):
        errors.append(
            FieldError(
                "account",
                "account_key",
                "Номер счёта не соответствует БИК: проверьте контрольный ключ",
            )
        )

    words = (name or "").split()
    if not words:
        errors.append(FieldError("name", "name_required", "Укажите ФИО получателя"))
    elif not all(_NAME_WORD.match(w) for w in words):
        errors.append(
            FieldError(
                "name",
                "name_chars",
                "ФИО получателя может содержать только буквы, пробелы и дефисы",
            )
        )
    elif len(words) < 2:
        errors.append(
            FieldError("name", "name_words", "Укажите ФИО получателя полностью: хотя бы фамилию и имя")
        )

    if inn is not None and inn.strip():
        try:
            stdnum_inn.validate(inn.strip())
        except StdnumValidationError:
            errors.append(
                FieldError("inn", "inn_invalid", "ИНН указан неверно: 10 или 12 цифр с верной контрольной суммой")
            )
    return errors


def mask_account(account: str) -> str:
    """Show a bank account masked (DESIGN "Security"): first 5 (account class) and last 4 digits."""
    account = (account or "").strip()
    if len(account) <= 9:
        return "•" * len(account)
    return account[:5] + "•" * (len(account) - 9) + account[-4:]
