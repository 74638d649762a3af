"""Content versions (usr_core.content, usr_core.inspect): order-independent, additive, layout-blind [G1]."""
from __future__ import annotations

import pyarrow as pa

from usr_core import Dataset, ensure_registry_entries
from usr_core.content import format_version, table_sums
from usr_core.inspect import namespace_version, version_of_rows


def _table(n=50, offset=0):
    return pa.table({
        "id": pa.array([f"k{i:05d}" for i in range(offset, offset + n)]),
        "ns__f": pa.array([None if i % 7 == 0 else i / 3 for i in range(n)], pa.float64()),
        "ns__s": pa.array([None if i % 5 == 0 else "x" * (i % 4) for i in range(n)], pa.string()),
        "ns__l": pa.array([None if i % 6 == 0 else [float(i), None, 1.5][: i % 4] for i in range(n)],
                          pa.list_(pa.float64())),
        "ns__st": pa.array([{"a": i, "b": None if i % 2 else "y"} for i in range(n)],
                           pa.struct([("a", pa.int64()), ("b", pa.string())])),
    })


def test_sums_ignore_order_chunking_and_all_null_rows():
    t = _table()
    base = table_sums(t, "id")
    assert table_sums(t.take(pa.array(list(range(49, -1, -1)))), "id") == base
    assert table_sums(pa.concat_tables([t.slice(0, 17), t.slice(17)]), "id") == base
    nulls = pa.table({c: pa.nulls(3, t.schema.field(c).type) if c != "id" else pa.array(["z1", "z2", "z3"])
                      for c in t.column_names})
    assert table_sums(pa.concat_tables([t, nulls]), "id") == base  # rows without a value are not seen


def test_sums_see_every_value_null_and_column():
    t = _table()
    base = table_sums(t, "id")
    for col in ("ns__f", "ns__s", "ns__l", "ns__st"):
        values = t.column(col).to_pylist()
        values[1] = values[2]
        changed = t.set_column(t.column_names.index(col), col, pa.array(values, t.schema.field(col).type))
        assert table_sums(changed, "id") != base, col
    renamed = t.rename_columns(["id", "ns__g", "ns__s", "ns__l", "ns__st"])
    assert table_sums(renamed, "id") != base
    lists = t.column("ns__l").to_pylist()
    lists[3] = [3.0, None, 1.5][::-1]
    assert table_sums(t.set_column(3, "ns__l", pa.array(lists, pa.list_(pa.float64()))), "id") != base


def test_versions_add_up_and_match_the_view(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    ensure_registry_entries(root, {"ns": {"columns": [{"name": "ns__f", "type": "float64"}], "owner": None,
                                          "description": None}})
    ds = Dataset(root, "d")
    ds.init(source="t")
    ids = ds.add_sequences(["ACGT" * (i + 1) for i in range(30)], bio_type="dna", alphabet="dna_4").ids
    a = pa.table({"id": ids[:20], "ns__f": pa.array([float(i) for i in range(20)])})
    b = pa.table({"id": ids[20:], "ns__f": pa.array([None] + [1.0] * 9, pa.float64())})
    ds.write_part("ns", a)
    v_a = namespace_version(ds, "ns")
    assert v_a == version_of_rows(a, "id")
    ds.write_part("ns", b)
    assert namespace_version(ds, "ns") == version_of_rows(b, "id", v_a)
    with ds.maintenance(reason="t"):
        ds.compact_overlay("ns")
    assert namespace_version(ds, "ns") == version_of_rows(b, "id", v_a)
    assert version_of_rows(pa.table({"id": pa.array([], pa.string())})) == format_version(0, 0, 0)


def test_a_string_hashes_the_same_in_equal_and_mixed_width_arrays():
    from usr_core.content import hash_array

    equal, _ = hash_array(pa.array(["abc", "xyz"]))
    mixed, _ = hash_array(pa.array(["abc", "longer", ""]))
    sliced, _ = hash_array(pa.array(["zz", "abc", "q"]).slice(1, 1))
    assert equal[0] == mixed[0] == sliced[0] and equal[0] != equal[1]
