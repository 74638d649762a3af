"""Demo namespaces computed from DNA sequences: GC content, 3-mer profile, melting temperature, longest ORF."""
from __future__ import annotations

import itertools
import re

import pandas as pd
import pyarrow as pa

from ..assets import usr_namespace

OWNER = "usr-demo"
KMERS = ["".join(p) for p in itertools.product("ACGT", repeat=3)]
_KMER_INDEX = {k: i for i, k in enumerate(KMERS)}
_STOPS = {"TAA", "TAG", "TGA"}
_COMP = str.maketrans("ACGTacgt", "TGCAtgca")


def gc_fraction(seq: str) -> float:
    s = seq.upper()
    return (s.count("G") + s.count("C")) / len(s) if s else 0.0


def kmer3_profile(seq: str) -> list[float]:
    s = seq.upper()
    counts = [0] * 64
    total = 0
    for i in range(len(s) - 2):
        j = _KMER_INDEX.get(s[i:i + 3])
        if j is not None:
            counts[j] += 1
            total += 1
    return [c / total for c in counts] if total else [0.0] * 64


def melting_temp(length: int, gc: float) -> float:
    """Wallace rule below 14 nt, else the basic GC formula Tm = 64.9 + 41 (nGC - 16.4) / N (°C)."""
    n_gc = gc * length
    if length < 14:
        return 2.0 * (length - n_gc) + 4.0 * n_gc
    return 64.9 + 41.0 * (n_gc - 16.4) / length


def _longest_orf_one_strand(s: str) -> int:
    best = 0
    for frame in range(3):
        start = None
        for i in range(frame, len(s) - 2, 3):
            codon = s[i:i + 3]
            if start is None and codon == "ATG":
                start = i
            elif start is not None and codon in _STOPS:
                best = max(best, i + 3 - start)
                start = None
    return best


def longest_orf(seq: str) -> int:
    """Longest ATG…stop open reading frame (nt, stop included) on both strands; 0 if none."""
    s = seq.upper()
    rc = s.translate(_COMP)[::-1]
    return max(_longest_orf_one_strand(s), _longest_orf_one_strand(rc))


@usr_namespace("gc", columns={"fraction": "float64", "count": "int64"}, owner=OWNER)
def gc(records: pa.Table) -> pa.Table:
    """GC content of each sequence: fraction and count of G/C bases."""
    seqs = records.column("sequence").to_pylist()
    return pa.table({"id": records.column("id"),
                     "gc__fraction": [gc_fraction(s) for s in seqs],
                     "gc__count": [sum(1 for ch in s.upper() if ch in "GC") for s in seqs]})


@usr_namespace("kmer3", columns={"profile": "list<float64>"}, owner=OWNER)
def kmer3(records: pa.Table) -> pa.Table:
    """Normalised 3-mer frequency profile (64 values, lexicographic ACGT order)."""
    return pa.table({"id": records.column("id"),
                     "kmer3__profile": [kmer3_profile(s) for s in records.column("sequence").to_pylist()]})


@usr_namespace("tm", columns={"celsius": "float64"}, uses=("length",), inputs=("gc",), owner=OWNER)
def tm(records: pd.DataFrame) -> pd.DataFrame:
    """Melting temperature (°C) from length and the gc namespace's GC fraction (pandas in, pandas out)."""
    out = pd.DataFrame({"id": records["id"]})
    out["tm__celsius"] = [melting_temp(int(n), float(g)) for n, g in zip(records["length"], records["gc__fraction"])]
    return out


@usr_namespace("orf", columns={"longest_nt": "int64", "has_orf": "bool"}, owner=OWNER)
def orf(records: pa.Table) -> pa.Table:
    """Longest open reading frame (ATG to stop, both strands) in nucleotides."""
    lengths = [longest_orf(s) for s in records.column("sequence").to_pylist()]
    return pa.table({"id": records.column("id"), "orf__longest_nt": lengths,
                     "orf__has_orf": [n > 0 for n in lengths]})


DEMO_NAMESPACES = [gc, kmer3, tm, orf]
MOTIF_RE = {"tata": re.compile("TATAAA"), "ecori": re.compile("GAATTC")}
