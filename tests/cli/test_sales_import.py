"""`vozvrat sales import FILE`: the whole file checked first; a malformed file leaves the database as it was."""
from __future__ import annotations

import json

from sqlalchemy import func, select
from typer.testing import CliRunner

from cli.main import app
from models.db import make_engine
from models.tables import Event, Order, Ticket
from tests import factories as f


def write(tmp_path, *lines) -> str:
    path = tmp_path / "orders.jsonl"
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)) + "\n" for line in lines),
                    encoding="utf-8")
    return str(path)


def run(*args):
    return CliRunner().invoke(app, ["sales", "import", *args])


def rows(url) -> dict[str, int]:
    engine = make_engine(url)
    with engine.connect() as conn:
        out = {t.__tablename__: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in (Event, Order, Ticket)}
    engine.dispose()
    return out


def test_import_then_again_reports_created_then_unchanged(sqlite_url, tmp_path):
    feed = write(tmp_path, f.sales_order("K-1", barcodes=("B1",)), f.sales_order("K-2", barcodes=("B2", "B3")))
    first = run(feed, "--db", sqlite_url, "--json")
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout) | {"refused_lines": []} == {
        "orders": 2, "created": 2, "updated": 0, "unchanged": 0, "refused": 0, "claims_refused": 0, "claims_closed": 0, "refused_lines": []}
    second = run(feed, "--db", sqlite_url)
    assert second.exit_code == 0
    assert "created 0, updated 0, unchanged 2, refused 0" in second.stdout
    assert rows(sqlite_url) == {"event": 1, "ticket_order": 2, "ticket": 3}


def test_refused_lines_are_reported_with_their_numbers_and_reasons(sqlite_url, tmp_path):
    naive = f.sales_order("K-3", barcodes=("B3",))
    naive["event"]["starts_at"] = "2026-12-20T19:00:00"
    feed = write(tmp_path, f.sales_order("K-1", barcodes=("B1",)), "", f.sales_order("K-2", barcodes=("B1",)), naive,
                 f.sales_order("K-4", barcodes=("B4",)))
    result = run(feed, "--db", sqlite_url)
    assert result.exit_code == 1  # some lines were refused; the others are in
    assert "created 2, updated 0, unchanged 0, refused 2" in result.stdout
    assert "  line 3 (K-2): tickets.0.barcode: Штрихкод B1 уже принадлежит заказу K-1." in result.stdout
    assert "  line 4 (K-3): event.starts_at: Нужны дата и время с часовым поясом" in result.stdout
    summary = json.loads(run(feed, "--db", sqlite_url, "--json").stdout)
    assert [(r["line"], r["order_number"]) for r in summary["refused_lines"]] == [(3, "K-2"), (4, "K-3")]
    assert rows(sqlite_url)["ticket_order"] == 2


def test_a_malformed_file_is_one_line_exit_2_and_writes_nothing(sqlite_url, tmp_path):
    run(write(tmp_path, f.sales_order("K-1", barcodes=("B1",))), "--db", sqlite_url)
    before = rows(sqlite_url)
    changed = f.sales_order("K-1", barcodes=("B1",), event_status="cancelled")
    feed = write(tmp_path, changed, f.sales_order("K-2", barcodes=("B2",)), '{"number": "K-3", ')
    result = run(feed, "--db", sqlite_url)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [result.stderr.strip()] and result.stderr.startswith("error: ")
    assert "line 3: not JSON" in result.stderr and "nothing was imported" in result.stderr
    assert rows(sqlite_url) == before
    engine = make_engine(sqlite_url)
    with engine.connect() as conn:
        assert conn.execute(select(Event.status)).scalar_one() == "scheduled"  # line 1's change was not written either
    engine.dispose()


def test_not_a_file_and_not_utf8_are_exit_2(sqlite_url, tmp_path):
    assert run(str(tmp_path), "--db", sqlite_url).exit_code == 2
    binary = tmp_path / "orders.jsonl"
    binary.write_bytes(b"\xff\xfe\x00")
    result = run(str(binary), "--db", sqlite_url)
    assert result.exit_code == 2 and "not UTF-8" in result.stderr


def test_the_shipped_sample_imports_cleanly(sqlite_url):
    result = run("docs/sample-sales.jsonl", "--db", sqlite_url, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["refused"] == 0 and 30 <= summary["created"] <= 60
    again = json.loads(run("docs/sample-sales.jsonl", "--db", sqlite_url, "--json").stdout)
    assert again["unchanged"] == summary["created"]


def test_bench_sales_import_prints_one_json_line():
    result = CliRunner().invoke(app, ["bench", "sales-import", "--orders", "200", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["created"] == figures["reimport_unchanged"] == 200 and figures["refused"] == 0
    assert figures["orders_per_s"] > 0 and figures["machine"]["cpus"] >= 1


def test_a_file_changed_between_the_check_and_the_write_writes_nothing(sqlite_url, tmp_path):
    from datetime import UTC, datetime

    import pytest

    from tasks.sales import MalformedFile, check_file, import_orders, valid_orders

    path = tmp_path / "orders.jsonl"
    write(tmp_path, f.sales_order("K-1", barcodes=("B1",)), f.sales_order("K-2", barcodes=("B2",)))
    check = check_file(path)
    write(tmp_path, f.sales_order("K-1", barcodes=("B1",)), f.sales_order("K-2", barcodes=("B2",), event_status="cancelled"))
    engine = make_engine(sqlite_url)
    with pytest.raises(MalformedFile, match="changed while it was being imported"):
        import_orders(engine, valid_orders(path, check), actor="test", now=datetime(2026, 11, 26, tzinfo=UTC), chunk_size=1)
    engine.dispose()
    assert rows(sqlite_url)["ticket_order"] == 0  # K-1's chunk was written, then rolled back with the rest
