"""Tables (pyarrow, pandas, polars) as Arrow IPC files: back as written, read by the
libraries themselves, and reading their files."""

from __future__ import annotations

import datetime
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.feather
import pyarrow.ipc
import pytest

import typedstore as ts
from helpers import decode_error_without, imported_by_typedstore, in_new_python, join
from typedstore.codecs import ArrowCodec
from typedstore.errors import DecodeError, EncodeError
from typedstore.protocols import byte_view

arrow = ArrowCodec()


def round_trip(value: Any) -> Any:
    assert ts.registry.for_value(value).name == "arrow"
    return arrow.decode(memoryview(join(arrow.encode(value))))


def assert_same_pandas(back: Any, value: Any) -> None:
    assert type(back) is type(value)
    if isinstance(value, pd.DataFrame):
        pd.testing.assert_frame_equal(back, value, check_exact=True)
        assert back.attrs == value.attrs
    elif isinstance(value, pd.Series):
        pd.testing.assert_series_equal(back, value, check_exact=True)
    else:
        pd.testing.assert_index_equal(back, value, exact=True)


COLUMNS: dict[str, Any] = {
    "int": np.array([1, -2, 3], np.int64),
    "uint8": np.array([1, 2, 255], np.uint8),
    "float16": np.array([0.5, np.nan, -1], np.float16),
    "bool": np.array([True, False, True]),
    "str": pd.Series(["a", None, "c"]),
    "string": pd.Series(["a", None, "c"], dtype="string"),
    "Int64": pd.array([1, None, 3], dtype="Int64"),
    "boolean": pd.array([True, None, False], dtype="boolean"),
    "category": pd.Categorical(["x", "y", "x"], categories=["y", "x", "z"]),
    "ordered": pd.Categorical(["lo", "hi", "lo"], categories=["lo", "hi"], ordered=True),
    "datetime-ns": pd.Series(pd.to_datetime(["2024-01-01", "2024-01-02", None])).astype(
        "datetime64[ns]"
    ),
    "datetime-tz": pd.to_datetime(["2024-03-31 01:00", "2024-03-31 03:00", None]).tz_localize(
        "Europe/Paris"
    ),
    "timedelta": pd.to_timedelta([1, 2, None], unit="s"),
    "period": pd.period_range("2024-01", periods=3, freq="M"),
    "interval": pd.interval_range(0, 3),
    "bytes": pd.Series([b"a", b"\x00", b""], dtype=object),
    "dates": pd.Series([datetime.date(2024, 1, i) for i in (1, 2, 3)], dtype=object),
    "object strings": pd.Series(["a", "b", "c"], dtype=object),
}


@pytest.mark.parametrize("name", sorted(COLUMNS))
def test_pandas_columns_come_back_with_their_dtype(name: str) -> None:
    frame = pd.DataFrame({name: COLUMNS[name]})
    assert_same_pandas(round_trip(frame), frame)


def test_a_mixed_frame_keeps_its_index_order_and_attrs() -> None:
    frame = pd.DataFrame(
        {key: COLUMNS[key] for key in ("string", "int", "category", "datetime-tz")},
        index=pd.MultiIndex.from_tuples([(1, "a"), (1, "b"), (2, "a")], names=["n", "s"]),
    )
    frame.attrs["source"] = "run-1"
    assert_same_pandas(round_trip(frame), frame)
    ranged = pd.DataFrame({"x": [1.0, 2.0]}, index=pd.RangeIndex(10, 14, 2, name="step"))
    assert_same_pandas(round_trip(ranged), ranged)


@pytest.mark.parametrize(
    "series",
    [
        pd.Series([1.5, 2.5], name="loss"),
        pd.Series([1, 2], name=None, index=pd.Index(["a", "b"], name="k")),
        pd.Series(["x", None], name=("metric", 3)),
        pd.Series(pd.Categorical(["a", "b"]), name=7),
    ],
)
def test_pandas_series_keep_their_name_and_index(series: pd.Series) -> None:
    assert_same_pandas(round_trip(series), series)


