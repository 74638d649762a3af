"""USR core: the universal sequence records dataset contract (library)."""
from .contract import (ARROW_SCHEMA, ID_HASH_SPEC, MUTATION_RESERVED_NAMESPACES, REQUIRED_COLUMNS,
                       RESERVED_NAMESPACES, SCHEMA_VERSION, USR_EVENT_VERSION)
from .dataset import Dataset, DatasetInfo, Manifest, OverlayInfo, merge
from .errors import (AlphabetError, DuplicateIDError, EnvironmentFailure, LockTimeoutError, NamespaceError,
                     SchemaError, SequencesError, UnsafePathError, ValidationError)
from .identity import compute_id, normalize_sequence, validate_alphabet, validate_bio_type
from .layout import discover_datasets, normalize_dataset_id
from .records import AddSequencesResult
from .results import PartWritten
from .registry.registry import (ensure_registry_entries, load_registry, namespace_contract_hash, register_namespace,
                                registry_hash)
from .registry.types import canonical_type, parse_columns_spec, parse_type
from . import inspect  # read-only inspection API (overlay files, problems, content versions, event tail)
from .replace import replace_overlay


__all__ = [
    "ARROW_SCHEMA", "ID_HASH_SPEC", "MUTATION_RESERVED_NAMESPACES", "REQUIRED_COLUMNS", "RESERVED_NAMESPACES",
    "SCHEMA_VERSION", "USR_EVENT_VERSION", "Dataset", "DatasetInfo", "Manifest", "OverlayInfo", "AlphabetError",
    "DuplicateIDError", "LockTimeoutError", "NamespaceError", "SchemaError", "SequencesError", "ValidationError",
    "EnvironmentFailure", "UnsafePathError",
    "compute_id", "normalize_sequence", "validate_alphabet", "validate_bio_type", "discover_datasets",
    "normalize_dataset_id", "AddSequencesResult", "PartWritten", "ensure_registry_entries", "load_registry",
    "namespace_contract_hash", "register_namespace", "registry_hash", "parse_columns_spec", "parse_type",
    "canonical_type", "merge", "inspect", "replace_overlay",
]
