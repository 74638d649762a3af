from .registry import (canonical_bytes, ensure_registry_entries, hash_registry, load_registry,
                       namespace_contract_hash, register_namespace, registry_hash)
from .types import canonical_type, parse_columns_spec, parse_type

__all__ = ["canonical_bytes", "ensure_registry_entries", "hash_registry", "load_registry",
           "namespace_contract_hash", "register_namespace", "registry_hash", "canonical_type",
           "parse_columns_spec", "parse_type"]
