"""The namespace registry (R1-R13, A5): load, type grammar, column specs, hashes, register, ensure."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow as pa
import pytest
from testkit import FIXTURES
import yaml

from usr_core.contract import STATE_COLUMNS, STATE_DESCRIPTION, STATE_OWNER
from usr_core.errors import NamespaceError, SchemaError, ValidationError
from usr_core.layout import dataset_paths, registry_path
from usr_core.registry.registry import (canonical_bytes, column_types, ensure_registry_entries, hash_registry,
                                        load_frozen, load_registry, namespace_contract_hash, parse_registry,
                                        register_namespace, registry_hash, state_entry, write_freeze_file)
from usr_core.registry.types import (canonical_type, canonicalize_type_string, conforms, parse_columns_spec,
                                     parse_type, split_depth0)

STATE_ONLY_HASH = "fd4dd36ebf2f8b7ef58f147c55014b665c95a49ffef7d27809e2d9b8446302cf"
MOCK_HASH = "37fd8e72219adabc1255753d93f377316bb4f277bf1c300cb06d23b327a65546"
MOCK_CONTRACT_TEXT = ("columns:\n- name: mock__score\n  type: float64\n- name: mock__label\n  type: string\n"
                      "namespace: mock\n")
MOCK_CONTRACT_HASH = "ab2fe42995dd35c3fb5672006f4017e45454d3cdcca8e4ec7de6eda6c57b3f8e"
FIXTURE_ROOT = (FIXTURES / "dna_multi")
FIXTURE_HASH = "bac98cf08ce8f2a005699573e22eb50704e0d60b0402a502d9a30d19999c98b7"

STATE_YAML = """\
  usr_state:
    columns:
    - name: usr_state__masked
      type: bool
    - name: usr_state__qc_status
      type: string
    - name: usr_state__split
      type: string
    - name: usr_state__supersedes
      type: string
    - name: usr_state__lineage
      type: list<string>
    description: Reserved record-state overlay (masked/qc/split/lineage).
    owner: usr
