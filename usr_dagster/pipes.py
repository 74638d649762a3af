"""Namespaces computed in another process through Dagster Pipes (a GPU node, an HPC job, a container).

The Dagster side is an asset that launches `command` with `PipesSubprocessClient` (the same protocol as Dagster's
Kubernetes, Docker and Databricks Pipes clients: swap the client, keep the script). It sends the task as Pipes
extras (root, dataset, namespace, the incremental bookkeeping, shard, batch size, full refresh); the external side
is a script that calls `usr_core.external.pipes_main(fn)`: it reads the rows to compute, writes parts with usr_core
and reports the materialization (rows, content data version) back. See docs/dagster.md."""
from __future__ import annotations

import hashlib
from pathlib import Path

from .assets import UsrNamespace, _columns


def usr_pipes_namespace(name: str, *, columns, command, uses=("sequence",), inputs=(), owner=None,
                        description=None, code_version=None, datasets=None, shards: int = 0,
                        batch_size: int | None = None, incremental: bool = True) -> UsrNamespace:
    """A namespace whose values the external `command` (a list of arguments) computes through Pipes.

    `code_version` defaults to a digest of the command and of the content of every argument that is a file (the
    script), so editing the script recomputes the rows it computed."""
    from .shards import check_slicing

    command = tuple(str(c) for c in command)
    if not command:
        raise ValueError(f"Namespace {name!r}: command is empty; give the external program as a list of arguments.")
    check_slicing(name, shards, batch_size, "id")
    pred = datasets
    if datasets is not None and not callable(datasets):
        pred = set(datasets).__contains__
    return UsrNamespace(name=name, fn=None, columns=_columns(name, columns), uses=tuple(uses), inputs=tuple(inputs),
                        owner=owner, description=description or f"Namespace {name}, computed by `{command[-1]}` "
                        "through Dagster Pipes.", code_version=code_version or command_version(command),
                        datasets=pred, incremental=incremental, shards=shards, batch_size=batch_size,
                        command=command)


def command_version(command) -> str:
    h = hashlib.sha256(repr(tuple(command)).encode())
    for arg in command[1:]:
        p = Path(arg)
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()[:12]
