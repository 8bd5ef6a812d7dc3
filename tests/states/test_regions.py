"""Regions: a regime names the subject by its code, as venues do (`77`), or by its ISO 3166-2:RU code;
the list is ISO 3166-2:RU as the maintained pycountry package ships it, and nothing else passes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from states.regions import ISO_TO_SUBJECT, RUSSIAN_LIST_ONLY, UnknownRegion, iso_subdivisions, subject_code

REPO = Path(__file__).resolve().parents[2]


def test_the_table_is_iso_3166_2_ru_as_pycountry_ships_it():
    assert set(ISO_TO_SUBJECT) == iso_subdivisions() and len(iso_subdivisions()) == 83
    assert len(set(ISO_TO_SUBJECT.values())) == 83  # one subject code each


@pytest.mark.parametrize(("given", "stored"), [("77", "77"), (" 50 ", "50"), ("7", "07"), ("RU-MOW", "77"), ("ru-spe", "78"), ("MOS", "50"),
                                               ("RU-PRI", "25"), ("RU-KGD", "39")])
def test_a_subject_code_or_an_iso_code_is_stored_as_venues_store_it(given, stored):
    assert subject_code(given) == stored


@pytest.mark.parametrize(("given", "stored"), [("91", "91"), ("92", "92"), (" 92 ", "92")])
def test_crimea_and_sevastopol_are_accepted_by_their_code_in_the_russian_list(given, stored):
    """The Russian list of federal subjects (Russian law, Decree 442) has them; ISO 3166-2:RU does not."""
    assert subject_code(given) == stored
    assert RUSSIAN_LIST_ONLY == {"91": "Республика Крым", "92": "Севастополь"}
    assert not set(RUSSIAN_LIST_ONLY) & set(ISO_TO_SUBJECT.values())  # no code means two subjects


@pytest.mark.parametrize("given", ["Регион 1", "99", "93", "091", "RU-91", "Севастополь", "00", "RU-XX", "UA-43", "Москва", "777", "RU-", "bench"])
def test_anything_else_is_refused_in_russian(given):
    with pytest.raises(UnknownRegion, match="Неизвестный регион"):
        subject_code(given)


def test_every_region_the_sales_feed_docs_and_sample_use_is_a_known_subject():
    regions = {json.loads(line)["venue"]["region"] for line in (REPO / "docs/sample-sales.jsonl").read_text().splitlines() if line.strip()}
    assert regions and all(subject_code(r) == r for r in regions)
    documented = (REPO / "docs/sales-feed.md").read_text()
    assert '"region": "50"' in documented and subject_code("50") == "50"