"""
MOCK_COLS = [{"name": "mock__score", "type": "float64"}, {"name": "mock__label", "type": "string"}]


def _write(root: Path, text: str) -> Path:
    p = registry_path(root)
    p.write_text(text, encoding="utf-8")
    return p


def _mock_registry() -> dict:
    return {"mock": {"columns": [dict(c) for c in MOCK_COLS], "owner": None, "description": None},
            "usr_state": state_entry()}


def _fingerprint(path: Path):
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, path.read_bytes()


# --- R1 load -----------------------------------------------------------------------------------------------------

def test_R1_absent_file_registry_required(root):
    """[R1][R2] absent registry.yaml where required -> SchemaError 'Registry required'; else None."""
    with pytest.raises(SchemaError, match="Registry required") as ei:
        load_registry(root, required=True)
    assert ei.value.hint
    assert load_registry(root, required=False) is None
    assert registry_hash(root) is None
    assert list(root.iterdir()) == []


def test_R1_loads_the_documented_shape(root):
    """[R1] namespaces -> {columns: [{name, type}], description, owner}; null owner/description allowed."""
    _write(root, "namespaces:\n  mock:\n    columns:\n    - name: mock__score\n      type: float64\n"
                 "    description: null\n    owner: alice\n" + STATE_YAML)
    reg = load_registry(root)
    assert reg["mock"] == {"columns": [{"name": "mock__score", "type": "float64"}], "owner": "alice",
                           "description": None}
    assert reg["usr_state"] == state_entry()
    assert column_types(reg, "mock") == {"mock__score": "float64"}


@pytest.mark.parametrize("text,fragment", [
    ("", "mapping"),
    ("- a\n- b\n", "mapping"),
    ("just a string\n", "mapping"),
    ("other: 1\n", "'namespaces' mapping"),
    ("namespaces:\n- mock\n", "'namespaces' mapping"),
    ("namespaces: 3\n", "'namespaces' mapping"),
    ("namespaces:\n  mock: 3\n" + STATE_YAML, "must be a mapping"),
    ("namespaces:\n  mock:\n  - a\n" + STATE_YAML, "must be a mapping"),
    ("namespaces:\n  mock:\n    columns: {name: mock__a, type: int8}\n" + STATE_YAML, "must be a list"),
    ("namespaces:\n  mock:\n    owner: x\n" + STATE_YAML, "must be a list"),
    ("namespaces:\n  mock:\n    columns: []\n" + STATE_YAML, "no columns"),
    ("namespaces:\n  mock:\n    columns:\n    - type: int8\n" + STATE_YAML, "'name' and 'type'"),
    ("namespaces:\n  mock:\n    columns:\n    - name: mock__a\n" + STATE_YAML, "'name' and 'type'"),
    ("namespaces:\n  mock:\n    columns:\n    - mock__a\n" + STATE_YAML, "'name' and 'type'"),
    ("namespaces: {mock: [unclosed\n", "not valid YAML"),
])
def test_R1_shape_errors(root, tree_digest, text, fragment):
    """[R1] wrong shapes and broken YAML -> SchemaError naming the problem, file untouched."""
    _write(root, text)
    before = tree_digest(root)
    with pytest.raises(SchemaError, match=fragment) as ei:
        load_registry(root)
    assert ei.value.hint
    assert tree_digest(root) == before


@pytest.mark.parametrize("ns", ["Mock", "usr", "a__b", "1x", "mock-x"])
def test_R1_R4_bad_namespace_name_at_load_is_schema_error(root, ns):
    """[R1][R4] R4 violations in the file are load errors (SchemaError)."""
    _write(root, f"namespaces:\n  {ns}:\n    columns:\n    - name: {ns}__a\n      type: int8\n" + STATE_YAML)
    with pytest.raises(SchemaError, match="namespace|Namespace"):
        load_registry(root)


@pytest.mark.parametrize("cols,fragment", [
    ("    - name: other__a\n      type: int8\n", "must be named mock__"),
    ("    - name: mock__\n      type: int8\n", "must be named mock__"),
    ("    - name: mocka\n      type: int8\n", "must be named mock__"),
    ("    - name: mock__a\n      type: int8\n    - name: mock__a\n      type: int8\n", "twice"),
    ("    - name: mock__a\n      type: decimal128\n", "Unsupported type"),
    ("    - name: mock__a\n      type: null\n", "Unsupported type"),
])
def test_R1_R5_R6_column_errors_at_load(root, cols, fragment):
    """[R1][R5][R6] bad column names, duplicates and types outside the grammar fail the load."""
    _write(root, "namespaces:\n  mock:\n    columns:\n" + cols + STATE_YAML)
    with pytest.raises(SchemaError, match=fragment):
        load_registry(root)


def test_R1_R3_missing_usr_state(root):
    """[R1][R3] usr_state missing -> SchemaError listing missing= columns."""
    _write(root, "namespaces:\n  mock:\n    columns:\n    - name: mock__a\n      type: int8\n")
    with pytest.raises(SchemaError, match="usr_state") as ei:
        load_registry(root)
    assert "missing=" in str(ei.value) and "usr_state__masked" in str(ei.value)
    _write(root, "namespaces: {}\n")
    with pytest.raises(SchemaError, match="missing="):
        load_registry(root)


def _state_yaml(cols) -> str:
    body = "".join(f"    - name: {n}\n      type: {t}\n" for n, t in cols)
    return f"namespaces:\n  usr_state:\n    columns:\n{body}    owner: usr\n"


@pytest.mark.parametrize("cols,report", [
    (STATE_COLUMNS[:4], "missing=['usr_state__lineage'] extra=[] mismatched=[]"),
    (STATE_COLUMNS + (("usr_state__extra", "string"),), "missing=[] extra=['usr_state__extra'] mismatched=[]"),
    ((("usr_state__masked", "string"),) + STATE_COLUMNS[1:], "missing=[] extra=[] mismatched=['usr_state__masked']"),
    ((STATE_COLUMNS[1], STATE_COLUMNS[0]) + STATE_COLUMNS[2:], "missing=[] extra=[] mismatched=[]"),
])
def test_R1_R3_non_standard_usr_state(root, cols, report):
    """[R1][R3] usr_state must be exact and in order; the error reports missing=/extra=/mismatched=."""
    _write(root, _state_yaml(cols))
    with pytest.raises(SchemaError, match="non-standard") as ei:
        load_registry(root)
    assert report in str(ei.value)


def test_R3_state_entry_is_the_contract():
    """[R3] the reserved entry: five columns in order, owner usr, fixed description."""
    assert state_entry() == {
        "columns": [{"name": "usr_state__masked", "type": "bool"},
                    {"name": "usr_state__qc_status", "type": "string"},
                    {"name": "usr_state__split", "type": "string"},
                    {"name": "usr_state__supersedes", "type": "string"},
                    {"name": "usr_state__lineage", "type": "list<string>"}],
        "owner": "usr", "description": "Reserved record-state overlay (masked/qc/split/lineage).",
    }
    assert (STATE_OWNER, STATE_DESCRIPTION) == ("usr", "Reserved record-state overlay (masked/qc/split/lineage).")


def test_R1_fixture_registry_loads_and_hashes(tree_digest):
    """[R1][R8] the interoperability fixture registry hashes to bac98cf0..., and is stored in R8 form."""
    before = tree_digest(FIXTURE_ROOT)
    reg = load_registry(FIXTURE_ROOT)
    assert sorted(reg) == ["assay", "qc", "usr_state"]
    assert registry_hash(FIXTURE_ROOT) == FIXTURE_HASH
    assert canonical_bytes(reg) == registry_path(FIXTURE_ROOT).read_bytes()
    assert tree_digest(FIXTURE_ROOT) == before


# --- R6 types ----------------------------------------------------------------------------------------------------

TYPE_PAIRS = [
    ("string", pa.string()), ("bool", pa.bool_()),
    ("int8", pa.int8()), ("int16", pa.int16()), ("int32", pa.int32()), ("int64", pa.int64()),
    ("uint8", pa.uint8()), ("uint16", pa.uint16()), ("uint32", pa.uint32()), ("uint64", pa.uint64()),
    ("float16", pa.float16()), ("float32", pa.float32()), ("float64", pa.float64()),
    ("list<string>", pa.list_(pa.string())),
    ("list<list<int64>>", pa.list_(pa.list_(pa.int64()))),
    ("fixed_size_list<float32>[3]", pa.list_(pa.float32(), 3)),
    ("struct<a:int64,b:string>", pa.struct([("a", pa.int64()), ("b", pa.string())])),
    ("struct<a:list<int8>,b:struct<c:bool,d:float64>>",
     pa.struct([("a", pa.list_(pa.int8())), ("b", pa.struct([("c", pa.bool_()), ("d", pa.float64())]))])),
    ("list<struct<a:int8,t:timestamp[us, UTC]>>",
     pa.list_(pa.struct([("a", pa.int8()), ("t", pa.timestamp("us", tz="UTC"))]))),
    ("fixed_size_list<struct<a:int8>>[2]", pa.list_(pa.struct([("a", pa.int8())]), 2)),
    ("timestamp[s]", pa.timestamp("s")), ("timestamp[ms]", pa.timestamp("ms")),
    ("timestamp[us]", pa.timestamp("us")), ("timestamp[ns]", pa.timestamp("ns")),
    ("timestamp[us, UTC]", pa.timestamp("us", tz="UTC")),
    ("timestamp[ns, Europe/Berlin]", pa.timestamp("ns", tz="Europe/Berlin")),
    ("timestamp[ms, +02:00]", pa.timestamp("ms", tz="+02:00")),
]


@pytest.mark.parametrize("text,arrow", TYPE_PAIRS, ids=[t for t, _ in TYPE_PAIRS])
def test_R6_type_grammar_both_ways(text, arrow):
    """[R6] 1:1 mapping between type strings and Arrow types; canonical string = reverse mapping."""
    assert parse_type(text) == arrow
    assert canonical_type(arrow) == text
    assert canonicalize_type_string(text) == text
    assert conforms(arrow, text)


@pytest.mark.parametrize("text,canon", [
    ("timestamp[us,UTC]", "timestamp[us, UTC]"),
    ("timestamp[ us ,  UTC ]", "timestamp[us, UTC]"),
    ("struct<a: int64, b: string>", "struct<a:int64,b:string>"),
    (" list< int8 > ", "list<int8>"),
    ("fixed_size_list<int8>[ 3 ]", "fixed_size_list<int8>[3]"),
    ("list<struct<x:timestamp[ns,UTC], y:list<string>>>", "list<struct<x:timestamp[ns, UTC],y:list<string>>>"),
])
def test_R6_canonical_strings_have_no_spaces_but_after_tz_comma(text, canon):
    """[R6] canonical form: no spaces except the one after the comma in timestamp[unit, tz]."""
    assert canonicalize_type_string(text) == canon


@pytest.mark.parametrize("arrow,canon", [
    (pa.large_string(), "string"),
    (pa.string_view(), "string"),
    (pa.large_list(pa.large_string()), "list<string>"),
    (pa.list_(pa.large_string()), "list<string>"),
    (pa.struct([("s", pa.large_string())]), "struct<s:string>"),
    (pa.large_list(pa.timestamp("us", tz="UTC")), "list<timestamp[us, UTC]>"),
])
def test_R6_large_variants_map_to_plain(arrow, canon):
    """[R6] large_string -> string, large_list -> list."""
    assert canonical_type(arrow) == canon
    assert conforms(arrow, canon)


@pytest.mark.parametrize("arrow", [
    pa.dictionary(pa.int32(), pa.string()), pa.binary(), pa.large_binary(), pa.binary(4), pa.date32(), pa.date64(),
    pa.decimal128(10, 2), pa.time32("s"), pa.duration("us"), pa.null(), pa.map_(pa.string(), pa.int8()),
    pa.list_(pa.date32()), pa.struct([("a", pa.binary())]), pa.struct([]),
], ids=str)
def test_R6_unsupported_arrow_types(arrow):
    """[R6] dictionary, binary, date, decimal (and anything else outside the grammar) -> SchemaError."""
    with pytest.raises(SchemaError, match="Unsupported") as ei:
        canonical_type(arrow)
    assert "Types:" in ei.value.hint
    assert conforms(arrow, "string") is False


@pytest.mark.parametrize("text", [
    "", "   ", "int", "float", "double", "boolean", "String", "large_string", "utf8", "binary", "date32",
    "decimal(10,2)", "dictionary<int32,string>", "list<>", "list<int8", "list<int8>>", "list<list<int8>",
    "fixed_size_list<int8>", "fixed_size_list<int8>[0]", "fixed_size_list<int8>[-1]", "fixed_size_list<int8>[x]",
    "struct<>", "struct<a>", "struct<:int8>", "struct<a:>", "struct<a:int8,>", "timestamp", "timestamp[]",
    "timestamp[xs]", "timestamp[US]", "timestamp[us, ]", "timestamp[us,]", "map<string,int8>", "list<int8>[3]",
])
def test_R6_unsupported_type_strings(text):
    """[R6] anything outside the grammar (incl. N <= 0, bad units, empty tz) -> SchemaError."""
    with pytest.raises(SchemaError):
        parse_type(text)


def test_R6_conforms_is_exact_string_equality():
    """[R6] a column conforms iff canonical(arrow type) == registry string."""
    assert conforms(pa.timestamp("us", tz="UTC"), "timestamp[us, UTC]")
    assert not conforms(pa.timestamp("us", tz="UTC"), "timestamp[us,UTC]")
    assert not conforms(pa.timestamp("us"), "timestamp[us, UTC]")
    assert not conforms(pa.int32(), "int64")
    assert not conforms(pa.list_(pa.float32(), 3), "list<float32>")
    assert not conforms(pa.struct([("b", pa.int8()), ("a", pa.int8())]), "struct<a:int8,b:int8>")


# --- R7 column specs ---------------------------------------------------------------------------------------------

def test_R7_column_spec_depth0_split():
    """[R7] commas inside <...> and [...] do not split items; types canonicalised."""
    spec = "mock__score:float64,mock__s:struct<a:int64,b:string>, mock__t : timestamp[us,UTC] ,mock__v:list<int8>"
    assert parse_columns_spec(spec) == [
        {"name": "mock__score", "type": "float64"},
        {"name": "mock__s", "type": "struct<a:int64,b:string>"},
        {"name": "mock__t", "type": "timestamp[us, UTC]"},
        {"name": "mock__v", "type": "list<int8>"},
    ]
    assert split_depth0("a:struct<x:int8,y:int8>,b:timestamp[us, UTC]") == ["a:struct<x:int8,y:int8>",
                                                                           "b:timestamp[us, UTC]"]


def test_R7_empty_items_skipped():
    """[R7] empty items are skipped; an empty spec gives no columns."""
    assert parse_columns_spec(",, mock__a:int8 ,  ,") == [{"name": "mock__a", "type": "int8"}]
    assert parse_columns_spec("") == [] and parse_columns_spec(" , ") == []


@pytest.mark.parametrize("spec", ["mock__a", "mock__a:", ":int8", "mock__a:int8,mock__b", "  : ", "mock__a :  "])
def test_R7_missing_side_says_use_name_type(spec):
    """[R7] a missing name or type -> SchemaError 'Use name:type'."""
    with pytest.raises(SchemaError, match="Use name:type") as ei:
        parse_columns_spec(spec)
    assert ei.value.hint


def test_R7_split_at_first_colon_and_bad_type():
    """[R7] split at the first ':' (struct types keep theirs); a bad type is an R6 SchemaError."""
    assert parse_columns_spec("mock__s:struct<a:int8>") == [{"name": "mock__s", "type": "struct<a:int8>"}]
    with pytest.raises(SchemaError, match="Unsupported"):
        parse_columns_spec("mock__a:decimal")


# --- R8 / R9 hashes ----------------------------------------------------------------------------------------------

def test_R8_vector_only_usr_state():
    """[R8] only the R3 entry -> fd4dd36e..."""
    assert hash_registry({"usr_state": state_entry()}) == STATE_ONLY_HASH


def test_R8_vector_with_mock():
    """[R8] plus mock (null owner/description, mock__score float64, mock__label string) -> 37fd8e72..."""
    reg = _mock_registry()
    assert hash_registry(reg) == MOCK_HASH
    payload = {"namespaces": {ns: {"owner": e["owner"], "description": e["description"], "columns": e["columns"]}
                              for ns, e in reg.items()}}
    assert canonical_bytes(reg) == yaml.safe_dump(payload, sort_keys=True).encode()
    assert hashlib.sha256(canonical_bytes(reg)).hexdigest() == MOCK_HASH


def test_R9_vector_text_and_hash():
    """[R9] contract text of mock and its hash ab2fe429...; owner/description excluded."""
    reg = _mock_registry()
    assert yaml.safe_dump({"namespace": "mock", "columns": MOCK_COLS}, sort_keys=True) == MOCK_CONTRACT_TEXT
    assert hashlib.sha256(MOCK_CONTRACT_TEXT.encode()).hexdigest() == MOCK_CONTRACT_HASH
    assert namespace_contract_hash(reg, "mock") == MOCK_CONTRACT_HASH
    reg["mock"]["owner"], reg["mock"]["description"] = "alice", "changed"
    assert namespace_contract_hash(reg, "mock") == MOCK_CONTRACT_HASH


def test_R9_column_order_counts_and_unknown_ns():
    """[R9] column order is part of the contract hash; an unregistered ns is a SchemaError."""
    reg = _mock_registry()
    reg["mock"]["columns"].reverse()
    assert namespace_contract_hash(reg, "mock") != MOCK_CONTRACT_HASH
    with pytest.raises(SchemaError, match="not registered"):
        namespace_contract_hash(reg, "nope")


HAND_WRITTEN = """\
# a hand-edited registry: comments, flow style, other key and namespace order, quoting
namespaces:
  usr_state: {owner: "usr", description: 'Reserved record-state overlay (masked/qc/split/lineage).',
    columns: [{type: bool, name: usr_state__masked}, {name: usr_state__qc_status, type: string},
              {name: usr_state__split, type: string}, {name: usr_state__supersedes, type: string},
              {name: usr_state__lineage, type: 'list<string>'}]}
  mock:            # trailing comment
    owner: ~
    columns:
      - {name: "mock__score", type: "float64"}
      - type: string
        name: mock__label
