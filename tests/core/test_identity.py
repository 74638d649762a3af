"""Identity, normalisation and field checks (S2-S5)."""
from __future__ import annotations

import hashlib

import pyarrow as pa
import pytest

from usr_core.contract import ALPHABETS
from usr_core.errors import AlphabetError, SchemaError, ValidationError
from usr_core.identity import (check_columns, compute_id, compute_ids, normalize_sequence, validate_alphabet,
                               validate_bio_type)


def _cols(rows):
    bts, als, seqs = zip(*rows)
    return pa.array(bts, pa.string()), pa.array(als, pa.string()), pa.array(seqs, pa.string())


# --- S4 ids -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bio_type,seq,expected", [
    ("dna", "ACGT", "ee93db6725ec05c3d18249d7fdba5d36a6a695cd"),
    ("dna", "acgt", "da44e1276604cda4f2583885a63f5598a1401bf4"),
    ("rna", "ACGU", "0f2e42cbc5a788cf78b3560b60184dfbadcd2ff4"),
])
def test_S4_id_vectors(bio_type, seq, expected):
    """[S4] the three spec vectors, byte for byte, scalar and vectorised."""
    assert compute_id(bio_type, seq) == expected
    assert compute_ids(pa.array([bio_type]), pa.array([seq])).to_pylist() == [expected]
    assert hashlib.sha1(f"{bio_type}|{seq}".encode()).hexdigest() == expected


def test_S4_no_case_folding_and_lowercase_hex():
    """[S4] case variants are distinct records; digests are 40 lowercase hex chars."""
    a, b = compute_id("dna", "ACGT"), compute_id("dna", "AcGT")
    assert a != b
    for d in (a, b):
        assert len(d) == 40 and d == d.lower() and all(c in "0123456789abcdef" for c in d)


def test_S4_bio_type_is_part_of_the_id():
    """[S4] the same letters under another bio_type are another record."""
    assert compute_id("dna", "ACG") != compute_id("rna", "ACG") != compute_id("protein", "ACG")


def test_S3_S4_id_uses_normalised_values():
    """[S3][S4] surrounding whitespace of sequence and bio_type does not change the id."""
    want = compute_id("dna", "ACGT")
    assert compute_id("dna", "  ACGT\n\t") == want
    assert compute_id(" dna ", "ACGT") == want
    got = compute_ids(pa.array(["dna", " dna", "dna"]), pa.array(["ACGT", "ACGT", "\tACGT  "])).to_pylist()
    assert got == [want, want, want]


def test_S4_compute_ids_matches_scalar_and_handles_chunks_and_unicode():
    """[S4] vectorised ids equal per-row compute_id (UTF-8 of non-ASCII input), chunked input accepted."""
    bts = ["dna", "rna", "protein", "dna"]
    seqs = ["ACGT", "acgu", "MKV", "ÅCGT"]
    want = [compute_id(b, s) for b, s in zip(bts, seqs)]
    assert want[3] == hashlib.sha1("dna|ÅCGT".encode("utf-8")).hexdigest()
    assert compute_ids(pa.array(bts), pa.array(seqs)).to_pylist() == want
    chunked = compute_ids(pa.chunked_array([bts[:2], bts[2:]]), pa.chunked_array([seqs[:1], seqs[1:]]))
    assert chunked.to_pylist() == want
    assert compute_ids(pa.array([], pa.string()), pa.array([], pa.string())).to_pylist() == []


def test_S3_S4_vectorised_trim_equals_str_strip():
    """[S3][S4] compute_ids trims exactly the characters str.strip() trims (incl. exotic Unicode spaces)."""
    from usr_core.identity import PY_WHITESPACE

    assert set(PY_WHITESPACE) == {chr(c) for c in range(0x110000) if chr(c).isspace()}
    seqs = ["\x1cACGT\u3000", "\xa0ACGT\u2028", "\u200bACGT"]  # U+200B is not whitespace: kept
    got = compute_ids(pa.array(["dna"] * 3), pa.array(seqs)).to_pylist()
    assert got == [compute_id("dna", s) for s in seqs]
    assert got[0] == got[1] == compute_id("dna", "ACGT") != got[2]


def test_S4_compute_ids_null_sequence_is_schema_error():
    """[S4][S5] a missing sequence cannot get an id: SchemaError, not a crash."""
    with pytest.raises(SchemaError, match="missing"):
        compute_ids(pa.array(["dna"]), pa.array([None], pa.string()))


# --- S3 normalisation -----------------------------------------------------------------------------------------