@pytest.mark.parametrize(
    "index",
    [
        pd.Index([3, 1, 2], name="id"),
        pd.RangeIndex(0, 9, 3),
        pd.MultiIndex.from_product([[1, 2], ["a", "b"]], names=["n", "s"]),
        pd.DatetimeIndex(["2024-01-01", "2024-01-02"], tz="UTC", name="t"),
    ],
)
def test_pandas_indexes(index: pd.Index) -> None:
    assert_same_pandas(round_trip(index), index)


LABELLED = {
    "int": pd.DataFrame({0: [1.5], 1: [2.5]}),
    "range": pd.DataFrame(np.zeros((2, 3))),
    "named range": pd.DataFrame(np.zeros((2, 3))).rename_axis("feature", axis=1),
    "float": pd.DataFrame({0.5: [1], 1.5: [2]}),
    "int and str that look alike": pd.DataFrame({1: [1], "1": [2]}),
    "tuple and str": pd.DataFrame({("a", 1): [1], "b": [2]}),
    "bool": pd.DataFrame({True: [1], False: [2]}),
    "none": pd.DataFrame({None: [1], "b": [2]}),
    "named str": pd.DataFrame({"a": [1]}).rename_axis("what", axis=1),
    "multi": pd.DataFrame(
        [[1, 2, 3]],
        columns=pd.MultiIndex.from_tuples([(1, "x"), (1, "y"), (2, "x")], names=["n", None]),
    ),
}


@pytest.mark.parametrize("name", sorted(LABELLED))
def test_column_labels_of_any_kind_come_back_exactly(store: Path, name: str) -> None:
    frame = LABELLED[name]
    back = round_trip(frame)
    pd.testing.assert_frame_equal(back, frame, check_exact=True, check_column_type=True)
    assert type(back.columns) is type(frame.columns)
    io = ts.DataStoreIO.serialize_write(frame, "p")
    at = sorted({len(frame.columns) - 1, 0}, reverse=True)  # the last column, then the first
    part = io.read_deserialize(columns=list(frame.columns[at]))
    pd.testing.assert_frame_equal(part, frame.iloc[:, at], check_exact=True)


def test_columns_chosen_by_a_label_the_frame_lacks(store: Path) -> None:
    io = ts.DataStoreIO.serialize_write(LABELLED["multi"], "p")
    with pytest.raises(DecodeError, match=r"no column \(3, 'x'\)"):
        io.read_deserialize(columns=[(3, "x")])
    with pytest.raises(DecodeError, match="names several columns"):
        io.read_deserialize(columns=[1])
    with pytest.raises(DecodeError, match="no column 0"):
        ts.DataStoreIO.serialize_write(pd.DataFrame({"a": [1]}), "p").read_deserialize(
            columns=[0]
        )


def test_pyarrow_tables_and_batches_keep_schema_metadata_and_chunks() -> None:
    schema = pa.schema(
        [pa.field("a", pa.int32(), metadata={b"unit": b"m"}), pa.field("b", pa.large_string())],
        metadata={b"origin": b"sensor"},
    )
    table = pa.Table.from_batches(
        [pa.record_batch([[1, 2], ["x", "y"]], schema=schema)] * 2, schema=schema
    )
    back = round_trip(table)
    assert type(back) is pa.Table
    assert back.equals(table, check_metadata=True)
    assert back.column("a").num_chunks == 2
    batch = table.to_batches()[0]
    back_batch = round_trip(batch)
    assert type(back_batch) is pa.RecordBatch
    assert back_batch.equals(batch, check_metadata=True)