"""


def test_R8_invariant_to_namespace_order_comments_formatting(root):
    """[R8] namespace order, comments and formatting of the file do not change registry_hash."""
    _write(root, HAND_WRITTEN)
    assert registry_hash(root) == MOCK_HASH
    reg = _mock_registry()
    assert hash_registry(dict(reversed(list(reg.items())))) == MOCK_HASH


def test_R8_column_order_counts(root):
    """[R8] swapping two columns changes registry_hash."""
    _write(root, HAND_WRITTEN.replace("mock__score", "TMP").replace("mock__label", "mock__score")
           .replace("TMP", "mock__label").replace('type: "float64"', "type: string")
           .replace("type: string\n        name", "type: float64\n        name"))
    reg = load_registry(root)
    assert [c["name"] for c in reg["mock"]["columns"]] == ["mock__label", "mock__score"]
    assert registry_hash(root) != MOCK_HASH


def test_R8_owner_and_description_count():
    """[R8] unlike R9, owner and description are part of registry_hash."""
    reg = _mock_registry()
    reg["mock"]["owner"] = "alice"
    assert hash_registry(reg) != MOCK_HASH


def test_R8_non_ascii_escaped_and_roundtrips():
    """[R8] PyYAML form: non-ASCII escaped (file stays ASCII); load(dump) is the same registry."""
    reg = _mock_registry()
    reg["mock"]["owner"] = "Zoë"
    reg["mock"]["description"] = "x " * 60
    data = canonical_bytes(reg)
    data.decode("ascii")
    assert b"\\xEB" in data
    assert parse_registry(yaml.safe_load(data)) == reg


# --- R10 register ------------------------------------------------------------------------------------------------

def test_R10_register_into_empty_root_adds_usr_state(root):
    """[R10][R3][R8] first registration adds usr_state; file is written in R8 form; hash is the vector."""
    reg = register_namespace(root, "mock", "mock__score:float64,mock__label:string")
    assert list(reg) == ["mock", "usr_state"] and reg["usr_state"] == state_entry()
    assert registry_hash(root) == MOCK_HASH
    assert registry_path(root).read_bytes() == canonical_bytes(load_registry(root))
    assert sorted(p.name for p in root.iterdir()) == [".registry.lock", "registry.yaml"]


def test_R10_register_accepts_column_dicts(root):
    """[R10] columns may be given as [{name, type}] as well as a spec string."""
    register_namespace(root, "mock", [dict(c) for c in MOCK_COLS])
    assert registry_hash(root) == MOCK_HASH


def test_R10_register_stores_canonical_type_strings(root):
    """[R10][R6] registration stores canonical strings."""
    register_namespace(root, "mock", "mock__t:timestamp[us,UTC],mock__s:struct<a: int64, b: list< string >>")
    register_namespace(root, "other", [{"name": "other__f", "type": " fixed_size_list<float32>[ 4 ] "}])
    reg = load_registry(root)
    assert column_types(reg, "mock") == {"mock__t": "timestamp[us, UTC]", "mock__s": "struct<a:int64,b:list<string>>"}
    assert column_types(reg, "other") == {"other__f": "fixed_size_list<float32>[4]"}


def test_R10_existing_without_overwrite_fails_and_changes_nothing(root, tree_digest):
    """[R10] not idempotent: registering again -> 'already registered. Use --overwrite'; file untouched."""
    register_namespace(root, "mock", "mock__score:float64,mock__label:string")
    before, fp = tree_digest(root), _fingerprint(registry_path(root))
    with pytest.raises(SchemaError, match=r"already registered\. Use --overwrite"):
        register_namespace(root, "mock", "mock__score:float64,mock__label:string")
    with pytest.raises(SchemaError, match="already registered"):
        register_namespace(root, "usr_state", [dict(name=n, type=t) for n, t in STATE_COLUMNS])
    assert tree_digest(root) == before and _fingerprint(registry_path(root)) == fp


def test_R10_overwrite_replaces_wholesale(root):
    """[R10] overwrite replaces columns, owner and description of the entry."""
    register_namespace(root, "mock", "mock__a:int8,mock__b:string", owner="alice", description="first")
    reg = register_namespace(root, "mock", "mock__c:float64", overwrite=True)
    assert reg["mock"] == {"columns": [{"name": "mock__c", "type": "float64"}], "owner": None, "description": None}
    assert load_registry(root)["mock"] == reg["mock"]
    register_namespace(root, "mock", [dict(c) for c in MOCK_COLS], overwrite=True)
    assert registry_hash(root) == MOCK_HASH


@pytest.mark.parametrize("columns", ["", " , ", None, []])
def test_R10_no_columns_rejected(root, tree_digest, columns):
    """[R10] no columns -> SchemaError; nothing written."""
    before = tree_digest(root)
    with pytest.raises(SchemaError, match="no columns"):
        register_namespace(root, "mock", columns)
    assert tree_digest(root) == before and not registry_path(root).exists()


@pytest.mark.parametrize("ns", ["usr", "Mock", "a__b", "1a", "mo-ck", ""])
def test_R4_R10_register_rejects_bad_names(root, tree_digest, ns):
    """[R4][R10] invalid or reserved names -> NamespaceError (a ValidationError) at registration; nothing written."""
    before = tree_digest(root)
    with pytest.raises(NamespaceError) as ei:
        register_namespace(root, ns, f"{ns}__a:int8")
    assert isinstance(ei.value, ValidationError) and ei.value.hint
    assert tree_digest(root, ignore_locks=False) == before


@pytest.mark.parametrize("spec,fragment", [
    ("other__a:int8", "must be named mock__"),
    ("mock__:int8", "must be named mock__"),
    ("mock_a:int8", "must be named mock__"),
    ("mock__a:int8,mock__a:string", "twice"),
    ("mock__a:int", "Unsupported"),
    ("mock__a", "Use name:type"),
])
def test_R5_R6_R10_register_rejects_bad_columns(root, tree_digest, spec, fragment):
    """[R5][R6][R10] column naming, uniqueness and types checked at registration; nothing written."""
    register_namespace(root, "keep", "keep__a:int8")
    before = tree_digest(root)
    with pytest.raises(SchemaError, match=fragment):
        register_namespace(root, "mock", spec)
    assert tree_digest(root) == before


def test_R3_R10_explicit_usr_state_registration(root, tmp_path):
    """[R3][R10] registering usr_state explicitly requires exactly its columns; result is the standard entry."""
    with pytest.raises(SchemaError, match="non-standard"):
        register_namespace(root, "usr_state", "usr_state__masked:bool")
    with pytest.raises(SchemaError, match="non-standard"):
        register_namespace(root, "usr_state", [dict(name=n, type=t) for n, t in reversed(STATE_COLUMNS)])
    assert not registry_path(root).exists()
    register_namespace(root, "usr_state", ",".join(f"{n}:{t}" for n, t in STATE_COLUMNS))
    assert registry_hash(root) == STATE_ONLY_HASH


def test_R10_register_on_corrupt_registry_keeps_it(root, tree_digest):
    """[R1][R10] a registry that does not load is never overwritten by a registration."""
    _write(root, "namespaces: [broken\n")
    before = tree_digest(root)
    with pytest.raises(SchemaError, match="not valid YAML"):
        register_namespace(root, "mock", "mock__a:int8")
    assert tree_digest(root) == before


def test_R10_missing_root_is_schema_error(tmp_path):
    """[R10] the root must exist; it is not created implicitly."""
    with pytest.raises(SchemaError, match="not a directory"):
        register_namespace(tmp_path / "nope", "mock", "mock__a:int8")
    assert not (tmp_path / "nope").exists()


# --- R11 ensure --------------------------------------------------------------------------------------------------

def test_R11_ensure_creates_and_is_idempotent(root):
    """[R11] ensure on an empty root adds the ns and usr_state; a repeat call writes nothing."""
    entries = {"mock": {"columns": [dict(c) for c in MOCK_COLS]}}
    ensure_registry_entries(root, entries)
    assert registry_hash(root) == MOCK_HASH
    fp = _fingerprint(registry_path(root))
    reg = ensure_registry_entries(root, entries)
    ensure_registry_entries(root, {"mock": {"columns": "mock__label:string"}})
    assert reg == load_registry(root)
    assert _fingerprint(registry_path(root)) == fp  # same inode, mtime and bytes: no write


def test_R11_ensure_is_additive(root):
    """[R11] missing columns are appended, missing namespaces added, existing ones kept."""
    register_namespace(root, "mock", "mock__score:float64")
    register_namespace(root, "keep", "keep__a:int8", owner="bob")
    reg = ensure_registry_entries(root, {
        "mock": {"columns": "mock__label:string,mock__score:float64"},
        "fresh": {"columns": "fresh__x:list<int8>", "owner": "carol", "description": "new"},
    })
    assert [c["name"] for c in reg["mock"]["columns"]] == ["mock__score", "mock__label"]
    assert reg["fresh"] == {"columns": [{"name": "fresh__x", "type": "list<int8>"}], "owner": "carol",
                            "description": "new"}
    assert reg["keep"]["owner"] == "bob" and [c["name"] for c in reg["keep"]["columns"]] == ["keep__a"]
    assert load_registry(root) == reg
    assert registry_hash(root) == hash_registry(reg)


def test_R11_ensure_fills_null_owner_and_description_only(root):
    """[R11] null owner/description are filled; set ones are never replaced."""
    register_namespace(root, "mock", "mock__a:int8")
    reg = ensure_registry_entries(root, {"mock": {"columns": "mock__a:int8", "owner": "alice"}})
    assert (reg["mock"]["owner"], reg["mock"]["description"]) == ("alice", None)
    fp = _fingerprint(registry_path(root))
    reg = ensure_registry_entries(root, {"mock": {"columns": "mock__a:int8", "owner": "mallory"}})
    assert reg["mock"]["owner"] == "alice" and _fingerprint(registry_path(root)) == fp
    reg = ensure_registry_entries(root, {"mock": {"columns": "mock__a:int8", "owner": "x", "description": "d"}})
    assert (reg["mock"]["owner"], reg["mock"]["description"]) == ("alice", "d")


def test_R11_type_conflict_rejected_all_or_nothing(root, tree_digest):
    """[R11] a type conflict -> SchemaError; no part of the call is written."""
    register_namespace(root, "mock", "mock__score:float64")
    before = tree_digest(root)
    with pytest.raises(SchemaError, match="Type conflict for mock__score"):
        ensure_registry_entries(root, {"fresh": {"columns": "fresh__a:int8"},
                                       "mock": {"columns": "mock__new:int8,mock__score:float32"}})
    assert tree_digest(root) == before


def test_R11_equivalent_type_spelling_is_no_conflict_and_no_write(root):
    """[R6][R11] a hand-written non-canonical type equals its canonical spelling: no conflict, file kept as is."""
    text = ("namespaces:\n  mock:\n    columns:\n    - name: mock__t\n      type: timestamp[us,UTC]\n"
            "    owner: null\n    description: null\n" + STATE_YAML + "# keep this comment\n")
    _write(root, text)
    fp = _fingerprint(registry_path(root))
    ensure_registry_entries(root, {"mock": {"columns": [{"name": "mock__t", "type": "timestamp[us, UTC]"}]}})
    assert _fingerprint(registry_path(root)) == fp
    assert registry_path(root).read_text() == text


@pytest.mark.parametrize("entries,exc", [
    ({"usr": {"columns": "usr__a:int8"}}, NamespaceError),
    ({"Bad": {"columns": "Bad__a:int8"}}, NamespaceError),
    ({"mock": {"columns": "other__a:int8"}}, SchemaError),
    ({"mock": {"columns": "mock__a:int"}}, SchemaError),
    ({"mock": {"columns": []}}, SchemaError),
    ({"usr_state": {"columns": "usr_state__extra:int8"}}, SchemaError),
])
def test_R4_R5_R11_ensure_rejects_bad_entries(root, tree_digest, entries, exc):
    """[R4][R5][R11] invalid entries fail before anything is written."""
    register_namespace(root, "mock", "mock__score:float64")
    before = tree_digest(root)
    with pytest.raises(exc):
        ensure_registry_entries(root, entries)
    assert tree_digest(root) == before


def test_R3_R11_ensure_usr_state_on_empty_root_is_standard(root):
    """[R3][R11] ensuring usr_state with its columns gives the standard entry (owner/description filled)."""
    ensure_registry_entries(root, {"usr_state": {"columns": [dict(name=n, type=t) for n, t in STATE_COLUMNS]}})
    assert registry_hash(root) == STATE_ONLY_HASH


# --- R13 freeze files ------------------------------------------------------------------------------------------------

def test_R13_freeze_file_written_once_in_R8_form(root):
    """[R13] registry.<H>.yaml holds the R8 bytes of the registry with hash H and is never rewritten."""
    reg = register_namespace(root, "mock", [dict(c) for c in MOCK_COLS])
    h = registry_hash(root)
    path = dataset_paths(root, "demo").freeze_file(h)
    assert write_freeze_file(path, reg) is True
    assert path.read_bytes() == canonical_bytes(reg) == registry_path(root).read_bytes()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == h == MOCK_HASH
    fp = _fingerprint(path)
    assert write_freeze_file(path, {"usr_state": state_entry()}) is False
    assert _fingerprint(path) == fp
    assert load_frozen(path) == reg
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


# --- A5 registry lock ------------------------------------------------------------------------------------------------

HOLDER = """
import sys, time
from usr_core.storage.locks import file_lock
with file_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_A5_registry_writes_wait_for_the_registry_lock(root):
    """[A5] a registration waits while another process holds <root>/.registry.lock, then writes atomically."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(root / ".registry.lock")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked", proc.stderr.read()
        done, errors = threading.Event(), []

        def register():
            try:
                register_namespace(root, "mock", "mock__score:float64,mock__label:string")
            except Exception as exc:  # pragma: no cover - surfaced below
                errors.append(exc)
            done.set()

        th = threading.Thread(target=register, daemon=True)
        th.start()
        assert not done.wait(0.3)
        assert not registry_path(root).exists()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert done.wait(10) and not errors
        th.join(5)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
    assert registry_hash(root) == MOCK_HASH
    assert sorted(p.name for p in root.iterdir()) == [".registry.lock", "registry.yaml"]
    assert (root / ".registry.lock").read_text().strip() == str(os.getpid())


# ---------------------------------------------------------------- issue 13 item 7: hostile registry files

import time  # noqa: E402

MOCK_ENTRY = "  mock:\n    columns:\n    - name: mock__score\n      type: float64\n"


def _laughs(levels: int = 9, width: int = 9) -> str:
    """A classic billion-laughs anchor chain; the last anchor expands to width**levels strings."""
    lines = ["    laugh0: &l0 [lol]"]
    for i in range(1, levels):
        lines.append(f"    laugh{i}: &l{i} [{', '.join(['*l' + str(i - 1)] * width)}]")
    return "\n".join(lines)


HOSTILE_REGISTRIES = {
    "alias-bomb-description": f"x:\n{_laughs()}\nnamespaces:\n{MOCK_ENTRY}    description: *l8\n    owner: null\n",
    "alias-bomb-owner": f"x:\n{_laughs()}\nnamespaces:\n{MOCK_ENTRY}    owner: *l8\n",
    "plain-alias": "namespaces:\n  mock: &m\n    columns:\n    - name: mock__score\n      type: float64\n"
                   "  gc: *m\n",
    "anchor-only": f"namespaces:\n  mock:\n    columns: &cols\n    - name: mock__score\n      type: float64\n",
    "merge-key-inline": f"namespaces:\n{MOCK_ENTRY}    <<: {{owner: alice}}\n",
    "tag-python": f"namespaces:\n{MOCK_ENTRY}    owner: !!python/object/apply:os.system [echo hi]\n",
    "tag-binary": f"namespaces:\n{MOCK_ENTRY}    owner: !!binary aGk=\n",
    "tag-set": f"namespaces:\n{MOCK_ENTRY}    owner: !!set {{a, b}}\n",
    "tag-local": f"namespaces:\n{MOCK_ENTRY}    owner: !mine x\n",
    "deep-flow": f"namespaces:\n{MOCK_ENTRY}    description: {'[' * 5000}{']' * 5000}\n",
    "deep-block": "namespaces:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 60)) + "  " * 60 + "v: 1\n",
    "huge-scalar": f"namespaces:\n{MOCK_ENTRY}    description: {'x' * (200 << 10)}\n",
    "huge-file": "# " + "padding " * (700 << 10) + f"\nnamespaces:\n{MOCK_ENTRY}",
    "type-nested-3000": f"namespaces:\n  mock:\n    columns:\n    - name: mock__x\n      type: "
                        f"{'list<' * 3000}int8{'>' * 3000}\n",
    "type-fixed-size-huge": "namespaces:\n  mock:\n    columns:\n    - name: mock__x\n      type: "
                            "fixed_size_list<int8>[999999999999]\n",
    "description-mapping": f"namespaces:\n{MOCK_ENTRY}    description: {{a: 1}}\n",
    "many-nodes": f"x: [{', '.join(['1'] * 60000)}]\nnamespaces:\n{MOCK_ENTRY}",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_REGISTRIES))
def test_R1_hostile_registry_refused_fast_before_building(root, name):
    """[R1] [R6] issue 13 item 7: aliases/anchors, merge keys, tags, deep nesting, huge scalars and files,
    and types past the grammar's bounds are a SchemaError naming the problem, raised before anything is built
    (the alias bomb took 19-65 s, then MemoryError; the nested type a RecursionError, the huge size an
    OverflowError)."""
    registry_path(root).write_text(HOSTILE_REGISTRIES[name], encoding="utf-8")
    t0 = time.perf_counter()
    with pytest.raises(SchemaError) as ei:
        load_registry(root)
    elapsed = time.perf_counter() - t0
    assert elapsed < 10, f"{name}: {elapsed:.2f}s"  # a generous guard; the real figure is in the CLI test
    assert ei.value.hint and str(root) in str(ei.value)


def test_R1_plain_registry_with_lookalike_text_loads(root):
    """[R1] refusing YAML features is not refusing text: quoted '<<', '&', '*' and '!' in values load fine."""
    text = ("namespaces:\n  mock:\n    columns:\n    - name: mock__score\n      type: float64\n"
            "    description: '<< & * ! not YAML syntax here'\n    owner: \"*alice*\"\n" + STATE_YAML)
    registry_path(root).write_text(text, encoding="utf-8")
    reg = load_registry(root)
    assert reg["mock"]["description"] == "<< & * ! not YAML syntax here" and reg["mock"]["owner"] == "*alice*"


@pytest.mark.parametrize("bad", ["list<" * 3000 + "int8" + ">" * 3000, "fixed_size_list<int8>[999999999999]",
                                 "fixed_size_list<int8>[" + "9" * 400 + "]", "fixed_size_list<int8>[2147483648]",
                                 "struct<" + ",".join(f"f{i}:int8" for i in range(1000)) + ">",
                                 "list<" * 33 + "int8" + ">" * 33, "list<int8", "list<int8>>"])
def test_R6_type_parser_bounds(bad):
    """[R6] the type parser bounds depth (32), length (4096) and fixed sizes (int32): a clear SchemaError, never
    RecursionError / OverflowError."""
    with pytest.raises(SchemaError) as ei:
        parse_type(bad)
    assert ei.value.hint
    with pytest.raises(SchemaError):
        parse_columns_spec(f"mock__x:{bad}")


def test_R6_bounds_keep_real_types():
    """[R6] the bounds leave room for real nested types."""
    deep = "list<" * 32 + "int8" + ">" * 32
    assert canonicalize_type_string(deep) == deep
    assert parse_type("fixed_size_list<float32>[2147483647]") == pa.list_(pa.float32(), 2**31 - 1)


def test_R10_registration_refuses_hostile_type_and_head_keeps_working(make_ds, root):
    """[R10] [R6] issue 13 item 7: such a type is refused at registration, the registry is unchanged and reads of
    datasets with overlays keep working (before: once registered, head failed on every dataset)."""
    ds = make_ds()
    ds.write_overlay("mock", pa.table({"id": [r["id"] for r in ds.head(2).to_pylist()],
                                       "mock__score": [1.0, 2.0], "mock__label": ["a", "b"]}))
    before = registry_path(root).read_bytes()
    for bad in ("list<" * 3000 + "int8" + ">" * 3000, "fixed_size_list<int8>[999999999999]"):
        with pytest.raises(SchemaError):
            register_namespace(root, "evil", f"evil__x:{bad}")
        with pytest.raises(SchemaError):
            ensure_registry_entries(root, {"evil": {"columns": f"evil__x:{bad}"}})
    assert registry_path(root).read_bytes() == before
    assert ds.head(2, columns=["id", "mock__score"]).num_rows == 2


def test_R1_load_registry_is_not_cached(root):
    """Issue 10 item 3: no module-level registry cache: an edit with the same size, inode and mtime is seen."""
    register_namespace(root, "mock", "mock__score:float64")
    path = registry_path(root)
    st = path.stat()
    assert load_registry(root)["mock"]["owner"] is None
    text = path.read_text().replace("owner: null", "owner: abcd")
    with open(path, "r+", encoding="utf-8") as fh:  # same inode, same size
        fh.write(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert load_registry(root)["mock"]["owner"] == "abcd"


def test_R8_fast_canonical_dump_matches_pure_pyyaml():
    """[R8] the libyaml fast path of the canonical form writes exactly PyYAML's pure safe_dump bytes: random
    registries of short ASCII text (every printable character, YAML look-alikes such as 'yes', '~', '- a')."""
    import random
    import string

    from usr_core.registry.registry import _safe_dump

    specials = ["yes", "no", "null", "~", "1.0", "0x1", "1e3", "-", "? a", "- a", "a: b", "#x", "'q'", '"q"', "",
                " ", "a ", " a", "2020-01-01", "<<", "=", "!a", "&a", "*a", "%a", "@a", "`a", "|", "> a", "[a]",
                "{a}", "a,b", "a #b", "NaN", ".inf", "0o7", "+1", "1_000", "True", "OFF", "y", "x" * 50]
    rnd = random.Random(13)

    def text():
        return rnd.choice([None, "".join(rnd.choice(string.printable) for _ in range(rnd.randint(0, 50))),
                           rnd.choice(specials)])

    for _ in range(400):
        payload = {"namespaces": {f"ns{j}": {"owner": text(), "description": text(),
                                             "columns": [{"name": f"ns{j}__c{k}", "type": rnd.choice(
                                                 ["float64", "list<string>", "struct<a:int8,b:string>",
                                                  "timestamp[ns, Europe/Berlin]"])} for k in range(3)]}
                                  for j in range(3)}}
        assert _safe_dump(payload) == yaml.safe_dump(payload, sort_keys=True)
    long = {"namespaces": {"a": {"description": "ä" + "word " * 40, "owner": None, "columns": []}}}
    assert _safe_dump(long) == yaml.safe_dump(long, sort_keys=True)
    escaped = {"namespaces": {"a": {"description": "a!F4 P=~zLVtynXnk\rW|I\rh/|@O\r*8oCK]z'u>c*G" * 2,
                                    "owner": None, "columns": []}}}
    assert _safe_dump(escaped) == yaml.safe_dump(escaped, sort_keys=True)


def test_R8_fast_canonical_dump_matches_pure_pyyaml_for_long_printable_text():
    """[R8] printable ASCII of any length (folded past 80 columns, quoted, quotes doubled) also takes the
    libyaml path, e.g. the usr_state description, and writes the same bytes."""
    import random
    import string

    from usr_core.registry.registry import _same_in_libyaml, _safe_dump

    rnd = random.Random(11)
    printable = string.printable[:95]

    def text():
        n = rnd.randint(50, 300)
        return rnd.choice(["".join(rnd.choice(printable) for _ in range(n)),
                           "".join(rnd.choice("' :#-\"a") for _ in range(n)),
                           " ".join("".join(rnd.choice(string.ascii_letters + "()/-.,'") for _ in range(rnd.randint(1, 12)))
                                    for _ in range(40))[:n],
                           rnd.choice(["a " * 100, "' " * 100, "x" * 300, "a  b " * 30])])

    for _ in range(1500):
        payload = {"namespaces": {f"ns{j}": {"owner": text(), "description": text(),
                                             "columns": [{"name": f"ns{j}__c{k}", "type": "float64"} for k in range(2)]}
                                  for j in range(2)}}
        assert _same_in_libyaml(payload)
        assert _safe_dump(payload) == yaml.safe_dump(payload, sort_keys=True)
