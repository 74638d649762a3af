"""merge (X9): append the base rows of one dataset to another (src overlays/tombstones ignored)."""
from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..base import base_metadata, check_essentials, m1_metadata, rewrite_base
from ..contract import MUTATION_RESERVED_NAMESPACES, REQUIRED_COLUMNS
from ..errors import DuplicateIDError, SchemaError, option_hint
from ..overlays import write as ow
from ..overlays.checks import check_conformance
from ..overlays.discovery import SourceKind, find_overlay
from ..overlays.keys import normalize_keys
from ..registry.registry import hash_registry
from ..txn import Writer

COLUMNS_MODES = ("require-same", "union")
COERCE_MODES = ("none", "to-dest")
DUPLICATE_POLICIES = ("error", "skip", "prefer-dest", "prefer-src")


@dataclass
class MergePreview:
    dest: str
    src: str
    columns_mode: str
    duplicate_policy: str
    rows_dest: int
    rows_src: int
    duplicates: int  # src ids already in dest
    rows_replaced: int  # dest rows replaced by src rows (prefer-src)
    rows_skipped: int  # src rows dropped as exact-id duplicates
    casefold_dropped: int
    rows_added: int  # src rows written
    rows_total: int
    columns_total: int
    carried: dict = field(default_factory=dict)
    dry_run: bool = False


def _check_options(columns_mode, coerce_overlap, duplicate_policy) -> None:
    for value, allowed, what in ((columns_mode, COLUMNS_MODES, "columns_mode"),
                                 (coerce_overlap, COERCE_MODES, "coerce_overlap"),
                                 (duplicate_policy, DUPLICATE_POLICIES, "duplicate_policy")):
        if value not in allowed:
            raise SchemaError(f"Unknown {what} {value!r}.", hint=f"Use one of: {', '.join(allowed)}.")


def plan_schema(dest: pa.Schema, src: pa.Schema, columns_mode: str, coerce_overlap: str) -> pa.Schema:
    d = {f.name: f.type for f in dest}
    s = {f.name: f.type for f in src}
    if columns_mode == "require-same" and set(d) != set(s):
        raise SchemaError(f"Columns differ: only in dest {sorted(set(d) - set(s))}, only in src "
                          f"{sorted(set(s) - set(d))} (X9 require-same).",
                          hint="Use columns_mode='union' to keep the union (absent values become NULL).",
                          cli_hint="Use --union-columns to keep the union (absent values become NULL).")
    clash = [n for n in d if n in s and d[n] != s[n]]
    if clash and coerce_overlap == "none":
        raise SchemaError(f"Column types differ for {clash}: " + ", ".join(f"{n} dest {d[n]} / src {s[n]}"
                                                                        for n in clash) + " (X9).",
                          **option_hint("Pass {} to cast src values to the dest types.", "coerce_overlap", "to-dest"))
    if columns_mode == "require-same":
        return pa.schema([(n, d[n]) for n in dest.names])
    names = list(REQUIRED_COLUMNS) + [n for n in dest.names if n not in REQUIRED_COLUMNS]
    names += [n for n in src.names if n not in names]
    return pa.schema([(n, d.get(n) or s[n]) for n in names])


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    arrays = []
    for f in schema:
        idx = batch.schema.get_field_index(f.name)
        if idx < 0:
            arrays.append(pa.nulls(batch.num_rows, f.type))
            continue
        col = batch.column(idx)
        if col.type != f.type:
            try:
                col = col.cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaError(f"Cannot cast src column {f.name} from {col.type} to {f.type}: {exc}",
                                  hint="Fix the src values or merge with columns_mode='union' and another name.",
                                  cli_hint="Fix the src values or merge with --union-columns and another name.") from exc
        arrays.append(col)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _keys(path) -> pa.Table:
    return pq.read_table(path, columns=["id", "bio_type", "sequence"]).combine_chunks()


def _casefold(t: pa.Table) -> pa.Array:
    return pc.binary_join_element_wise(pc.utf8_lower(t["bio_type"]), pc.utf8_upper(t["sequence"]), "|")


