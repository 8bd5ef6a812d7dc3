"""`vozvrat bench mass-cancel --regime` on a small event: one JSON line whose counts show Decree 442
applied (every quote cites it, every money claim has the 180-day deadline, the voucher takers are not
refunded) and the postponement's notices and vouchers written once each. Speeds are not asserted."""
from __future__ import annotations

import json
from datetime import date, timedelta

from typer.testing import CliRunner

from cli.main import app


def test_the_regime_variant_prints_one_json_line_with_decree_442_applied():
    result = CliRunner().invoke(app, ["bench", "mass-cancel", "--regime", "--tickets", "50", "--json"])
    assert result.exit_code == 0, result.output
    (line,) = [ln for ln in result.stdout.splitlines() if ln.strip()]
    out = json.loads(line)
    a, b = out["cancellation"], out["postponement"]
    assert out["bench"] == "mass-cancel --regime" and out["channels"] == {"card": 40, "cash": 6, "bso": 4}
    assert date.fromisoformat(out["regime"]["refund_due"]) == date.fromisoformat(out["regime"]["ends_on"]) + timedelta(days=180)
    assert (a["claims"], a["quotes_citing_decree_442"], a["vouchers_issued"], a["claims_with_180_day_deadline"]) == (50, 50, 5, 45)
    assert a["states"] == {"voucher_issued": 5, "paid": 36, "needs_bank_details": 9} and a["refund_calls"] == 36
    assert (b["rule"], b["orders"], b["notices_written"], b["vouchers_issued"]) == ("decree_442_postponed_within_18_months", 50, 50, 50)
    assert out["voucher_rows"] == 55 and out["peak_rss_mb"] > 0