def test_S3_normalize_sequence_trims_keeps_case():
    """[S3] sequence_norm = sequence minus leading/trailing whitespace, case unchanged, inner untouched."""
    assert normalize_sequence("  acGT \n") == "acGT"
    assert normalize_sequence("\tAC GT\r\n") == "AC GT"
    assert normalize_sequence("ACGT") == "ACGT"
    assert normalize_sequence("   ") == ""
    with pytest.raises(SchemaError):
        normalize_sequence(None)


def test_S3_validate_trims_bio_type_and_alphabet():
    """[S3] bio_type and alphabet are trimmed."""
    assert validate_bio_type("  dna\t") == "dna"
    assert validate_alphabet(" rna ", " rna_5 ") == "rna_5"


# --- S2 / S5 scalar validators --------------------------------------------------------------------------------

def test_S2_alphabet_table():
    """[S2] the alphabets and their letters."""
    assert ALPHABETS == {
        "dna": {"dna_4": "ACGT", "dna_5": "ACGTN"},
        "rna": {"rna_4": "ACGU", "rna_5": "ACGUN"},
        "protein": {"protein_20": "ACDEFGHIKLMNPQRSTVWY", "protein_21": "ACDEFGHIKLMNPQRSTVWYX"},
    }


@pytest.mark.parametrize("bt", ["dna", "rna", "protein"])
def test_S5_validate_bio_type_accepts_known(bt):
    """[S5] dna, rna, protein are the bio_types."""
    assert validate_bio_type(bt) == bt


@pytest.mark.parametrize("bad,fragment", [
    ("", "empty"), ("   ", "empty"), (None, "empty"),
    ("dna|x", "'|'"), ("|", "'|'"),
    ("DNA", "Unknown"), ("xna", "Unknown"),
])
def test_S5_validate_bio_type_rejects(bad, fragment):
    """[S5] empty, containing '|', unknown -> SchemaError with a hint listing the bio_types."""
    with pytest.raises(SchemaError, match=fragment.replace("|", r"\|")) as ei:
        validate_bio_type(bad)
    assert "dna, rna, protein" in ei.value.hint


@pytest.mark.parametrize("bt,al", [(bt, al) for bt, als in ALPHABETS.items() for al in als])
def test_S2_validate_alphabet_accepts_every_pair(bt, al):
    """[S2] every listed alphabet is allowed for its bio_type."""
    assert validate_alphabet(bt, al) == al


@pytest.mark.parametrize("bt,al", [("dna", "rna_4"), ("rna", "dna_4"), ("protein", "dna_5"), ("dna", "DNA_4"),
                                   ("dna", "dna_6")])
def test_S5_validate_alphabet_rejects_wrong_pair(bt, al):
    """[S5] alphabet not allowed for the bio_type -> AlphabetError naming both and the allowed ones."""
    with pytest.raises(AlphabetError, match="not allowed") as ei:
        validate_alphabet(bt, al)
    assert repr(al) in str(ei.value) and repr(bt) in str(ei.value)
    assert ", ".join(sorted(ALPHABETS[bt])) in ei.value.hint


@pytest.mark.parametrize("al", ["", "  ", None])
def test_S5_validate_alphabet_rejects_empty(al):
    """[S5] empty alphabet -> AlphabetError."""
    with pytest.raises(AlphabetError, match="empty"):
        validate_alphabet("dna", al)


def test_S5_validate_alphabet_checks_bio_type_first():
    """[S5] an unknown bio_type is a SchemaError even through validate_alphabet."""
    with pytest.raises(SchemaError):
        validate_alphabet("xna", "dna_4")


def test_P1_error_hierarchy():
    """[P1] SchemaError/AlphabetError are ValidationErrors."""
    assert issubclass(SchemaError, ValidationError) and issubclass(AlphabetError, ValidationError)
    assert not issubclass(AlphabetError, SchemaError)


# --- S5 vectorised check_columns --------------------------------------------------------------------------------

def test_S5_check_columns_accepts_valid_mixed_input():
    """[S2][S5] every alphabet in either case, mixed bio_types in one batch."""
    rows = [("dna", "dna_4", "ACGTacgt"), ("dna", "dna_5", "ACGTNn"), ("rna", "rna_4", "ACGUacgu"),
            ("rna", "rna_5", "nN"), ("protein", "protein_20", "ACDEFGHIKLMNPQRSTVWYacdefghiklmnpqrstvwy"),
            ("protein", "protein_21", "XxM")]
    check_columns(*_cols(rows))
    check_columns(pa.array([], pa.string()), pa.array([], pa.string()), pa.array([], pa.string()))