def test_polars_frames_and_series() -> None:
    frame = pl.DataFrame(
        {
            "i": [1, 2],
            "cat": pl.Series(["x", "y"], dtype=pl.Categorical),
            "enum": pl.Series(["lo", "hi"], dtype=pl.Enum(["lo", "hi", "mid"])),
            "list": [[1], [2, 3]],
            "struct": [{"a": 1, "b": "x"}, {"a": 2, "b": None}],
        }
    )
    back = round_trip(frame)
    assert type(back) is pl.DataFrame
    assert back.schema == frame.schema
    assert back.equals(frame)
    series = pl.Series("loss", [0.5, None], dtype=pl.Float32)
    back_series = round_trip(series)
    assert type(back_series) is pl.Series
    assert back_series.name == "loss"
    assert back_series.dtype == pl.Float32
    assert back_series.equals(series)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame({"o": [[1, 2], [3]]}), "column 'o' holds Python objects"),
        (pd.DataFrame({"o": [{"a": 1}, 2]}), "column 'o' holds Python objects"),
        (pd.DataFrame({"o": [1, "a"]}, dtype=object), "column 'o' holds Python objects"),
        (pd.DataFrame({"o": ["a", None]}, dtype=object), "missing values"),
        (pd.DataFrame([[1, 2]], columns=["a", "a"]), "column labels must be distinct"),
        (pd.DataFrame([[1, 2]], columns=[0, 0]), "column labels must be distinct"),
        (pd.DataFrame([[1]], columns=[object()]), "tree format holds"),
        (
            pd.DataFrame([[1]], columns=pd.CategoricalIndex(["a"], categories=["a", "b"])),
            "would not come back",
        ),
        (pd.DataFrame({"s": pd.arrays.SparseArray([0, 1])}), "cannot store"),
        (pd.DataFrame({"a": [1]}, index=pd.Index([object()])), "index level 0"),
    ],
)
def test_what_arrow_cannot_give_back_is_refused_at_write(
    store: Path, frame: pd.DataFrame, message: str
) -> None:
    with pytest.raises(EncodeError, match=message):
        ts.DataStoreIO.serialize_write(frame, "p")
    assert not store.exists() or not any(p.is_file() for p in store.rglob("*"))


