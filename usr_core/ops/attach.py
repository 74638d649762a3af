"""O5 compact writes: `attach` from a file (coercing) and `write_overlay` from a conforming table."""
from __future__ import annotations

import pyarrow as pa

from .. import read as rd
from ..errors import SchemaError
from ..overlays import write as ow
from ..overlays.discovery import SourceKind, find_overlay
from ..overlays.inputs import read_input
from ..overlays.keys import check_key_name
from ..records import to_table
from ..txn import Writer

BACKENDS = ("pyarrow", "duckdb")


def _preconditions(w: Writer, ns: str, key: str):
    """O5, in order: dataset exists, namespace writable, key supported, no parts directory, registered."""
    w.require()
    ow.check_writable_namespace(ns)
    check_key_name(key)
    require_no_parts(w, ns)
    reg = w.registry(required=True)
    ow.registered_types(reg, ns)
    return reg


def require_no_parts(w: Writer, ns: str) -> None:
    """O5: compact writes need no parts dir (parts already folded by a finished compaction don't count)."""
    src = rd.consistent(w.paths, lambda: find_overlay(w.paths, ns))  # pre-lock calls race compactions
    if src is not None and src.kind == SourceKind.PARTS:
        raise SchemaError(f"Overlay parts already exist for {ns!r}; compact first (O5).",
                          hint=f"Compact them first (ds.compact_overlay({ns!r}) inside ds.maintenance()), or add a part with "
                               "ds.write_part().",
                          cli_hint=f"Compact them first (`usr maintenance overlay-compact {w.name} --namespace {ns}`), "
                                   "or append a part with `usr attach --as-part`.")


def attach(w: Writer, path, ns: str, *, key="id", key_col=None, columns=None, allow_overwrite=False,
           allow_missing=False, parse_json=True, backend="pyarrow", note="", actor=None, event_args=None) -> int:
    if backend not in BACKENDS:
        raise SchemaError(f"Unknown backend {backend!r}.", hint="Use 'pyarrow' or 'duckdb'.")
    reg = _preconditions(w, ns, key)
    extra = ow.check_event_args(event_args, ow.ATTACH_ARG_KEYS)
    raw = read_input(path, key_col or ("sequence" if key != "id" else key))
    table = ow.prepare_attach_table(ns, raw, key=key, key_col=key_col, columns=columns, reg=reg,
                                    coerce=True, parse_json=parse_json)
    return compact_write(w, ns, table, key, reg, allow_overwrite, allow_missing, note, actor, extra)


def write_overlay(w: Writer, ns: str, table, *, key="id", overwrite=False, allow_missing=False, actor=None) -> int:
    reg = _preconditions(w, ns, key)
    table = ow.prepare_attach_table(ns, to_table(table), key=key, key_col=key, columns=None, reg=reg,
                                    coerce=False, parse_json=False)
    return compact_write(w, ns, table, key, reg, overwrite, allow_missing, "", actor, {})


def compact_write(w: Writer, ns: str, table: pa.Table, key: str, reg, allow_overwrite: bool, allow_missing: bool,
                  note: str, actor, extra: dict) -> int:
    if table.num_columns < 2:
        return 0
    args = {"namespace": ns, "key": key, "rows_incoming": table.num_rows, "rows_matched": table.num_rows,
            "rows_missing": 0, "allow_overwrite": allow_overwrite, "note": note, **extra}
    with w.transaction("attach", args=args, actor=actor, reg=reg, namespaces=(ns,)) as txn:
        require_no_parts(w, ns)
        txn.freeze()  # R14 before the compact file is published: a failed restamp changes nothing
        written, missing, _total = ow.write_compact(txn.paths, ns, table, key=key, reg=reg, journal=txn.journal,
                                                    allow_overwrite=allow_overwrite, allow_missing=allow_missing)
        args.update(rows_matched=written, rows_missing=missing)
        txn.event("attach", args=args, target_path=txn.wrote(txn.paths.compact_overlay(ns)),
                  metrics={"rows_incoming": table.num_rows, "rows_matched": written, "rows_missing": missing},
                  artifacts={"overlay": {"namespace": ns, "key": key}})
    return written
