"""Normalisation, vectorised alphabet checks and content-derived ids (S2-S5)."""
from __future__ import annotations

import binascii
import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .storage.pool import pool_array
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
_HASH_STEP = 16384  # rows per hashing step: bounds the per-row Python objects alive at once


def string_chunks(arr) -> list[pa.Array]:
    """Chunks of a string column with offsets + data buffers (string or large_string)."""
    chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
    return [c if pa.types.is_string(c.type) or pa.types.is_large_string(c.type) else c.cast(pa.string())
            for c in chunks if len(c)]


def offsets_and_data(chunk: pa.Array) -> tuple[np.ndarray, pa.Buffer | None]:
    _, offsets, data = chunk.buffers()[:3]
    width = np.int64 if pa.types.is_large_string(chunk.type) else np.int32
    return np.frombuffer(offsets, width, len(chunk) + 1, chunk.offset * np.dtype(width).itemsize), data


def edges_may_be_space(strings) -> bool:
    """False when no value starts or ends with a byte that can begin/end whitespace (ASCII <= 0x20 or
    any UTF-8 multibyte): then trimming is a no-op and the 200-byte-per-row copy can be skipped."""
    for chunk in string_chunks(strings):
        offs, data = offsets_and_data(chunk)
        nonempty = offs[1:] > offs[:-1]
        if not nonempty.any():
            continue
        raw = np.frombuffer(data, np.uint8)
        for idx in (offs[:-1][nonempty], offs[1:][nonempty] - 1):
            b = raw[idx]
            if ((b <= 0x20) | (b >= 0x7F)).any():
                return True
    return False


def _sha1_hex(prefix: bytes, strings, out: np.ndarray) -> None:
    """Write 40 lowercase hex bytes per value of sha1(prefix + value bytes) into `out`, without per-row str."""
    pos, copy = 0, hashlib.sha1(prefix).copy  # copying a primed context is cheaper than a new one
    for chunk in string_chunks(strings):
        offs, data = offsets_and_data(chunk)
        view = memoryview(data) if data is not None else memoryview(b"")
        for start in range(0, len(chunk), _HASH_STEP):
            o = offs[start:start + _HASH_STEP + 1].tolist()
            digests = []
            append = digests.append
            for a, b in zip(o, o[1:]):
                h = copy()
                h.update(view[a:b])
                append(h.digest())
            hexed = binascii.hexlify(b"".join(digests))
            out[pos:pos + len(hexed)] = np.frombuffer(hexed, np.uint8)
            pos += len(hexed)


def compute_ids(bio_types: pa.Array, sequences: pa.Array, *, normalized: bool = False,
                out: np.ndarray | None = None) -> pa.Array:
    """Vectorised-input S4, same normalisation as compute_id (`normalized`: the caller already trimmed both).
    `out`: a writable uint8 array of 40 bytes per row to hold the ids' characters."""
    if sequences.null_count:
        raise SchemaError("Sequence is missing.", hint="Every record needs a non-empty sequence.")
    n = len(sequences)
    bts = bio_types if normalized else pc.utf8_trim(pc.fill_null(bio_types, ""), PY_WHITESPACE)
    trim = not normalized and edges_may_be_space(sequences)
    seqs = pc.utf8_trim(sequences, PY_WHITESPACE) if trim else sequences
    out = pool_array(40 * n, np.uint8) if out is None else out
    kinds = pc.unique(bts).to_pylist()
    if len(kinds) <= 1:
        _sha1_hex(f"{kinds[0] if kinds else ''}|".encode("utf-8"), seqs, out)
    else:
        rows = out.reshape(n, 40)
        for bt in kinds:
            idx = pc.indices_nonzero(pc.equal(bts, bt))
            part = np.empty(40 * len(idx), np.uint8)
            _sha1_hex(f"{bt}|".encode("utf-8"), seqs.take(idx), part)
            rows[idx.to_numpy()] = part.reshape(-1, 40)
    return _hex_ids(out)


