"""The newest-non-null-wins kernel (O8, O9).

One code path builds a namespace view for reads, compaction and materialize.  Part rows are mapped
to key slots (base rows, via verified 64-bit hashes; without base keys, equal-width keys by one sort
(overlays.slots), others by one dictionary encoding), then the parts are fed newest first into one
winners accumulator per column (overlays.winners): a slot keeps the first non-NULL value it gets.
A read join streams: each part is merged as soon as it is read and dropped; a sequence-keyed part is
read and matched chunk by chunk (overlays.seqparts) once the base keys' index exists.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import SchemaError
from ..storage.pool import one_array
from .checks import check_created_at, require_key, unify_types
from .discovery import OverlaySource, Part
from .encoding import META_KEYS_CLUSTERED, row_groups_in_range, row_groups_with_keys
from .keymatch import KeyIndex
from .keys import fixed_words, key_prefix, normalize_keys
from .seqparts import read_matched
from .slots import array_chunks, sorted_slots
from .varkeys import VarKeyIndex
from .winners import Winners


PrefixRange = tuple  # (lo, hi): key prefixes (overlays.keys.key_prefix) lo <= p < hi; hi None: no end


def in_prefix_range(keys: pa.Array, prefix_range: PrefixRange) -> pa.Array:
    lo, hi = prefix_range
    p = key_prefix(keys)
    mask = p >= np.uint64(lo)
    if hi is not None:
        mask &= p < np.uint64(hi)
    return pa.array(mask)


def _rows_in_range(t: pa.Table, keys: pa.Array, prefix_range: PrefixRange) -> pa.Table:
    """The rows of `t` whose key prefix is in the range: a zero-copy slice when the rows are in key
    order (clustered parts), else a filter."""
    p = key_prefix(keys)
    lo, hi = prefix_range
    if len(p) > 1 and (p[1:] < p[:-1]).any():
        return t.filter(in_prefix_range(keys, prefix_range))
    start = int(np.searchsorted(p, np.uint64(lo)))
    stop = len(p) if hi is None else int(np.searchsorted(p, np.uint64(hi)))
    return t.slice(start, max(stop - start, 0))


def read_part(part: Part, key: str, columns: list[str], keys_filter: pa.Array | None,
              prefix_range: PrefixRange | None = None) -> pa.Table:
    """The part's key and columns; with `keys_filter`, only rows whose key is in it; with `prefix_range`,
    only rows whose key prefix is in it.  Filtered reads go row group by row group (clustered parts
    skip the row groups their key statistics rule out), so memory holds the kept rows only."""
    wanted = [key] + [c for c in columns if part.schema.get_field_index(c) >= 0]
    if keys_filter is None and prefix_range is None:
        return pq.read_table(part.path, columns=wanted)
    with pq.ParquetFile(part.path) as pf:
        groups = None
        if part.meta.get(META_KEYS_CLUSTERED):
            groups = row_groups_in_range(pf, key, prefix_range) if prefix_range is not None else \
                row_groups_with_keys(pf, key, sorted(keys_filter.to_pylist()))
        pieces = []
        # the row groups statistics kept are read at once; without statistics, one group at a time
        chunks = [groups] if groups is not None else [[i] for i in range(pf.num_row_groups)]
        for chunk in chunks:
            t = pf.read_row_groups(chunk, columns=wanted)
            keys = normalize_keys(t[key], key)
            if prefix_range is not None:
                pieces.append(_rows_in_range(t, keys, prefix_range))
            else:
                pieces.append(t.filter(pc.is_in(keys, value_set=keys_filter)))
        schema = pf.schema_arrow
    if not pieces:
        return pa.schema([schema.field(c) for c in wanted]).empty_table()
    return pa.concat_tables(pieces) if len(pieces) > 1 else pieces[0]


THREADED_ROWS = 200_000


def map_parallel(fn, items, rows: int) -> list:
    """fn over items, on two threads when the work is large (parquet, arrow and numpy release the GIL)."""
    if rows < THREADED_ROWS or len(items) < 2:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(fn, items))


RELEASE_BYTES = 32 << 20


def map_ordered(fn, items, rows: int, size):
    """fn over items, results yielded in order; with large work the next item runs on a thread while
    the caller uses the current result (two results alive at most).  Freed pages go back to the
    system once the results passed hold RELEASE_BYTES by `size(result)` (the allocator keeps them otherwise,
    and the peak grows; releasing after every small result costs more page faults than it saves)."""
    items = list(items)
    if rows < THREADED_ROWS or len(items) < 2:
        yield from (fn(x) for x in items)
        return
    passed = 0
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(fn, items[0])
        for x in items[1:] + [None]:
            done = pending.result()
            pending = pool.submit(fn, x) if x is not None else None
            passed += size(done)
            yield done
            del done
            if passed >= RELEASE_BYTES:
                pa.default_memory_pool().release_unused()
                passed = 0


class ProbeKeys:
    """The (normalised) base keys a read joins overlays onto, and their hash index, built once.

    `keys` may be a callable returning them: it is called by the first part that needs them, so parts
    are read while the base keys are still being read.  `repeated`: when given, repeated probe keys
    raise the error it returns (O3 for sequence keys).  One read owns one ProbeKeys per key kind and
    passes it to every overlay it joins; nothing outlives that read."""

    def __init__(self, keys, repeated=None):
        self._keys, self._repeated = keys, repeated
        self._lock = threading.Lock()
        self._state: dict = {}

    def peek(self) -> dict | None:
        """The resolved state, or None while nobody has resolved it yet (never waits)."""
        return self._state or None

    def resolve(self) -> dict:
        """{probe, index (KeyIndex of the probe), fast (unique equal-width keys: hash matching fits)}."""
        with self._lock:
            if not self._state:
                p = self._keys() if callable(self._keys) else self._keys
                if p is not None and not pa.types.is_string(p.type):
                    p = p.cast(pa.string())
                single = isinstance(p, pa.Array) or (p is not None and p.num_chunks == 1)
                index = KeyIndex.build(one_array(p)) if single and len(p) else None
                if index is None and p is not None and len(p):
                    index = VarKeyIndex.build(p)  # keys of any width (sequences), NULLs left out
                repeats = index is not None and bool(index.duplicates())
                if repeats and self._repeated is not None:
                    raise self._repeated()
                self._state.update(probe=p, index=index, fast=index is not None and not repeats)
        return self._state


def _fast_positions(index: KeyIndex, keys: pa.Array) -> tuple[np.ndarray | None, bool]:
    """Each part row's probe row (-1: none) for equal-width keys (ids), matched by verified hashes;
    None when the keys do not fit (another width, NULLs).  Keys of any width: VarKeyIndex.  Second:
    the part's keys are proven distinct (their truncated hashes differ), so O8 needs no exact check."""
    if isinstance(index, VarKeyIndex):
        return index.positions(keys), False
    w = fixed_words(keys, index.words.shape[1] * 8)
    if w is None:
        return None, False
    found = index.lookup(w)
    return found.rows, found.distinct


