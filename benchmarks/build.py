"""Build the benchmark datasets through usr_core's public API (register_namespace, Dataset.init,
add_sequences, write_overlay_part, tombstone) and the input files of the write scenarios."""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import synth

NAME = "bench"
# namespace -> (overlay key, with a list<float64> column)
READ_NAMESPACES = {"bench": ("id", False), "benchlist": ("id", True), "benchseq": ("sequence", False)}
WRITE_NS = "benchw"    # part-write target
ATTACH_NS = "bencha"   # compact attach target
ATTACH_ROWS = 100_000
DAGSTER_NS = "benchdg"  # benchmarks.dagster_bench


@dataclass
class Built:
    n: int
    k: int
    root: Path
    name: str
    seqs_path: Path       # ingest input: one `sequence` column
    part_input: Path      # part-write input: N/2 rows of WRITE_NS
    attach_input: Path    # attach input: min(N, 100k) rows of ATTACH_NS
    seconds: dict = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        return self.root / self.name


def build(workdir: Path, n: int, k: int, seed: int = 1) -> Built:
    from usr_core import Dataset, register_namespace

    root = Path(workdir) / f"root_n{n}"
    inputs = Path(workdir) / f"inputs_n{n}"
    marker = inputs / "built.json"  # written last: data of an interrupted build is rebuilt
    if marker.is_file():
        done = json.loads(marker.read_text())
        if done.get("k") == k and done.get("seed") == seed:
            return _built(n, k, root, inputs, {"reused": 0.0})
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(inputs, ignore_errors=True)
    root.mkdir(parents=True)
    inputs.mkdir()
    secs = {}
    for ns, (_key, with_list) in READ_NAMESPACES.items():
        register_namespace(root, ns, synth.registry_columns(ns, with_list=with_list), owner="bench",
                           description="synthetic benchmark overlay")
    for ns in (WRITE_NS, ATTACH_NS):
        register_namespace(root, ns, synth.registry_columns(ns), owner="bench", description="benchmark writes")
    register_namespace(root, DAGSTER_NS, [{"name": f"{DAGSTER_NS}__gc", "type": "float64"}], owner="bench",
                       description="benchmark Dagster namespace")

    t0 = time.perf_counter()
    seqs = synth.sequences_table(n, seed)
    secs["generate_sequences"] = time.perf_counter() - t0
    ds = Dataset(root, NAME)
    ds.init(source="synthetic", notes="usr benchmark")
    t0 = time.perf_counter()
    ids = pa.array(ds.add_sequences(seqs, bio_type="dna", alphabet="dna_4", source="synthetic").ids, pa.string())
    secs["add_sequences"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    for i, (ns, (key, with_list)) in enumerate(READ_NAMESPACES.items()):
        keys = ids if key == "id" else seqs["sequence"].combine_chunks()
        for part in synth.part_tables(keys, ns, k, seed + 10 * (i + 1), key=key, with_list=with_list):
            ds.write_overlay_part(ns, part, key=key)
    secs["write_parts"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ds.tombstone(synth.tombstone_ids(ids), reason="benchmark")
    secs["tombstone"] = time.perf_counter() - t0

    pq.write_table(seqs, inputs / "sequences.parquet", compression="zstd")
    pq.write_table(synth.part_tables(ids, WRITE_NS, 1, seed + 77)[0], inputs / "part.parquet", compression="zstd")
    keys = synth.sample(ids, min(ATTACH_ROWS, n), seed + 88)
    pq.write_table(synth.overlay_table(keys, ATTACH_NS, np.random.default_rng(seed + 89)), inputs / "attach.parquet",
                   compression="zstd")
    marker.write_text(json.dumps({"k": k, "seed": seed, "seconds": secs}))
    return _built(n, k, root, inputs, secs)


def _built(n: int, k: int, root: Path, inputs: Path, secs: dict) -> Built:
    return Built(n, k, root, NAME, inputs / "sequences.parquet", inputs / "part.parquet",
                 inputs / "attach.parquet", secs)


def link_copy(built: Built, new_name: str) -> Path:
    """A writable copy of the dataset for a mutating step: big parquet files are hard links
    (USR replaces files by rename, never in place), everything else is copied."""
    src, dst = built.dir, built.root / new_name
    if dst.exists():
        shutil.rmtree(dst)

    def copy(s, d):
        if s.endswith(".parquet") and os.path.getsize(s) > (1 << 20):
            os.link(s, d)
        else:
            shutil.copy2(s, d)
    shutil.copytree(src, dst, copy_function=copy)
    meta = dst / "meta.md"
    if meta.exists():
        lines = meta.read_text().splitlines(keepends=True)
        lines[0] = f"name: {new_name}\n"
        meta.write_text("".join(lines))
    return dst
