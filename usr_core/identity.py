"""Normalisation, vectorised alphabet checks and content-derived ids (S2-S5)."""
from __future__ import annotations

import hashlib

import pyarrow as pa
import pyarrow.compute as pc

from .contract import ALPHABETS
from .errors import AlphabetError, SchemaError


def normalize_sequence(seq) -> str:
    """S3: sequence minus leading/trailing whitespace, case unchanged."""
    if seq is None:
        raise SchemaError("Sequence is missing.", hint="Every record needs a non-empty sequence.")
    return str(seq).strip()


def compute_id(bio_type: str, sequence: str) -> str:
    """S4: hex(SHA1(UTF8(bio_type + '|' + sequence_norm))), bio_type trimmed (S3)."""
    bt = "" if bio_type is None else str(bio_type).strip()
    return hashlib.sha1(f"{bt}|{normalize_sequence(sequence)}".encode("utf-8")).hexdigest()


# the characters str.strip() removes, so the vectorised trim below equals normalize_sequence
PY_WHITESPACE = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B)))
                 + "\u2028\u2029\u202f\u205f\u3000")


def compute_ids(bio_types: pa.Array, sequences: pa.Array) -> pa.Array:
    """Vectorised-input S4, same normalisation as compute_id (no vectorised sha1 exists)."""
    if sequences.null_count:
        raise SchemaError("Sequence is missing.", hint="Every record needs a non-empty sequence.")
    joined = pc.binary_join_element_wise(pc.utf8_trim(pc.fill_null(bio_types, ""), PY_WHITESPACE),
                                         pc.utf8_trim(sequences, PY_WHITESPACE), "|")
    sha1 = hashlib.sha1
    return pa.array([sha1(s.encode("utf-8")).hexdigest() for s in joined.to_pylist()], pa.string())


def validate_bio_type(bio_type) -> str:
    bt = "" if bio_type is None else str(bio_type).strip()
    if not bt:
        raise SchemaError("bio_type is empty.", hint="Use one of: dna, rna, protein.")
    if "|" in bt:
        raise SchemaError(f"bio_type {bt!r} contains '|'.", hint="Use one of: dna, rna, protein.")
    if bt not in ALPHABETS:
        raise SchemaError(f"Unknown bio_type {bt!r}.", hint="Use one of: dna, rna, protein.")
    return bt


def validate_alphabet(bio_type, alphabet) -> str:
    bt = validate_bio_type(bio_type)
    al = "" if alphabet is None else str(alphabet).strip()
    allowed = sorted(ALPHABETS[bt])
    if not al:
        raise AlphabetError("alphabet is empty.", hint=f"Use one of: {', '.join(allowed)}.")
    if al not in ALPHABETS[bt]:
        raise AlphabetError(f"Alphabet {al!r} is not allowed for bio_type {bt!r}.",
                            hint=f"Use one of: {', '.join(allowed)}.")
    return al


def _samples(mask: pa.Array, values: pa.Array | None = None, limit: int = 5) -> str:
    idx = pc.indices_nonzero(pc.fill_null(mask, False)).to_pylist()[:limit]
    if values is None:
        return ", ".join(str(i + 1) for i in idx)
    vals = values.take(pa.array(idx, pa.int64())).to_pylist() if idx else []
    return ", ".join(f"row {i + 1}: {v!r}" for i, v in zip(idx, vals))


def check_columns(bio_types: pa.Array, alphabets: pa.Array, sequences: pa.Array) -> None:
    """S5 over whole columns: vectorised, rows reported 1-based with at most 5 samples."""
    empty_seq = pc.or_kleene(pc.is_null(sequences), pc.equal(pc.utf8_length(pc.fill_null(sequences, "")), 0))
    if pc.any(empty_seq).as_py():
        raise SchemaError(f"Empty or missing sequence at rows {_samples(empty_seq)}.",
                          hint="Remove those rows or fill in the sequence.")
    for bt in pc.unique(bio_types).to_pylist():
        try:
            validate_bio_type(bt)
        except SchemaError as exc:
            rows = _samples(pc.is_null(bio_types) if bt is None else pc.equal(bio_types, bt))
            raise SchemaError(f"{str(exc).rstrip('.')} at rows {rows}.", hint=exc.hint) from None
    pairs = pa.Table.from_arrays([bio_types, alphabets], ["b", "a"]).group_by(["b", "a"]).aggregate([])
    for bt, al in zip(pairs["b"].to_pylist(), pairs["a"].to_pylist()):
        sel = pc.and_kleene(pc.equal(bio_types, bt), pc.is_null(alphabets) if al is None else pc.equal(alphabets, al))
        try:  # raw values select rows; trimmed ones name the alphabet
            nbt, nal = validate_bio_type(bt), validate_alphabet(bt, al)
        except AlphabetError as exc:
            raise AlphabetError(f"{str(exc).rstrip('.')} at rows {_samples(sel)}.", hint=exc.hint) from None
        letters = ALPHABETS[nbt][nal]
        pattern = f"^[{letters}{letters.lower()}]+$"
        bad = pc.and_(sel, pc.invert(pc.match_substring_regex(sequences, pattern)))
        if pc.any(bad).as_py():
            raise AlphabetError(f"invalid characters for {nal} at {_samples(bad, sequences)}",
                                hint=f"{nal} allows only {letters} (either case).")