def _raise_duplicate(key_value, where: str):
    raise SchemaError(f"Overlay {where} has duplicate keys: {[key_value]} (O8).",
                      hint="Each key may appear once per overlay file; remove or rewrite that file.")


def _first_duplicate(pos: np.ndarray, nkeys: int, stamp: np.ndarray) -> int | None:
    """Index into `pos` of a repeated non-negative value, or None; `stamp` is scratch of size nkeys.
    Many values are first marked in a bool array (a quarter of the stamp's memory traffic): as many
    marks as values means no repeat."""
    rows = np.flatnonzero(pos >= 0)
    vals = pos[rows]
    if 8 * len(vals) >= nkeys:
        seen = np.zeros(nkeys, bool)
        seen[vals] = True
        if np.count_nonzero(seen) == len(vals):
            return None
    stamp[vals] = rows
    lost = stamp[vals] != rows
    if lost.any():
        return int(rows[np.flatnonzero(lost)[0]])
    return None


def _loaded(part: Part, t: pa.Table, columns: list[str], types: dict, read_bytes: int) -> LoadedPart:
    cols = {c: one_array(t[c]) if c in t.column_names else pa.nulls(t.num_rows, types[c]) for c in columns}
    return LoadedPart(str(part.path), t.num_rows, cols, read_bytes=read_bytes)


@dataclass
class LoadedPart:
    """One part, newest first: data columns, and either slots (probe rows) or the keys to encode."""
    name: str
    n: int
    cols: dict
    pos: np.ndarray | None = None
    keys: pa.Array | None = None
    read_bytes: int = 0  # what reading it allocated, keys included (freed once merged)


