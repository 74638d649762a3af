"""X5 registry-freeze: R14 on demand, with its own `registry_freeze {auto: false, updated}` event."""
from __future__ import annotations

from pathlib import Path

from ..base import auto_freeze
from ..txn import Writer


def freeze_registry(w: Writer) -> Path:
    with w.transaction("registry_freeze", gate="registry-freeze") as txn:
        args, _changed = auto_freeze(txn.paths, txn.registry, journal=txn.journal)
        updated = bool(args["restamped"])
        txn.event("registry_freeze", args={"registry_hash": args["registry_hash"], "snapshot": args["snapshot"],
                                           "auto": False, "updated": updated},
                  metrics={"updated": int(updated)}, artifacts={"registry_snapshot": args["snapshot"]})
    return Path(args["snapshot"])
