"""USR datasets and namespaces as Dagster assets (uses only usr_core's public API)."""
from .assets import UsrNamespace, usr_namespace
from .build import build_usr_definitions
from .io_manager import UsrIOManager
from .resources import UsrResource

__all__ = ["UsrIOManager", "UsrNamespace", "UsrResource", "build_usr_definitions", "usr_namespace"]