def plan_rows(dest_keys: pa.Table, src_keys: pa.Table, duplicate_policy: str, avoid_casefold_dups: bool):
    """X9 (div: order): exact-id policy first, then the casefold filter against the surviving dest rows."""
    dup = pc.is_in(src_keys["id"], value_set=dest_keys["id"].chunk(0) if dest_keys.num_rows else pa.array([], pa.string()))
    n_dup = pc.sum(dup).as_py() or 0
    if n_dup and duplicate_policy == "error":
        ids = src_keys["id"].filter(dup).to_pylist()
        raise DuplicateIDError(f"{n_dup} src id(s) already exist in dest: {ids[:5]} (X9).",
                               groups=[{"id": i, "count": 2} for i in ids[:5]],
                               hint="Choose duplicate_policy='skip', 'prefer-dest' or 'prefer-src'.",
                               cli_hint="Choose --if-duplicate skip, prefer-dest or prefer-src.")
    if duplicate_policy == "prefer-src":
        src_keep = pc.invert(pc.is_null(src_keys["id"]))
        dest_keep = pc.invert(pc.is_in(dest_keys["id"], value_set=src_keys["id"].combine_chunks()))
    else:
        src_keep = pc.invert(dup)
        dest_keep = pa.array([True] * dest_keys.num_rows, pa.bool_())
    replaced = dest_keys.num_rows - (pc.sum(dest_keep).as_py() or 0)
    casefold_dropped = 0
    if avoid_casefold_dups and src_keys.num_rows and dest_keys.num_rows:
        dest_cf = _casefold(dest_keys.filter(dest_keep))
        hit = pc.and_(src_keep, pc.is_in(_casefold(src_keys), value_set=dest_cf))
        if duplicate_policy == "prefer-src":
            hit = pc.and_(hit, pc.invert(dup))  # a replacing row never casefold-matches its own replaced row
        casefold_dropped = pc.sum(hit).as_py() or 0
        src_keep = pc.and_(src_keep, pc.invert(hit))
    skipped = n_dup if duplicate_policy != "prefer-src" else 0
    return src_keep, dest_keep, n_dup, replaced, skipped, casefold_dropped


def _check_carry(dest: Writer, src: Writer, carry, reg) -> list:
    out = []
    for ns in carry:
        if ns in MUTATION_RESERVED_NAMESPACES:
            raise SchemaError(f"Namespace {ns!r} is reserved and cannot be carried (X9).",
                              hint="Carry only ordinary namespaces.")
        src_overlay = find_overlay(src.paths, ns)
        if src_overlay is None:
            raise SchemaError(f"Src dataset {src.name!r} has no overlay {ns!r} to carry (X9).",
                              hint="Check carry_namespaces.", cli_hint="Check --carry-namespace.")
        dst = find_overlay(dest.paths, ns)
        for side, s in (("src", src_overlay), ("dest", dst)):
            if s is not None and (s.kind != SourceKind.COMPACT or s.key != "id"):
                raise SchemaError(f"Carrying {ns!r} needs a compact id-keyed overlay on the {side} side (X9).",
                                  hint=f"Compact it first (src.compact_overlay({ns!r}) inside src.maintenance()).",
                                  cli_hint=f"Compact it first (`usr maintenance overlay-compact SRC --namespace {ns}`).")
        check_conformance(src_overlay, reg)
        table = pq.read_table(src_overlay.path).replace_schema_metadata(None)
        keys = normalize_keys(table["id"], "id")
        ow.check_duplicates(keys.drop_null())
        out.append((ns, table.set_column(table.column_names.index("id"), "id", keys)))
    return out


@dataclass
class _Plan:
    dest_file: pq.ParquetFile
    src_file: pq.ParquetFile
    schema: pa.Schema
    src_keep: pa.Array
    dest_keep: pa.Array
    src_keys: pa.Table
    preview: MergePreview


