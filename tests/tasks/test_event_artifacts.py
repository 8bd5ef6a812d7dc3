"""The chunked event flows' artifact helpers (tasks/event_artifacts.py): keys, percent, summary rows, and the
mass cancellation's artifacts made with them. Creating the artifacts themselves is exercised on the real stack by
tests/flows/test_regimes_e2e.py."""
from __future__ import annotations

from uuid import UUID

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
    assert rows == [{"что": "заказов", "значение": "5"}, {"что": "notices_written", "значение": "0"}, {"что": "rule", "значение": "None"}]


@pytest.fixture
def created(monkeypatch) -> list[tuple[str, tuple, dict]]:
    """The artifacts the helpers create, caught at Prefect's own functions (no server needed)."""
    import uuid

    import prefect.artifacts

    calls: list[tuple[str, tuple, dict]] = []
    for name in ("create_table_artifact", "create_markdown_artifact", "create_progress_artifact", "update_progress_artifact"):
        monkeypatch.setattr(prefect.artifacts, name, lambda *a, _name=name, **kw: calls.append((_name, a, kw)) or uuid.UUID(int=1))
    return calls


def test_the_mass_cancellation_keeps_its_keys_table_and_follow_ups_on_the_shared_helpers(created):
    """Used to be its own copy in tasks/mass_steps.py: the same keys and markdown as that copy made; its text in
    Russian throughout (the action, the claim states by the staff pages' labels, amounts grouped as «67 760,00 ₽»)."""
    from tasks import mass_steps

    summary = {"event_id": 5, "action": "cancelled", "reason": "Артист заболел", "tickets": 220, "claims": 217,
               "states": {"paid": 176, "needs_bank_details": 41}, "amounts": {"card": 6776000, "cash": 58500000},
               "refunds": {"asked": 177, "succeeded": 176, "failed": 1},
               "failures": {"no_bank_details": {"count": 40, "message_ru": "Нужны реквизиты.", "examples": [f"M-{i}" for i in range(7)]}},
               "mass_sends": [3, 4], "exported": 0, "export_batch_file": None}
    mass_steps.start_progress.fn(5, 9)
    mass_steps.report_progress.fn(UUID(int=1), 9, 9)
    mass_steps.publish_summary.fn(summary)
    (_, start_args, start_kw), (_, done_args, done_kw), (_, (rows,), table_kw), (_, (markdown,), md_kw) = created
    assert start_args == (0.0,) and start_kw == {"key": "mass-cancellation-event-5-progress", "description": "Мероприятие № 5: 9 частей по билетам"}
    assert done_args[1] == 100.0 and done_kw == {"description": "готово частей: 9 из 9"}
    assert table_kw == {"key": "mass-cancellation-event-5", "description": "Мероприятие № 5: отмена, Артист заболел"}
    assert rows == [
        {"что": "билетов", "значение": 220},
        {"что": "заявок", "значение": 217},
        {"что": "заявок «ждёт банковские реквизиты»", "значение": 41},
        {"что": "заявок «деньги выплачены»", "значение": 176},
        {"что": "к возврату: карта (эквайер)", "значение": "67 760,00 ₽"},
        {"что": "к возврату: наличные (перевод по реквизитам)", "значение": "585 000,00 ₽"},
        {"что": "возвраты на карты", "значение": "запрошено 177, успешно 176, не прошло 1"},
        {"что": "выпали из пакета: no_bank_details (40)", "значение": "Нужны реквизиты. Примеры: M-0, M-1, M-2, M-3, M-4"},
        {"что": "массовые рассылки ждут второго сотрудника", "значение": "№ 3, № 4 (vozvrat mass-sends show ID)"},
    ]
    assert md_kw == {"key": "mass-cancellation-event-5-follow-ups"}
    assert markdown == ("### Заявки, выпавшие из пакета\n- `no_bank_details`: 40 — Нужны реквизиты.\n\n"
                        "Список по одной: `vozvrat events follow-ups 5`")


def test_nothing_left_the_batch_so_no_follow_ups_artifact(created):
    from tasks import mass_steps

    mass_steps.publish_summary.fn({"event_id": 6, "action": "replaced", "reason": "", "tickets": 0, "claims": 0, "states": {}, "amounts": {},
                                   "refunds": {}, "failures": {}, "mass_sends": []})
    assert [name for name, _, _ in created] == ["create_table_artifact"]


def test_the_postponement_table_names_its_counts_in_russian(created):
    from tasks import postponement

    postponement.publish_summary.fn(4, {"change_id": 4, "event_id": 9, "orders": 5, "notices_written": 5, "tickets": 7,
                                        "vouchers_issued": 7, "chunks": 6})
    ((name, (rows,), kw),) = created
    assert name == "create_table_artifact" and kw["key"] == "event-postponement-4"
    assert rows == [{"что": "перенос №", "значение": "4"}, {"что": "мероприятие №", "значение": "9"}, {"что": "заказов", "значение": "5"},
                    {"что": "оповещений записано", "значение": "5"}, {"что": "билетов", "значение": "7"},
                    {"что": "выдано ваучеров", "значение": "7"}, {"что": "частей", "значение": "6"}]
