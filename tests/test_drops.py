"""The drops ledger: every stage's dropped rows, and the account of every row read."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from koquality.drops import DROPPED_SCHEMA, Ledger, dropped_rows


def corpus(n, start=0):
    return pa.table({"id": [f"r{i}" for i in range(start, start + n)], "source": ["s"] * n,
                     "instruction": [f"질문 {i}" for i in range(start, start + n)], "len": [3] * n})


def test_rows_dropped_in_any_stage_order_are_accounted_for():
    rows = corpus(10)
    for order in (("unscorable", "contaminated"), ("contaminated", "unscorable")):
        ledger = Ledger(read=10)
        left = rows
        for reason in order:
            gone, left = left.slice(0, 2), left.slice(2)
            assert ledger.drop(gone, reason, [f"{reason} {i}" for i in range(gone.num_rows)]) == 2
        assert ledger.rows(left.num_rows) == {"read": 10, "dropped": 4, "corpus": 6}
        assert ledger.by_reason() == {"unscorable": 2, "contaminated": 2}
        assert ledger.table.column("reason").to_pylist() == [order[0]] * 2 + [order[1]] * 2


def test_a_lost_row_is_an_error_not_a_count():
    ledger = Ledger(read=10)
    ledger.drop(corpus(2), "unscorable", "x")
    with pytest.raises(RuntimeError, match="10 read, 2 dropped, 7 in the corpus"):
        ledger.rows(7)


def test_dropped_rows_keep_the_texts_they_have_and_a_detail_each():
    table = dropped_rows(corpus(2), "semantic_duplicate", ["same as r5", "same as r6"])
    assert table.schema.equals(DROPPED_SCHEMA)
    assert table.column("instruction").to_pylist() == ["질문 0", "질문 1"]
    assert table.column("output").null_count == 2  # the corpus slice had no output column
    assert table.column("detail").to_pylist() == ["same as r5", "same as r6"]
    with pytest.raises(ValueError, match="1 details for 2 rows"):
        dropped_rows(corpus(2), "x", ["only one"])


def test_ingest_rows_enter_with_their_file_and_location(tmp_path):
    ingest_rows = pa.table({name: ["v"] for name in DROPPED_SCHEMA.names}, schema=DROPPED_SCHEMA)
    ledger = Ledger(read=3, dropped=ingest_rows)
    ledger.drop(corpus(1), "unscorable", "0 morphemes")
    assert ledger.rows(1)["dropped"] == 2
    assert ledger.table.column("file").to_pylist() == ["v", None]
    ledger.write(tmp_path / "dropped.parquet")
    assert pq.read_table(tmp_path / "dropped.parquet").num_rows == 2
    with pytest.raises(ValueError, match="ledger's schema"):
        ledger.add(corpus(1))
