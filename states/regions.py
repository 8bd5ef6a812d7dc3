"""Russian regions (subjects of the Federation) as venues and regimes name them.

Venues store a region as the subject's two-digit code (`77` Moscow, `50` Moscow Oblast: the sales feed,
docs/sales-feed.md), and a regime matches venues by that code, so a regime is stored with it too. A
regime may be declared with that code or with the subject's ISO 3166-2:RU code (`RU-MOW`); both are
checked against ISO 3166-2:RU as the `pycountry` package ships it (a maintained copy of the standard):
every code here maps to a subdivision it lists, and the test proves the two lists are the same.

The codes themselves follow the Russian list of federal subjects used in Russian law, which is what
Decree 442 regimes are issued under and what the operators' venues store. That list has subjects
ISO 3166-2:RU does not: `91` (Республика Крым) and `92` (Севастополь) are accepted by their numeric
code (`RUSSIAN_LIST_ONLY`); they have no ISO form here. Anything else (a typo, a name, a code of no
subject) is refused.
"""
from __future__ import annotations

from functools import lru_cache

# ISO 3166-2:RU code -> the subject's code (as in car plates and tax codes; venues store this one).
ISO_TO_SUBJECT: dict[str, str] = {
    "RU-AD": "01", "RU-BA": "02", "RU-BU": "03", "RU-AL": "04", "RU-DA": "05", "RU-IN": "06", "RU-KB": "07", "RU-KL": "08",
    "RU-KC": "09", "RU-KR": "10", "RU-KO": "11", "RU-ME": "12", "RU-MO": "13", "RU-SA": "14", "RU-SE": "15", "RU-TA": "16",
    "RU-TY": "17", "RU-UD": "18", "RU-KK": "19", "RU-CE": "20", "RU-CU": "21", "RU-ALT": "22", "RU-KDA": "23", "RU-KYA": "24",
    "RU-PRI": "25", "RU-STA": "26", "RU-KHA": "27", "RU-AMU": "28", "RU-ARK": "29", "RU-AST": "30", "RU-BEL": "31", "RU-BRY": "32",
    "RU-VLA": "33", "RU-VGG": "34", "RU-VLG": "35", "RU-VOR": "36", "RU-IVA": "37", "RU-IRK": "38", "RU-KGD": "39", "RU-KLU": "40",
    "RU-KAM": "41", "RU-KEM": "42", "RU-KIR": "43", "RU-KOS": "44", "RU-KGN": "45", "RU-KRS": "46", "RU-LEN": "47", "RU-LIP": "48",
    "RU-MAG": "49", "RU-MOS": "50", "RU-MUR": "51", "RU-NIZ": "52", "RU-NGR": "53", "RU-NVS": "54", "RU-OMS": "55", "RU-ORE": "56",
    "RU-ORL": "57", "RU-PNZ": "58", "RU-PER": "59", "RU-PSK": "60", "RU-ROS": "61", "RU-RYA": "62", "RU-SAM": "63", "RU-SAR": "64",
    "RU-SAK": "65", "RU-SVE": "66", "RU-SMO": "67", "RU-TAM": "68", "RU-TVE": "69", "RU-TOM": "70", "RU-TUL": "71", "RU-TYU": "72",
    "RU-ULY": "73", "RU-CHE": "74", "RU-ZAB": "75", "RU-YAR": "76", "RU-MOW": "77", "RU-SPE": "78", "RU-YEV": "79", "RU-NEN": "83",
    "RU-KHM": "86", "RU-CHU": "87", "RU-YAN": "89",
}
SUBJECT_TO_ISO = {subject: iso for iso, subject in ISO_TO_SUBJECT.items()}

# Subjects of the Russian list of federal subjects (the one Russian law, and so Decree 442 regimes, use)
# that ISO 3166-2:RU and pycountry do not list: accepted by their numeric code, as venues store them.
RUSSIAN_LIST_ONLY: dict[str, str] = {
    "91": "Республика Крым",
    "92": "Севастополь",
}


class UnknownRegion(ValueError):
    """Not a subject's code nor an ISO 3166-2:RU code; the message is for the user, in Russian."""


@lru_cache(maxsize=1)
def iso_subdivisions() -> frozenset[str]:
    """ISO 3166-2:RU codes as pycountry ships them."""
    import pycountry

    return frozenset(s.code for s in pycountry.subdivisions.get(country_code="RU") or ())


def subject_code(region: str) -> str:
    """The subject's two-digit code for `77`, `7`, `RU-MOW`, `ru-mow` or `92`; UnknownRegion otherwise."""
    value = region.strip().upper()
    if value.isdigit() and len(value) <= 2 and value.zfill(2) in RUSSIAN_LIST_ONLY:
        return value.zfill(2)
    if value.isdigit() and len(value) <= 2:
        value = SUBJECT_TO_ISO.get(value.zfill(2), value)
    elif not value.startswith("RU-"):
        value = "RU-" + value if value.isalpha() and 2 <= len(value) <= 3 else value
    if value in ISO_TO_SUBJECT and value in iso_subdivisions():
        return ISO_TO_SUBJECT[value]
    raise UnknownRegion(f"Неизвестный регион «{region.strip()[:40]}»: укажите код субъекта РФ, как у площадок (например 77 — Москва, "
                        f"50 — Московская область), или код ISO 3166-2:RU (например RU-MOW).")