def load_parts(src: OverlaySource, columns: list[str], probe: ProbeKeys | None, keys_filter: pa.Array | None,
               prefix_range: PrefixRange | None = None, each=None) -> tuple[list[LoadedPart], pa.Array | None]:
    """Read the parts (newest first, O9) and map their keys to probe rows where the fast path fits.

    Keys are dropped as soon as they are mapped, so a read holds the key strings of two parts at
    most (sequence keys after the first part: of two chunks).  Returns (parts, probe keys).  With
    `each`, every part is handed to it as soon as it is read, newest first, and not kept (the list is
    empty): at most three parts are held at once."""
    key = require_key(src)
    check_created_at(src)
    types = unify_types(src, columns)
    probe = probe if probe is not None else ProbeKeys(None)
    resolved = probe.resolve

    def load(part: Part) -> LoadedPart:
        st = probe.peek()
        chunked = st is not None and st["fast"] and isinstance(st["index"], VarKeyIndex) and keys_filter is None \
            and prefix_range is None  # sequence keys: matched chunk by chunk as they are decoded
        if chunked:
            m = read_matched(part, key, columns, st["index"])
            out = _loaded(part, m.data, columns, types, m.read_bytes)
            out.pos, missed = m.pos, m.missed
        else:
            t = read_part(part, key, columns, keys_filter, prefix_range)
            out = _loaded(part, t, columns, types, t.nbytes)
            st = resolved()
            keys = normalize_keys(t[key], key, combine=st["fast"] and not isinstance(st["index"], VarKeyIndex))
            out.pos, distinct = _fast_positions(st["index"], keys) if st["fast"] else (None, False)
            if out.pos is None:
                out.keys = keys
                return out
            if distinct:  # no repeated key, matched or not (O8)
                return out
            miss = out.pos < 0  # NULL keys never match (O2)
            missed = keys.filter(pa.array(miss)).drop_null() if miss.any() else None
        nprobe = len(st["probe"])
        if _first_duplicate(out.pos, nprobe, np.empty(nprobe, np.int32)) is not None:
            if chunked:
                keys = normalize_keys(read_part(part, key, [], None)[key], key, combine=False)
            out.pos, out.keys = None, keys  # the dictionary path names the duplicate
            return out
        if missed is not None and len(missed) and len(pc.unique(missed)) != len(missed):
            # keys outside the probe are dropped by the join, yet must be unique (O8)
            vc = pc.value_counts(missed)
            _raise_duplicate(vc.filter(pc.greater(vc.field("counts"), 1)).field("values")[0].as_py(), out.name)
        return out

    if each is not None:
        rows = 0 if keys_filter is not None else 1 << 30
        for part in map_ordered(load, src.newest_first(), rows, lambda x: x.read_bytes):
            each(part)
        return [], resolved()["probe"]
    loaded = map_parallel(load, src.newest_first(), 0 if keys_filter is not None else 1 << 30)
    return loaded, resolved()["probe"]


def merge_parts(loaded: list[LoadedPart], key: str, columns: list[str], probe: pa.Array | None = None,
                ) -> tuple[pa.Array, dict[str, pa.Array]]:
    """Per column, the first non-NULL value per key in `loaded` order (newest first) wins (O9).

    Rows mapped to probe rows by the fast path keep those; the others (and every row when there is
    no probe) get a slot from one dictionary encoding of probe + their keys, chunk by chunk (no
    concatenation).  Per column the parts are fed newest first into one winner per slot.
    Returns (keys, columns): with `probe`, columns aligned to the probe rows (LEFT JOIN); without,
    one row per distinct key.  Duplicate keys inside one part raise SchemaError (O8).
    """
    slow = [x for x in loaded if x.pos is None]
    take = dictionary = None
    if slow or probe is None:
        arrays = ([probe] if probe is not None else []) + [x.keys for x in slow]
        by_sort = sorted_slots(arrays) if probe is None else None  # ids: slots in key order, no hashing
        if by_sort is not None:
            dictionary, idx = by_sort
        else:
            chunks = [c for a in arrays for c in array_chunks(a)]
            enc = pc.dictionary_encode(pa.chunked_array(chunks, pa.string()))
            dictionary = enc.chunks[-1].dictionary if enc.num_chunks else pa.array([], pa.string())
            idx = np.concatenate([pc.fill_null(c.indices, -1).to_numpy(zero_copy_only=False) for c in enc.chunks]
                                 + [np.empty(0, np.int32)])
            bounds = np.cumsum([0] + [len(a) for a in arrays])
            idx = [idx[bounds[i]:bounds[i + 1]] for i in range(len(arrays))]
        nslots = len(dictionary)
        if probe is not None:
            take, idx = idx[0], idx[1:]
        for x, pos in zip(slow, idx):  # fast positions are probe rows = slots (probe keys unique, non-NULL)
            x.pos = pos
        stamp = np.empty(nslots, np.int64)
        for x in slow:
            at = _first_duplicate(x.pos, nslots, stamp)
            if at is not None:
                _raise_duplicate(dictionary[int(x.pos[at])].as_py(), x.name)
            x.keys = None
        if take is not None and np.array_equal(take, np.arange(len(take))):
            take = None  # probe keys are the first slots, in order
    else:
        nslots = len(probe)
    positions = [x.pos for x in loaded]

    def winners(name: str) -> pa.Array:
        arrays = [x.cols[name] for x in loaded]
        if not arrays:
            return pa.nulls(len(probe) if probe is not None else nslots, pa.null())
        acc = Winners(arrays[0].type, nslots)
        for arr, pos in zip(arrays, positions):  # newest first: the first valid value per slot stays (O9)
            acc.add(arr, pos)
        return acc.result(take)

    out = dict(zip(columns, map_parallel(winners, columns, sum(x.n for x in loaded))))
    return (probe if probe is not None else dictionary), out


