"""overlay-project (X12): compact-overwrite one namespace from a source read view onto a destination."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from .. import read as rd
from ..errors import SchemaError, option_hint
from ..overlays import write as ow
from ..overlays.keys import normalize_keys


def _columns(src_ds, ns: str, columns) -> list[str]:
    available = [c for c in src_ds.schema().names if c.startswith(f"{ns}__")]
    if columns is None:
        if not available:
            raise SchemaError(f"Source {src_ds.name!r} has no {ns}__* columns to project (X12).",
                              hint="Check the namespace against the source's schema().",
                              cli_hint="Check --namespace against `usr schema` of the source.")
        return available
    wanted = [c if "__" in c else f"{ns}__{c}" for c in columns]
    missing = [c for c in wanted if c not in available]
    if missing:
        raise SchemaError(f"Columns {missing} are not {ns}__* columns of source {src_ds.name!r} (X12).",
                          hint=f"Available: {', '.join(available) or 'none'}.")
    return wanted


def project_overlay(src_ds, dest_ds, namespace: str, src_join: str = "id", dest_join: str = "id", columns=None,
                    overwrite: bool = True, allow_missing: bool = False, dry_run: bool = False) -> dict:
    """`src_ds` and `dest_ds` are Datasets (this module uses their public API only)."""
    ow.check_writable_namespace(namespace)
    src_ds.writer.require()
    dest_ds.writer.require()
    cols = _columns(src_ds, namespace, columns)
    view = src_ds.read_table(columns=list(dict.fromkeys([src_join] + cols)))
    keys = normalize_keys(view[src_join], "id")
    view = view.filter(pc.is_valid(keys))
    keys = keys.drop_null()
    if len(pc.unique(keys)) != len(keys):
        raise SchemaError(f"Source join column {src_join!r} is not unique (X12).", hint="Join on a unique column.")
    if dest_join == "id":
        ids = keys
    else:
        dest = dest_ds.read_table(columns=["id", dest_join])
        dkeys = normalize_keys(dest[dest_join], "id")
        if len(pc.unique(dkeys.drop_null())) != len(dkeys.drop_null()):
            raise SchemaError(f"Destination join column {dest_join!r} is not unique (X12).",
                              hint="Join on a unique column.")
        ids = dest["id"].combine_chunks().take(pc.index_in(keys, value_set=dkeys))
    table = pa.Table.from_arrays([ids] + [view[c].combine_chunks() for c in cols], ["id"] + cols)
    base_ids = rd.read_table(dest_ds.paths, columns=["id"], include_overlays=False, include_deleted=True)["id"]
    present = pc.fill_null(pc.is_in(table["id"], value_set=base_ids.combine_chunks()), False)
    matched = pc.sum(present).as_py() or 0
    result = {"namespace": namespace, "src": src_ds.name, "dest": dest_ds.name, "columns": cols,
              "rows_src": table.num_rows, "rows_matched": matched, "rows_missing": table.num_rows - matched,
              "dry_run": dry_run}
    if result["rows_missing"] and not allow_missing:
        raise SchemaError(f"{result['rows_missing']} source row(s) have no destination match (X12).",
                          **option_hint("Pass {} to drop them.", "allow_missing"))
    if dry_run:
        return result
    table = table.filter(present)
    result["rows_written"] = dest_ds.write_overlay(namespace, table, key="id", overwrite=overwrite,
                                                   allow_missing=allow_missing)
    return result
