"""Constants of the USR contract (spec sections 0-3, 13)."""
from __future__ import annotations

import datetime as _dt

import pyarrow as pa

SCHEMA_VERSION = "1"
ID_HASH_SPEC = "sha1_utf8_pipe"
USR_EVENT_VERSION = 1

RESERVED_NAMESPACES = frozenset({"usr"})
MUTATION_RESERVED_NAMESPACES = frozenset({"usr", "usr_state"})
TOMBSTONE_NS = "usr"
STATE_NS = "usr_state"

REQUIRED_COLUMNS = ("id", "bio_type", "sequence", "alphabet", "length", "source", "created_at")
ARROW_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("bio_type", pa.string()),
        ("sequence", pa.string()),
        ("alphabet", pa.string()),
        ("length", pa.int32()),
        ("source", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)

ALPHABETS = {
    "dna": {"dna_4": "ACGT", "dna_5": "ACGTN"},
    "rna": {"rna_4": "ACGU", "rna_5": "ACGUN"},
    "protein": {"protein_20": "ACDEFGHIKLMNPQRSTVWY", "protein_21": "ACDEFGHIKLMNPQRSTVWYX"},
}

OVERLAY_KEYS = ("id", "sequence", "sequence_norm", "sequence_ci")

# parquet key/value metadata (M1, M2)
META_SCHEMA_VERSION = "usr:schema_version"
META_ID_HASH = "usr:id_hash"
META_DATASET_CREATED_AT = "usr:dataset_created_at"
META_REGISTRY_HASH = "usr:registry_hash"
META_OVERLAY_NAMESPACE = "usr:overlay_namespace"
META_OVERLAY_KEY = "usr:overlay_key"
META_OVERLAY_CREATED_AT = "usr:overlay_created_at"
META_NAMESPACE_CONTRACT_HASH = "usr:namespace_contract_hash"

TOMBSTONE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("usr__deleted", pa.bool_()),
        ("usr__deleted_at", pa.timestamp("us", tz="UTC")),
        ("usr__deleted_reason", pa.string()),
    ]
)
TOMBSTONE_COLUMNS = ("usr__deleted", "usr__deleted_at", "usr__deleted_reason")

STATE_COLUMNS = (
    ("usr_state__masked", "bool"),
    ("usr_state__qc_status", "string"),
    ("usr_state__split", "string"),
    ("usr_state__supersedes", "string"),
    ("usr_state__lineage", "list<string>"),
)
STATE_DESCRIPTION = "Reserved record-state overlay (masked/qc/split/lineage)."
STATE_OWNER = "usr"

PARQUET_COMPRESSION = "zstd"
SNAPSHOTS_KEPT = 5


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def ts(when: _dt.datetime | None = None) -> str:
    """TS [M4]: YYYY-MM-DDTHH:MM:SS.ffffffZ."""
    when = (when or utcnow()).astimezone(_dt.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def stamp(when: _dt.datetime | None = None) -> str:
    """STAMP: TS without - : . (22 chars)."""
    return ts(when).replace("-", "").replace(":", "").replace(".", "")


def snapshot_stamp(when: _dt.datetime | None = None) -> str:
    """Snapshot S (L4): YYYYMMDDTHHMMSSffffff, no Z."""
    return stamp(when)[:-1]
