"""X3 overlay-remove: not gated, locked; mode error | delete | archive."""
from __future__ import annotations

from ..contract import MUTATION_RESERVED_NAMESPACES
from ..errors import NamespaceError, SchemaError, option_hint
from ..layout import check_namespace_name
from ..overlays.discovery import SourceKind, find_overlay
from ..storage.atomic import crash_point
from ..txn import Writer
from .archive import archive, prune_archives

REMOVE_MODES = ("error", "delete", "archive")


def remove_overlay(w: Writer, ns: str, mode: str = "error") -> dict:
    if mode not in REMOVE_MODES:
        raise SchemaError(f"Unknown overlay-remove mode {mode!r}.", hint=f"Use one of: {', '.join(REMOVE_MODES)}.")
    if ns in MUTATION_RESERVED_NAMESPACES:
        raise NamespaceError(f"Namespace {ns!r} is reserved and cannot be removed (X3, U2).",
                             hint="Use restore / state clear to change reserved overlays.")
    check_namespace_name(ns)
    with w.transaction("remove_overlay") as txn:
        paths = txn.paths
        src = find_overlay(paths, ns)  # L7 → SchemaError unless a finished compaction
        if src is None:
            if mode == "error":
                raise SchemaError(f"Overlay {ns!r} not found in {paths.derived}.",
                                  **option_hint("Check the namespace (info() lists the overlays) or use {}.", "mode", "delete"))
            return {"removed": False, "namespace": ns}
        txn.freeze()
        txn.finish_pending_compaction(ns)
        is_file = src.kind == SourceKind.COMPACT
        if mode == "archive":
            target = archive(paths, ns, src.path, is_file, txn.journal)
            crash_point("remove:after-archive")
            prune_archives(paths, ns, target, txn.journal)
            txn.event("archive_overlay", args={"namespace": ns, "archived": str(target)},
                      artifacts={"overlay": {"namespace": ns}}, target_path=target if is_file else None)
            return {"removed": True, "namespace": ns, "archived_path": str(target)}
        txn.journal.delete(src.path)
        txn.event("remove_overlay", args={"namespace": ns}, artifacts={"overlay": {"namespace": ns}})
    return {"removed": True, "namespace": ns}
