"""The chunked event flows' artifact helpers (tasks/event_artifacts.py): keys, percent, summary rows.
Creating the artifacts themselves is exercised on the real stack by tests/flows/test_regimes_e2e.py."""
from __future__ import annotations

import pytest

from tasks import event_artifacts as ea
from tasks.postponement import artifact_key


@pytest.mark.parametrize(("prefix", "ident", "key"), [
    ("event-postponement", 7, "event-postponement-7"),
    ("mass-cancellation-event", 5, "mass-cancellation-event-5"),  # the mass flow's historic key, unchanged
])
def test_keys_per_event_or_change_with_their_progress_and_follow_ups(prefix, ident, key):
    assert ea.event_key(prefix, ident) == key
    assert (ea.progress_key(key), ea.follow_ups_key(key)) == (f"{key}-progress", f"{key}-follow-ups")


@pytest.mark.parametrize("prefix", ["Event-Postponement", "event postponement", "event_postponement"])
def test_a_key_prefect_would_refuse_is_refused_here(prefix):
    with pytest.raises(ValueError, match="lower-case"):
        ea.event_key(prefix, 1)


def test_the_postponement_flow_keeps_its_key_per_change():
    assert artifact_key(12) == "event-postponement-12"


@pytest.mark.parametrize(("done", "total", "shown"), [(0, 6, 0.0), (1, 3, 33.3), (6, 6, 100.0), (0, 0, 100.0)])
def test_progress_in_percent_and_an_empty_run_is_done(done, total, shown):
    assert ea.percent(done, total) == shown


def test_summary_rows_keep_the_order_show_text_and_take_labels():
    rows = ea.summary_rows({"orders": 5, "notices_written": 0, "rule": None}, labels={"orders": "заказов"})
    assert rows == [{"what": "заказов", "value": "5"}, {"what": "notices_written", "value": "0"}, {"what": "rule", "value": "None"}]