def _plan(dest: Writer, src: Writer, columns_mode, coerce_overlap, duplicate_policy, avoid_casefold_dups,
          dry_run) -> _Plan:
    dpf, spf = pq.ParquetFile(dest.paths.records), pq.ParquetFile(src.paths.records)
    check_essentials(dpf.schema_arrow, dest.paths.records)
    check_essentials(spf.schema_arrow, src.paths.records)
    schema = plan_schema(dpf.schema_arrow.remove_metadata(), spf.schema_arrow.remove_metadata(), columns_mode,
                         coerce_overlap)
    dk, sk = _keys(dest.paths.records), _keys(src.paths.records)
    src_keep, dest_keep, n_dup, replaced, skipped, cf = plan_rows(dk, sk, duplicate_policy, avoid_casefold_dups)
    added = pc.sum(src_keep).as_py() or 0
    preview = MergePreview(dest.name, src.name, columns_mode, duplicate_policy, dk.num_rows, sk.num_rows,
                           n_dup, replaced, skipped, cf, added, dk.num_rows - replaced + added, len(schema),
                           dry_run=dry_run)
    return _Plan(dpf, spf, schema, src_keep, dest_keep, sk, preview)


def merge(dest: Writer, src: Writer, *, columns_mode: str = "require-same", coerce_overlap: str = "none",
          duplicate_policy: str = "error", avoid_casefold_dups: bool = True, carry_namespaces=(),
          dry_run: bool = False, reason: str = "", actor=None) -> MergePreview:
    """X9: the base rows of `src` appended to `dest` (both writers of one root)."""
    _check_options(columns_mode, coerce_overlap, duplicate_policy)
    if dest.paths.dir.resolve() == src.paths.dir.resolve():
        raise SchemaError(f"Cannot merge {src.name!r} into itself (X9).", hint="Pick two different datasets.")
    dest.require()
    src.require()
    carry_namespaces = list(carry_namespaces or ())
    options = (columns_mode, coerce_overlap, duplicate_policy, avoid_casefold_dups, dry_run)
    if dry_run:
        plan = _plan(dest, src, *options)
        _check_carry(dest, src, carry_namespaces, dest.registry(required=True))
        return plan.preview
    with dest.maintenance(reason=reason or "merge", actor=actor), dest.transaction("merge_datasets") as txn:
        plan = _plan(dest, src, *options)
        preview = plan.preview
        carry = _check_carry(dest, src, carry_namespaces, txn.registry)
        txn.freeze()
        dpf = pq.ParquetFile(dest.paths.records)  # the freeze may have restamped (same rows)
        meta = m1_metadata(base_metadata(dest.paths), hash_registry(txn.registry))
        src_keep_np = plan.src_keep.to_numpy(zero_copy_only=False)
        dest_keep_np = plan.dest_keep.to_numpy(zero_copy_only=False)

        def batches():
            for pf, mask in ((dpf, dest_keep_np), (plan.src_file, src_keep_np)):
                start = 0
                for batch in pf.iter_batches(65536):
                    m = mask[start:start + batch.num_rows]
                    start += batch.num_rows
                    yield _conform(batch.filter(pa.array(m)), plan.schema)

        rewrite_base(dest.paths, plan.schema, batches, meta, label="merge", journal=txn.journal)
        surviving = plan.src_keys["id"].filter(plan.src_keep)
        for ns, table in carry:
            rows = table.filter(pc.is_in(table["id"], value_set=surviving.combine_chunks()))
            written, _missing, _total = ow.write_compact(dest.paths, ns, rows, key="id", reg=txn.registry,
                                                         journal=txn.journal, allow_overwrite=True,
                                                         allow_missing=True)
            preview.carried[ns] = written
        counts = {"rows_dest": preview.rows_dest, "rows_src": preview.rows_src, "duplicates": preview.duplicates,
                  "rows_replaced": preview.rows_replaced, "rows_skipped": preview.rows_skipped,
                  "casefold_dropped": preview.casefold_dropped, "rows_added": preview.rows_added,
                  "rows_total": preview.rows_total, "columns_total": preview.columns_total}
        args = {"src": src.name, "dest": dest.name, "columns_mode": columns_mode,
                "coerce_overlap": coerce_overlap, "duplicate_policy": duplicate_policy,
                "avoid_casefold_dups": avoid_casefold_dups, "carry_namespaces": carry_namespaces,
                "carried": dict(preview.carried), **counts, "maintenance_reason": txn.reason}
        txn.event("merge_datasets", args=args, metrics={**counts, "carried": sum(preview.carried.values())})
    return preview
