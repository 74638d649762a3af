"""U3-U4: record state, an upsert into the reserved compact overlay `usr_state`."""
from __future__ import annotations

import pyarrow as pa

from .. import read as rd
from .. import tombstones as tb
from ..contract import STATE_NS
from ..txn import Writer
from .tombstone import existing_ids, upsert_reserved


def set_state(w: Writer, ids, masked=None, qc_status=None, split=None, supersedes=None, lineage=None,
              allow_missing=False, actor=None) -> int:
    w.require()
    vals = tb.state_values(masked, qc_status, split, supersedes, lineage)
    ids = existing_ids(w, ids, allow_missing)
    args = {"rows": len(ids), "masked": masked, "qc_status": vals.get("usr_state__qc_status"),
            "split": vals.get("usr_state__split"), "supersedes": vals.get("usr_state__supersedes"),
            "lineage_count": len(vals.get("usr_state__lineage") or []), "allow_missing": allow_missing}
    return upsert_reserved(w, STATE_NS, tb.state_table(ids, vals), "state_set", args, actor) if ids else 0


def clear_state(w: Writer, ids, allow_missing=False, actor=None) -> int:
    ids = existing_ids(w, ids, allow_missing)
    args = {"rows": len(ids), "allow_missing": allow_missing}
    return upsert_reserved(w, STATE_NS, tb.state_table(ids, tb.clear_values()), "state_clear", args, actor) if ids else 0


def get_state(w: Writer, ids, allow_missing=False) -> pa.Table:
    """U5: one row per id in request order (a read: no transaction)."""
    w.require()
    ids = tb.clean_ids(ids)
    tb.check_ids_exist(w.paths, ids, allow_missing)
    only_state = [STATE_NS]  # other overlays need not conform to read the state
    names = [c for c in rd.output_schema(w.paths, include_overlays=only_state).names if c.startswith("usr_state__")]
    merged = rd.get_rows(w.paths, ids, columns=["id"] + names, include_deleted=True, include_overlays=only_state)
    return tb.state_result(ids, merged)