@pytest.mark.parametrize("bt,al,seq", [
    ("dna", "dna_4", "ACGN"), ("dna", "dna_4", "ACGU"), ("dna", "dna_5", "ACGTX"), ("rna", "rna_4", "ACGT"),
    ("rna", "rna_5", "ACGUX"), ("protein", "protein_20", "MKVX"), ("protein", "protein_21", "MKVB"),
    ("dna", "dna_4", "AC GT"), ("dna", "dna_4", "AC-GT"), ("dna", "dna_4", "ACGT\n"), ("dna", "dna_4", "ACGTÅ"),
    ("dna", "dna_4", "AC\nGT"),
])
def test_S2_S5_check_columns_rejects_foreign_characters(bt, al, seq):
    """[S2][S5] any character outside the alphabet (either case) -> AlphabetError 'invalid characters for <al>'."""
    with pytest.raises(AlphabetError, match=f"invalid characters for {al}"):
        check_columns(*_cols([(bt, al, "ACGU" if bt == "rna" else ("MKV" if bt == "protein" else "ACGT")),
                              (bt, al, seq)]))


def test_S5_invalid_characters_rows_are_one_based_and_at_most_five():
    """[S5] offending rows are listed 1-based with at most 5 samples."""
    rows = [("dna", "dna_4", "ACGT")] + [("dna", "dna_4", f"ACGX{i}") for i in range(8)]
    with pytest.raises(AlphabetError) as ei:
        check_columns(*_cols(rows))
    msg = str(ei.value)
    assert msg.startswith("invalid characters for dna_4 at row 2: 'ACGX0'")
    assert "row 6: 'ACGX4'" in msg and "row 7" not in msg and "row 1:" not in msg
    assert msg.count("row ") == 5
    assert "ACGT" in ei.value.hint


@pytest.mark.parametrize("bad", [None, ""])
def test_S5_empty_or_missing_sequence_is_schema_error(bad):
    """[S5] empty/missing sequence -> SchemaError with 1-based rows, ≤5 samples (checked before alphabets)."""
    rows = [("dna", "dna_4", "ACGT")] + [("dna", "dna_4", bad)] * 7 + [("dna", "nope", "ACGT")]
    with pytest.raises(SchemaError) as ei:
        check_columns(*_cols(rows))
    assert not isinstance(ei.value, AlphabetError)
    assert str(ei.value) == "Empty or missing sequence at rows 2, 3, 4, 5, 6."


def test_S5_check_columns_bio_type_errors_name_rows():
    """[S5] unknown / empty / '|' bio_type in a column -> SchemaError listing 1-based rows."""
    with pytest.raises(SchemaError, match=r"Unknown bio_type 'xna' at rows 2, 4\.") as ei:
        check_columns(*_cols([("dna", "dna_4", "A"), ("xna", "dna_4", "A"), ("dna", "dna_4", "A"),
                              ("xna", "dna_4", "A")]))
    assert not isinstance(ei.value, AlphabetError)
    with pytest.raises(SchemaError, match=r"empty.* at rows 1\."):
        check_columns(*_cols([(None, "dna_4", "A"), ("dna", "dna_4", "A")]))
    with pytest.raises(SchemaError, match=r"'\|'"):
        check_columns(*_cols([("dna|rna", "dna_4", "A")]))


def test_S5_check_columns_alphabet_errors_name_rows():
    """[S5] alphabet empty or not allowed for the bio_type -> AlphabetError listing 1-based rows."""
    with pytest.raises(AlphabetError, match=r"'rna_4' is not allowed for bio_type 'dna' at rows 3\."):
        check_columns(*_cols([("dna", "dna_4", "A"), ("rna", "rna_4", "A"), ("dna", "rna_4", "A")]))
    with pytest.raises(AlphabetError, match=r"alphabet is empty at rows 2\."):
        check_columns(*_cols([("dna", "dna_4", "A"), ("dna", None, "A")]))


def test_S3_S5_check_columns_accepts_untrimmed_bio_type_and_alphabet():
    """[S3][S5] bio_type/alphabet values with surrounding spaces are valid after trimming (no KeyError)."""
    check_columns(*_cols([(" dna", "dna_4 ", "ACGT"), ("rna\t", " rna_5", "ACGUN")]))
    with pytest.raises(AlphabetError, match="invalid characters for dna_4 at row 2"):
        check_columns(*_cols([(" dna", "dna_4 ", "ACGT"), (" dna", "dna_4 ", "ACGN")]))


def test_S5_check_columns_vectorised_on_large_input():
    """[S5] 200k rows are checked in well under a second (no per-row Python loop)."""
    import time

    n = 200_000
    bts, als = pa.array(["dna"] * n), pa.array(["dna_4"] * n)
    seqs = pa.array(["ACGTACGTAC"] * (n - 1) + ["ACGTZ"])
    t0 = time.perf_counter()
    with pytest.raises(AlphabetError, match=f"row {n}: 'ACGTZ'"):
        check_columns(bts, als, seqs)
    assert time.perf_counter() - t0 < 2.0