def test_the_libraries_read_typedstore_files(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"], "c": pd.Categorical(["u", "v"])})
    path = tmp_path / "frame.arrow"
    path.write_bytes(join(arrow.encode(frame)))
    assert pa.ipc.open_file(str(path)).read_all().num_rows == 2
    pd.testing.assert_frame_equal(pd.read_feather(path), frame)
    assert pl.read_ipc(path).get_column("a").to_list() == [1, 2]


def test_typedstore_reads_files_the_libraries_write(tmp_path: Path) -> None:
    table = pa.table({"a": [1, 2, 3], "b": [0.5, None, 2.0]})
    feather = tmp_path / "t.feather"
    pyarrow.feather.write_feather(table, feather, compression="uncompressed")
    assert arrow.decode(memoryview(feather.read_bytes())).equals(table)
    polars_file = tmp_path / "t.ipc"
    pl.DataFrame({"a": [1, 2, 3]}).write_ipc(polars_file, compression="uncompressed")
    assert arrow.decode(memoryview(polars_file.read_bytes())).column("a").to_pylist() == [1, 2, 3]


def test_duckdb_results_are_stored_and_tables_read_back_are_queried(store: Path) -> None:
    # DuckDB reads Arrow IPC files only through its community extension (a download):
    # here it meets typedstore through Arrow memory, both ways.
    import duckdb

    sql = "select range as i, 'w' || range::varchar as s from range(1000)"
    relation = duckdb.sql(sql)
    assert relation is not None
    result = relation.to_arrow_table()
    io = ts.DataStoreIO.serialize_write(result, "p")
    stored = io.read_deserialize(pa.Table, zero_copy=True)
    assert stored.equals(result)
    totals = duckdb.sql("select sum(i), count(distinct s) from stored")
    assert totals is not None
    assert totals.fetchall() == [(499500, 1000)]


def test_through_datastoreio_zero_copy_and_a_lazy_datastore(store: Path) -> None:
    frame = pd.DataFrame({"w": np.arange(100_000, dtype=np.float64), "s": ["x"] * 100_000})
    io = ts.DataStoreIO.serialize_write(frame, "p")
    assert io.reference.codec == "arrow"
    assert_same_pandas(io.read_deserialize(pd.DataFrame), frame)
    table = pa.Table.from_pandas(frame)
    view = ts.DataStoreIO.serialize_write(table, "p").read_deserialize(pa.Table, zero_copy=True)
    assert view.equals(table)
    url = ts.DataStore(series=frame["w"], arrays=np.ones(3)).to_url("p")
    lazy = ts.DataStore.from_url(url, lazy=True)
    assert_same_pandas(lazy.series, frame["w"])


def test_reading_some_columns(store: Path) -> None:
    frame = pd.DataFrame(
        {"a": [1, 2, 3], "b": ["x", "y", "z"], "c": pd.Categorical(["u", "v", "u"])},
        index=pd.MultiIndex.from_tuples([(1, "p"), (1, "q"), (2, "p")], names=["n", "s"]),
    )
    io = ts.DataStoreIO.serialize_write(frame, "p")
    pd.testing.assert_frame_equal(io.read_deserialize(columns=["c", "a"]), frame[["c", "a"]])
    table = pa.table({"x": [1, 2], "y": ["a", "b"]})
    part = ts.DataStoreIO.serialize_write(table, "p").read_deserialize(columns=["y"])
    assert part.equals(table.select(["y"]))
    polars_frame = pl.DataFrame({"x": [1, 2], "y": ["a", "b"]})
    polars_part = ts.DataStoreIO.serialize_write(polars_frame, "p").read_deserialize(columns=["y"])
    assert polars_part.equals(polars_frame.select(["y"]))
    with pytest.raises(DecodeError, match="no column 'nope'"):
        io.read_deserialize(columns=["nope"])
    series = ts.DataStoreIO.serialize_write(frame["a"], "p")
    with pytest.raises(DecodeError, match="no columns to choose from"):
        series.read_deserialize(columns=["a"])
    with pytest.raises(ts.errors.TypeMismatchError, match="columns= is for tables"):
        ts.DataStoreIO.serialize_write(np.ones(3), "p").read_deserialize(columns=["a"])
    with pytest.raises(ts.errors.TypeMismatchError, match="not one name"):
        io.read_deserialize(columns="a")


def test_writing_shares_the_columns_memory() -> None:
    column = np.arange(8 << 20, dtype=np.float64)  # 64 MiB
    table = pa.table({"w": column, "i": np.arange(8 << 20, dtype=np.int32)})
    before = pa.total_allocated_bytes()
    chunks = arrow.encode(table)
    assert pa.total_allocated_bytes() - before < 1 << 20  # no copy of the data
    shared = [c for c in chunks if np.shares_memory(np.frombuffer(byte_view(c), np.uint8), column)]
    assert len(shared) == 1
    assert arrow.decode(memoryview(join(chunks))).equals(table)


def test_malformed_files_are_decode_errors() -> None:
    data = bytearray(join(arrow.encode(pa.table({"a": list(range(100))}))))
    for cut in (0, 8, len(data) // 2, len(data) - 4):
        with pytest.raises(DecodeError):
            arrow.decode(memoryview(bytes(data[:cut])))
    with pytest.raises(DecodeError):
        arrow.decode(memoryview(b"ARROW1\x00\x00" + b"\xff" * 64 + b"ARROW1"))


@pytest.mark.parametrize("compression", ["lz4", "zstd"])
def test_compressed_tables(store: Path, tmp_path: Path, compression: str) -> None:
    frame = pd.DataFrame({"a": np.arange(10_000), "s": ["left", "right"] * 5_000})
    plain = ts.DataStoreIO.serialize_write(frame, "p")
    with ts.options.ctx({"codecs.arrow.compression": compression}):
        packed = ts.DataStoreIO.serialize_write(frame, "p")
    assert len(packed.read()) < len(plain.read()) / 2
    assert_same_pandas(packed.read_deserialize(pd.DataFrame), frame)
    assert_same_pandas(packed.read_deserialize(pd.DataFrame, zero_copy=True), frame)
    pd.testing.assert_frame_equal(packed.read_deserialize(columns=["s"]), frame[["s"]])
    path = tmp_path / "packed.arrow"
    path.write_bytes(packed.read())
    pd.testing.assert_frame_equal(pd.read_feather(path), frame)
    assert pl.read_ipc(path).get_column("s").to_list() == frame["s"].to_list()


def test_the_compressed_files_of_other_tools_are_read(tmp_path: Path) -> None:
    table = pa.table({"a": np.arange(5_000), "b": ["x"] * 5_000})
    path = tmp_path / "t.feather"
    pyarrow.feather.write_feather(table, path)  # lz4 unless told otherwise
    assert arrow.decode(memoryview(path.read_bytes())).equals(table)
    pl.DataFrame(table).write_ipc(path, compression="zstd")
    assert arrow.decode(memoryview(path.read_bytes())).to_pydict() == table.to_pydict()


def test_nearly_constant_tables_too_compressible_to_read_are_refused_at_write(
    store: Path,
) -> None:
    frame = pd.DataFrame({"zeros": np.zeros(1 << 20)})
    with (
        ts.options.ctx({"codecs.arrow.compression": "zstd"}),
        pytest.raises(EncodeError, match=r"compresses \d+-fold.*'lz4'"),
    ):
        ts.DataStoreIO.serialize_write(frame, "p")
    with ts.options.ctx({"codecs.arrow.compression": "lz4"}):
        io = ts.DataStoreIO.serialize_write(frame, "p")
    assert_same_pandas(io.read_deserialize(pd.DataFrame), frame)
    with pytest.raises(ts.errors.OptionValueError, match="'lz4', 'zstd', got 'gzip'"):
        ts.options.set("codecs.arrow.compression", "gzip")


def bomb(declared: int) -> bytes:
    """A zstd-compressed table whose first compressed buffer declares ``declared`` bytes."""
    values = np.arange(1_000, dtype=np.int64)
    with ts.options.ctx({"codecs.arrow.compression": "zstd"}):
        data = bytearray(join(arrow.encode(pa.table({"a": values}))))
    at = data.find(struct.pack("<q", values.nbytes))
    assert at > 0
    data[at : at + 8] = struct.pack("<q", declared)
    return bytes(data)


def test_compressed_buffers_declaring_too_much_are_refused_before_allocating(
    store: Path,
) -> None:
    data = bomb(1 << 40)
    with pytest.raises(DecodeError, match="declare 1099511627776 bytes"):
        arrow.decode(memoryview(data))
    raw = ts.DataStoreIO.write(data, "p").reference
    io = ts.DataStoreIO(f"datastore:///{raw.key}?codec=arrow")
    with pytest.raises(DecodeError, match="declare"):
        io.read_deserialize()
    with pytest.raises(DecodeError, match="declare"):
        io.read_deserialize(columns=["a"])
    # pyarrow itself would allocate the declared terabyte before decompressing.
    peak = in_new_python(
        "import pyarrow as pa\n"
        "from typedstore.codecs import ArrowCodec\n"
        "from typedstore.errors import DecodeError\n"
        f"data = {data!r}\n"
        "try:\n"
        "    ArrowCodec().decode(memoryview(data))\n"
        "except DecodeError:\n"
        "    print(pa.default_memory_pool().max_memory())\n"
    )
    assert int(peak) < 1 << 20


def test_structures_pointing_outside_the_file_are_decode_errors() -> None:
    data = join(arrow.encode(pa.table({"a": list(range(100))})))
    footer_length = struct.unpack_from("<i", data, len(data) - 10)[0]
    for bad in (-1, len(data)):
        broken = data[:-10] + struct.pack("<i", bad) + data[-6:]
        with pytest.raises(DecodeError, match="footer's length"):
            arrow.decode(memoryview(broken))
    assert footer_length > 0


def test_importing_typedstore_imports_no_table_library() -> None:
    assert imported_by_typedstore("pandas", "pyarrow", "polars") == []


def test_reading_a_table_without_pyarrow_names_the_extra(tmp_path: Path) -> None:
    path = tmp_path / "t.arrow"
    path.write_bytes(join(arrow.encode(pa.table({"a": [1]}))))
    assert "pip install 'typedstore[arrow]'" in decode_error_without("pyarrow", "arrow", path)
