"""UsrIOManager: downstream assets load the merged view (O10); columns/include_deleted; arrow vs pandas [T3]."""
from __future__ import annotations

import dagster as dg
import pandas as pd
import pyarrow as pa

from usr_core import Dataset, ensure_registry_entries
from usr_dagster import UsrIOManager, UsrResource, build_usr_definitions
from usr_dagster.common import namespace_key, records_key
from usr_dagster.demo.namespaces import DEMO_NAMESPACES


def _resources(root):
    return {"usr": UsrResource(root=str(root)), "io_manager": UsrIOManager(root=str(root))}


def test_O10_load_input_columns_include_deleted_and_types(usr_root):
    """[O10] [O11] [T3] namespace input = id + its columns; `columns` projects; include_deleted shows tombstoned
    rows; a pandas annotation gets a DataFrame, anything else a pyarrow Table."""
    ds = Dataset(usr_root, "beta")
    gone = ds.head(2, include_derived=False).column("id").to_pylist()
    ds.tombstone(gone, reason="test")
    seen = {}

    @dg.asset(ins={"gc": dg.AssetIn(key=namespace_key("beta", "gc"))})
    def gc_arrow(gc: pa.Table) -> None:
        seen["arrow"] = gc

    @dg.asset(ins={"gc": dg.AssetIn(key=namespace_key("beta", "gc"), metadata={"columns": ["id", "gc__count"]})})
    def gc_pandas(gc: pd.DataFrame) -> None:
        seen["pandas"] = gc

    @dg.asset(ins={"recs": dg.AssetIn(key=records_key("beta"),
                                      metadata={"include_deleted": True,
                                                "columns": ["id", "sequence", "usr__deleted", "gc__fraction"]})},
              deps=[namespace_key("beta", "gc")])
    def all_records(recs: pa.Table) -> None:
        seen["deleted"] = recs

    @dg.asset(ins={"recs": dg.AssetIn(key=records_key("beta"))}, deps=[namespace_key("beta", "gc")])
    def visible_records(recs) -> None:
        seen["visible"] = recs

    defs = build_usr_definitions(usr_root, DEMO_NAMESPACES)
    downstream = [gc_arrow, gc_pandas, all_records, visible_records]
    res = dg.materialize([*defs.assets, *downstream],
                         selection=[namespace_key("beta", "gc"), *[a.key for a in downstream]],
                         instance=dg.DagsterInstance.ephemeral(), resources=_resources(usr_root))
    assert res.success
    assert isinstance(seen["arrow"], pa.Table)
    assert seen["arrow"].column_names == ["id", "gc__fraction", "gc__count"]
    assert seen["arrow"].num_rows == 48
    assert isinstance(seen["pandas"], pd.DataFrame) and list(seen["pandas"].columns) == ["id", "gc__count"]
    deleted = seen["deleted"]
    assert deleted.num_rows == 50 and deleted.column_names == ["id", "sequence", "usr__deleted", "gc__fraction"]
    flagged = {r["id"] for r in deleted.to_pylist() if r["usr__deleted"]}
    assert flagged == set(gone)
    visible = seen["visible"]
    assert isinstance(visible, pa.Table) and visible.num_rows == 48
    assert "gc__fraction" in visible.column_names and not set(gone) & set(visible.column("id").to_pylist())


def test_O6_handle_output_writes_a_part(usr_root):
    """[O6] an asset returning a table through the IO manager writes an overlay part of its namespace."""
    ensure_registry_entries(usr_root, {"hand": {"columns": [{"name": "hand__v", "type": "float64"}],
                                                "owner": None, "description": None}})
    ids = Dataset(usr_root, "beta").read_table(columns=["id"], include_overlays=False).column("id")

    @dg.asset(key=namespace_key("beta", "hand"), deps=[records_key("beta")])
    def hand() -> pd.DataFrame:
        return pd.DataFrame({"id": ids.to_pylist(), "hand__v": [0.5] * len(ids)})

    defs = build_usr_definitions(usr_root, [])
    res = dg.materialize([*defs.assets, hand], selection=[hand.key], instance=dg.DagsterInstance.ephemeral(),
                         resources=_resources(usr_root))
    assert res.success
    parts = list((Dataset(usr_root, "beta").dir / "_derived" / "hand").glob("part-*.parquet"))
    assert len(parts) == 1
    md = res.asset_materializations_for_node("beta__hand")[0].metadata
    assert md["dagster/row_count"].value == 50 and md["usr/part_path"].value == str(parts[0])
    assert Dataset(usr_root, "beta").read_table(columns=["hand__v"]).column("hand__v").to_pylist() == [0.5] * 50