def _hex_ids(hexed: np.ndarray, step: int = 2**25) -> pa.Array:
    """40-byte hex ids as a string array; chunked beyond `step` rows so int32 offsets cannot overflow."""
    offsets = np.arange(min(len(hexed) // 40, step) + 1, dtype=np.int32) * 40
    parts = [hexed[i:i + 40 * step] for i in range(0, len(hexed), 40 * step)] or [hexed]
    arrays = [pa.StringArray.from_buffers(len(p) // 40, pa.py_buffer(offsets[:len(p) // 40 + 1]), pa.py_buffer(p))
              for p in parts]
    return arrays[0] if len(arrays) == 1 else pa.chunked_array(arrays, pa.string())


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


def _only_letters(strings, letters: str) -> bool:
    """Every byte of every value is one of `letters` in either case (all alphabets are ASCII)."""
    allowed = (letters + letters.lower()).encode("ascii")
    for chunk in string_chunks(strings):
        offs, data = offsets_and_data(chunk)
        view = memoryview(data if data is not None else b"")[int(offs[0]):int(offs[-1])]
        for i in range(0, len(view), 1 << 22):
            if bytes(view[i:i + (1 << 22)]).translate(None, allowed):
                return False
    return True


def _pair_mask(bio_types, alphabets, bt, al) -> pa.Array:
    return pc.and_kleene(pc.equal(bio_types, bt), pc.is_null(alphabets) if al is None else pc.equal(alphabets, al))


def check_columns(bio_types: pa.Array, alphabets: pa.Array, sequences: pa.Array) -> None:
    """S5 over whole columns: vectorised, rows reported 1-based with at most 5 samples."""
    empty_seq = pc.or_kleene(pc.is_null(sequences), pc.equal(pc.binary_length(sequences), 0))
    if pc.any(empty_seq).as_py():
        raise SchemaError(f"Empty or missing sequence at rows {_samples(empty_seq)}.",
                          hint="Remove those rows or fill in the sequence.")
    kinds = pc.unique(bio_types).to_pylist()
    for bt in kinds:
        try:
            validate_bio_type(bt)
        except SchemaError as exc:
            rows = _samples(pc.is_null(bio_types) if bt is None else pc.equal(bio_types, bt))
            raise SchemaError(f"{str(exc).rstrip('.')} at rows {rows}.", hint=exc.hint) from None
    names = pc.unique(alphabets).to_pylist()
    if len(kinds) == 1 and len(names) == 1:
        pairs = [(kinds[0], names[0])]
    else:
        groups = pa.Table.from_arrays([bio_types, alphabets], ["b", "a"]).group_by(["b", "a"]).aggregate([])
        pairs = list(zip(groups["b"].to_pylist(), groups["a"].to_pylist()))
    for bt, al in pairs:
        try:  # raw values select rows; trimmed ones name the alphabet
            nbt, nal = validate_bio_type(bt), validate_alphabet(bt, al)
        except AlphabetError as exc:
            rows = _samples(_pair_mask(bio_types, alphabets, bt, al))
            raise AlphabetError(f"{str(exc).rstrip('.')} at rows {rows}.", hint=exc.hint) from None
        letters = ALPHABETS[nbt][nal]
        if len(pairs) == 1 and _only_letters(sequences, letters):
            continue
        sel = _pair_mask(bio_types, alphabets, bt, al)
        if len(pairs) > 1 and _only_letters(sequences.filter(sel), letters):
            continue
        pattern = f"^[{letters}{letters.lower()}]+$"
        bad = pc.and_(sel, pc.invert(pc.match_substring_regex(sequences, pattern)))
        if pc.any(bad).as_py():
            raise AlphabetError(f"invalid characters for {nal} at {_samples(bad, sequences)}",
                                hint=f"{nal} allows only {letters} (either case).")
