"""`vozvrat quote`: JSON contract, time zones, and one-line errors with exit code 2."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()
BASE = ["quote", "--event-start", "2026-12-20T19:00", "--tz", "Europe/Moscow",
        "--reason", "voluntary", "--price", "3500.00", "--json"]


def quote_json(*args: str) -> dict:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize(
    ("filed_at", "percent", "refund", "d"),
    [
        ("2026-12-08T12:00+03:00", 100, "3500.00", 11),
        ("2026-12-09T12:00+03:00", 100, "3500.00", 10),
        ("2026-12-10T12:00+03:00", 50, "1750.00", 9),
        ("2026-12-14T12:00+03:00", 50, "1750.00", 5),
        ("2026-12-15T12:00+03:00", 30, "1050.00", 4),
        ("2026-12-16T12:00+03:00", 30, "1050.00", 3),
        ("2026-12-17T12:00+03:00", 0, "0.00", 2),
        ("2026-12-09T21:30Z", 50, "1750.00", 9),  # 00:30 Moscow on the 10th
    ],
)
def test_quote_json(filed_at, percent, refund, d):
    data = quote_json(*BASE, "--filed-at", filed_at)
    assert (data["percent"], data["refund"], data["days_before"]) == (percent, refund, d)
    assert data["eligible"] is (percent > 0)
    assert data["base"] == "3500.00" and "Art. 52.1" in data["source"] and data["rule"]


def test_vladivostok_venue_counts_in_its_own_zone():
    data = quote_json(*BASE[:4], "Asia/Vladivostok", *BASE[5:],
                      "--filed-at", "2026-12-09T23:50+03:00")
    assert (data["days_before"], data["percent"]) == (9, 50)


def test_event_start_with_an_offset_is_converted_to_the_venue_zone():
    # 2026-12-20T00:30+03:00 is 23:30 on the 19th in Kaliningrad: d counts to the 19th.
    data = quote_json("quote", "--event-start", "2026-12-20T00:30+03:00", "--tz",
                      "Europe/Kaliningrad", "--price", "100", "--filed-at",
                      "2026-12-09T12:00+02:00", "--json")
    assert data["days_before"] == 9


def test_nominal_promo_and_fees():
    data = quote_json(*BASE, "--filed-at", "2026-12-12T12:00+03:00", "--nominal", "3000",
                      "--service-fee", "350.00", "--delivery-fee", "200")
    assert (data["base"], data["refund"], data["service_fee_refund"]) == ("3000.00", "1500.00", "0.00")
    refused = quote_json(*BASE, "--filed-at", "2026-12-01T12:00+03:00", "--promo", "--refuse-promo")
    assert (refused["eligible"], refused["refusal_code"], refused["refund"]) == (
        False, "PROMO_REFUSED", "0.00")


def test_cancelled_event_refunds_in_full_even_after_the_date():
    data = quote_json("quote", "--event-start", "2026-12-20T19:00", "--reason", "cancelled",
                      "--price", "333.33", "--filed-at", "2026-12-22T12:00+03:00", "--json")
    assert (data["percent"], data["refund"], data["eligible"]) == (100, "333.33", True)


def test_human_summary():
    result = runner.invoke(app, [a for a in BASE if a != "--json"] +
                           ["--filed-at", "2026-12-12T12:00+03:00"])
    assert result.exit_code == 0
    assert "1750.00" in result.stdout and "50 %" in result.stdout


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["--reason", "bored"], "unknown reason 'bored'"),
        (["--price", "-10"], "must not be negative"),
        (["--price", "35,000.00"], "malformed ruble amount"),
        (["--price", "3500.001"], "malformed ruble amount"),
        (["--nominal", "abc"], "--nominal: malformed"),
        (["--tz", "Europe/Atlantis"], "unknown time zone"),
        (["--event-start", "20.12.2026 19:00"], "--event-start: malformed"),
        (["--filed-at", "2026-12-08T12:00"], "--filed-at must carry a UTC offset"),
        (["--filed-at", "2026-12-21T12:00+03:00"], "filing after the event start"),
        (["--filed-at", "2026-12-20T19:00+03:00"], "filing after the event start"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(override, message):
    args = dict(zip(BASE[1::2][:4], BASE[2::2][:4]))
    args["--filed-at"] = "2026-12-08T12:00+03:00"
    args.update(dict(zip(override[::2], override[1::2])))
    flat = ["quote", *[x for pair in args.items() for x in pair], "--json"]
    result = runner.invoke(app, flat)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_installed_command_exit_code():
    vozvrat = Path(sys.executable).parent / "vozvrat"
    ok = subprocess.run([str(vozvrat), *BASE, "--filed-at", "2026-12-12T12:00+03:00"],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and json.loads(ok.stdout)["refund"] == "1750.00"
    bad = subprocess.run([str(vozvrat), *BASE, "--filed-at", "2026-12-12T12:00"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr


@pytest.mark.parametrize(
    "args",
    [
        # Regression: each of these printed an OverflowError traceback.
        ["--event-start", "9999-12-31T23:59", "--tz", "Europe/Moscow", "--filed-at", "9999-12-31T23:00+00:00", "--reason", "illness"],
        ["--event-start", "0001-01-01T00:30", "--tz", "Europe/Moscow", "--filed-at", "0001-01-01T00:00+03:00"],
        ["--event-start", "0001-01-01T00:00+14:00", "--tz", "Pacific/Pago_Pago", "--filed-at", "0001-01-01T00:00+14:00"],
    ],
)
def test_dates_at_the_edge_of_the_calendar_are_one_line_and_exit_code_2(args):
    result = runner.invoke(app, ["quote", *args, "--price", "100", "--json"])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "calendar" in lines[0]
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_quote_the_organizer_decides_cites_the_decision_deadline_rule():
    data = quote_json("quote", "--event-start", "2026-12-20T19:00", "--reason", "illness", "--price", "100",
                      "--filed-at", "2026-12-01T12:00+03:00", "--json")
    assert data["decided_by_organizer"] is True
    assert "docs/rules.md" in data["deadline_rule"] and "decidable" in data["deadline_rule"]
    voluntary = quote_json(*BASE, "--filed-at", "2026-12-01T12:00+03:00")
    assert voluntary["deadline_rule"] is None