def namespace_view(src: OverlaySource, columns: list[str] | None = None,
                   keys_filter: pa.Array | None = None) -> pa.Table:
    """O8/O9: one row per normalised key; columns = key (named `src.key`) + requested data columns."""
    columns = src.data_columns() if columns is None else [c for c in columns if c in src.data_columns()]
    keys, cols = merge_parts(load_parts(src, columns, None, keys_filter)[0], src.key, columns)
    return pa.Table.from_arrays([keys] + [cols[c] for c in columns], [src.key] + columns)


def joined_columns(src: OverlaySource, columns: list[str], probe: ProbeKeys,
                   keys_filter: pa.Array | None = None, prefix_range: PrefixRange | None = None
                   ) -> dict[str, pa.Array]:
    """O10: the namespace view LEFT JOINed onto `probe` (normalised base keys), aligned row for row.
    `prefix_range`: the probe holds only keys of that prefix range, so only part rows in it are read."""
    join = _StreamJoin(probe, columns, unify_types(src, columns))
    load_parts(src, columns, probe, keys_filter, prefix_range, each=join.feed)
    return join.result(src.key)


class _StreamJoin:
    """Parts fed newest first into one Winners per column over the probe rows, each part dropped once
    fed (memory: the merged columns and the parts in flight).  A probe with repeated keys has no
    one-slot-per-row: its parts are kept and merged at the end (merge_parts)."""

    def __init__(self, probe: ProbeKeys, columns: list[str], types: dict):
        self.probe, self.columns, self.types = probe, columns, types
        self.acc: dict | None = None
        self.kept: list[LoadedPart] = []

    def feed(self, x: LoadedPart) -> None:
        st = self.probe.resolve()
        if not st["fast"]:
            self.kept.append(x)
            return
        keys = st["probe"]
        if self.acc is None:
            self.acc = {c: Winners(self.types.get(c, pa.null()), len(keys)) for c in self.columns}
        if x.pos is None:
            x.pos = _probe_rows(keys, x)
        for c in self.columns:
            self.acc[c].add(x.cols[c], x.pos)

    def result(self, key: str) -> dict[str, pa.Array]:
        st = self.probe.resolve()
        if self.acc is None and not st["fast"]:
            return merge_parts(self.kept, key, self.columns, st["probe"])[1]
        n = len(st["probe"]) if st["probe"] is not None else 0
        return {c: self.acc[c].result() if self.acc else pa.nulls(n, self.types.get(c, pa.null())) for c in self.columns}


def _probe_rows(probe: pa.Array, x: LoadedPart) -> np.ndarray:
    """Probe rows (-1: none) of a part the hash path did not map (keys of another width or NULL, or a
    duplicate to name, O8), from one dictionary encoding of probe and part keys (unique probe keys)."""
    n = len(probe)
    enc = pc.dictionary_encode(pa.chunked_array(array_chunks(probe) + array_chunks(x.keys), pa.string()))
    nslots = len(enc.chunks[-1].dictionary) if enc.num_chunks else 0
    idx = np.concatenate([pc.fill_null(c.indices, -1).to_numpy(zero_copy_only=False) for c in enc.chunks]
                         + [np.empty(0, np.int64)]).astype(np.int64)
    at = _first_duplicate(idx[n:], nslots, np.empty(nslots, np.int64))
    if at is not None:
        _raise_duplicate(enc.chunks[-1].dictionary[int(idx[n + at])].as_py(), x.name)
    row_of_slot = np.full(nslots + 1, -1, np.int64)  # the last entry: NULL keys (-1)
    hit = np.flatnonzero(idx[:n] >= 0)
    row_of_slot[idx[:n][hit]] = hit
    x.keys = None
    return row_of_slot[idx[n:]]
