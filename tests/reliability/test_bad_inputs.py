"""Bad-input catalogue (issue 6 §4): every bad input raises its documented error with a helpful message
and leaves the whole root byte-for-byte unchanged (tree_digest before == after, lock files aside)."""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import crash_ops
from testkit import tree_digest
from usr_core import (AlphabetError, Dataset, DuplicateIDError, LockTimeoutError, NamespaceError, SchemaError,
                      SequencesError, ValidationError, register_namespace)

USR = str(Path(sys.executable).parent / "usr")
OUTSIDE_MARK = b"outside the root\n"


@dataclass
class Case:
    id: str
    act: Callable  # act(root, inputs_dir)
    exc: type | tuple
    match: str  # regex the message must match
    prep: Callable | None = None  # prep(root, inputs_dir): makes the bad state before the digest
    bug: str | None = None  # a known usr_core defect: the case is xfail until it is fixed


def ds(root) -> Dataset:
    return Dataset(root, crash_ops.DS)


def ids(root) -> list[str]:
    return pq.read_table(ds(root).records_path, columns=["id"])["id"].to_pylist()


def seq_row(s, **kw):
    return {"sequence": s, **kw}


def write_input(inputs: Path, name: str, table: pa.Table) -> Path:
    p = inputs / name
    if name.endswith(".csv"):
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, p)
    else:
        pq.write_table(table, p)
    return p


def garbage(path: Path, data: bytes = b"PAR1 this is not parquet at all") -> None:
    path.write_bytes(data)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def symlink_out(path: Path, inputs: Path) -> None:
    """Replace `path` with a symlink to a file outside the root."""
    target = inputs / f"outside-{path.name}"
    target.write_bytes(OUTSIDE_MARK)
    if path.exists() or path.is_symlink():
        path.unlink()
    path.symlink_to(target)


def cli(root, *args):
    """Run the CLI; raise CalledProcessError with its stderr (the catalogue checks the message)."""
    env = {k: v for k, v in os.environ.items() if k != "USR_ROOT"}
    res = subprocess.run([USR, "--root", str(root), *map(str, args)], capture_output=True, text=True, env=env,
                         stdin=subprocess.DEVNULL, timeout=120)
    if res.returncode != 0:
        raise subprocess.CalledProcessError(res.returncode, args, res.stdout, res.stderr)
    return res


def maint(root, fn):
    d = ds(root)
    with d.maintenance(reason="bad input"):
        return fn(d)


F = "feat"
CASES = [
    # ---- ingest
    Case("ingest-wrong-alphabet-letter", lambda r, i: ds(r).import_rows([seq_row("ACGTX")]), AlphabetError, "X"),
    Case("ingest-protein-letters-in-dna", lambda r, i: ds(r).import_rows([seq_row("MKLV")]), AlphabetError, "dna"),
    Case("ingest-empty-sequence", lambda r, i: ds(r).import_rows([seq_row("")]), ValidationError, "(?i)empty"),
    Case("ingest-whitespace-sequence", lambda r, i: ds(r).import_rows([seq_row("   ")]), ValidationError,
         "(?i)empty"),
    Case("ingest-none-sequence", lambda r, i: ds(r).import_rows([seq_row(None)]), ValidationError,
         "(?i)sequence"),
    Case("ingest-nan-sequence", lambda r, i: ds(r).import_rows([seq_row(math.nan)]), ValidationError,
         "(?i)sequence|nan"),
    Case("ingest-pipe-in-bio-type", lambda r, i: ds(r).import_rows([seq_row("ACGT")], default_bio_type="dna|rna"),
         ValidationError, r"(?i)bio_type"),
    Case("ingest-unknown-alphabet", lambda r, i: ds(r).import_rows([seq_row("ACGT")], default_alphabet="dna_9"),
         ValidationError, "dna_9"),
    Case("ingest-duplicate-within-batch", lambda r, i: ds(r).import_rows([seq_row("ACGTTT"), seq_row("ACGTTT")]),
         DuplicateIDError, "(?i)duplicate|already|twice"),
    Case("ingest-existing-sequence", lambda r, i: ds(r).import_rows([seq_row(crash_ops.seqs(0, 1)[0])]),
         DuplicateIDError, "already exist"),
    Case("ingest-bad-on-conflict", lambda r, i: ds(r).add_sequences([seq_row("ACGT")], bio_type="dna",
                                                                     alphabet="dna_4", on_conflict="merge"),
         SchemaError, "on_conflict"),
    Case("ingest-not-initialized", lambda r, i: Dataset(r, "nope").import_rows([seq_row("ACGT")]), SequencesError,
         "not initialized"),
    # ---- compact attach / write_overlay
    Case("attach-duplicate-keys", lambda r, i: ds(r).attach(
        write_input(i, "dup.parquet", pa.table({"id": [ids(r)[0]] * 2, "label": ["a", "b"]})), F,
        allow_overwrite=True), SchemaError, "(?i)duplicate"),
    Case("attach-keys-missing-from-base", lambda r, i: ds(r).attach(
        write_input(i, "miss.parquet", pa.table({"id": ["0" * 40], "label": ["a"]})), F, allow_overwrite=True),
        SchemaError, "not found"),
    Case("attach-column-of-other-namespace", lambda r, i: ds(r).attach(
        write_input(i, "other.parquet", pa.table({"id": ids(r)[:1], "other__x": [1]})), F), NamespaceError,
        "another namespace"),
    Case("attach-unregistered-namespace", lambda r, i: ds(r).attach(
        write_input(i, "unreg.parquet", pa.table({"id": ids(r)[:1], "x": [1]})), "nope"), SchemaError,
        "not registered"),
    Case("attach-unregistered-column", lambda r, i: ds(r).attach(
        write_input(i, "unregcol.parquet", pa.table({"id": ids(r)[:1], "zzz": [1]})), F), SchemaError,
        "not registered"),
    Case("attach-type-mismatch", lambda r, i: ds(r).attach(
        write_input(i, "type.parquet", pa.table({"id": ids(r)[:2], "score": ["high", "low"]})), F,
        allow_overwrite=True), SchemaError, "(?i)score|float|type"),
    Case("attach-nan-key", lambda r, i: ds(r).attach(
        write_input(i, "nan.csv", pa.table({"id": ["nan", ids(r)[0]], "label": ["a", "b"]})), F,
        allow_overwrite=True), SchemaError, "(?i)missing keys"),
    Case("attach-corrupt-parquet-input", lambda r, i: ds(r).attach(i / "corrupt.parquet", F), SequencesError,
         "corrupt.parquet", prep=lambda r, i: garbage(i / "corrupt.parquet")),
    Case("attach-truncated-parquet-input", lambda r, i: ds(r).attach(i / "trunc.parquet", F), SequencesError,
         "trunc.parquet", prep=lambda r, i: (write_input(i, "trunc.parquet", pa.table(
             {"id": ids(r), "label": ["x"] * len(ids(r))})), truncate(i / "trunc.parquet"))),
    Case("attach-missing-input-file", lambda r, i: ds(r).attach(i / "absent.parquet", F),
         (SequencesError, FileNotFoundError),
         "absent.parquet"),
    Case("attach-reserved-namespace", lambda r, i: ds(r).write_overlay(
        "usr", pa.table({"id": ids(r)[:1], "usr__deleted": [True]})), NamespaceError, "reserved"),
    Case("attach-namespace-path-traversal", lambda r, i: ds(r).write_overlay(
        "../evil", pa.table({"id": ids(r)[:1]})), NamespaceError, "(?i)invalid namespace"),
    Case("attach-essential-column", lambda r, i: ds(r).attach(
        write_input(i, "ess.parquet", pa.table({"id": ids(r)[:1], "sequence": ["ACGT"]})), F), SchemaError,
        "essential"),
    Case("attach-existing-columns-without-overwrite", lambda r, i: ds(r).attach(
        write_input(i, "ow.parquet", pa.table({"id": ids(r)[:1], "score": [9.0]})), F), NamespaceError,
        "already exist"),
    Case("write-overlay-type-mismatch", lambda r, i: ds(r).write_overlay(
        F, pa.table({"id": ids(r)[:1], "feat__score": ["x"]}), overwrite=True), SchemaError, "type mismatch"),
    # ---- part writes
    Case("part-duplicate-keys", lambda r, i: ds(r).write_overlay_part(
        F, pa.table({"id": [ids(r)[0]] * 2, "feat__label": ["a", "b"]})), SchemaError, "(?i)duplicate"),
    Case("part-keys-missing-from-base", lambda r, i: ds(r).write_overlay_part(
        F, pa.table({"id": ["f" * 40], "feat__label": ["a"]})), SchemaError, "not found"),
    Case("part-unprefixed-column", lambda r, i: ds(r).write_overlay_part(
        F, pa.table({"id": ids(r)[:1], "label": ["a"]})), NamespaceError, "feat__"),
    Case("part-column-of-other-namespace", lambda r, i: ds(r).write_overlay_part(
        F, pa.table({"id": ids(r)[:1], "other__x": [1]})), NamespaceError, "other__x"),
    Case("part-unregistered-column", lambda r, i: ds(r).write_overlay_part(
        F, pa.table({"id": ids(r)[:1], "feat__zzz": [1]})), SchemaError, "not registered"),
    Case("part-type-mismatch", lambda r, i: ds(r).write_overlay_part(
        F, pa.table({"id": ids(r)[:1], "feat__score": ["high"]})), SchemaError, "type mismatch"),
    Case("part-null-key", lambda r, i: ds(r).write_overlay_part(
        F, pa.table({"id": pa.array([None], pa.string()), "feat__label": ["a"]})), SchemaError, "(?i)missing keys"),
    Case("part-key-mismatch", lambda r, i: ds(r).write_overlay_part(
        F, pa.table({"sequence": crash_ops.seqs(0, 1), "feat__label": ["a"]}), key="sequence"), SchemaError,
        "keyed by"),
    Case("part-unregistered-namespace", lambda r, i: ds(r).write_overlay_part(
        "other2", pa.table({"id": ids(r)[:1], "other2__x": [1]})), SchemaError, "not registered"),
    Case("part-event-args-override", lambda r, i: ds(r).write_overlay_part(
        F, pa.table({"id": ids(r)[:1], "feat__label": ["a"]}), event_args={"namespace": "x"}), SchemaError,
        "reserved keys"),
    Case("part-event-over-1MiB", lambda r, i: ds(r).write_overlay_part(
        F, pa.table({"id": ids(r)[:1], "feat__label": ["a"]}), event_args={"blob": "x" * 1_100_000}), ValueError,
        "limit is 1048576"),
    Case("create-overlay-existing", lambda r, i: ds(r).create_overlay(
        F, pa.table({"id": ids(r)[:1], "feat__label": ["a"]})), FileExistsError, "already exists"),
    # ---- registry
    Case("registry-not-a-mapping", lambda r, i: ds(r).import_rows([seq_row("ACGTAA")]), SchemaError, "mapping",
         prep=lambda r, i: (r / "registry.yaml").write_text("- feat\n- other\n")),
    Case("registry-invalid-yaml", lambda r, i: ds(r).tombstone(ids(r)[:1]), SchemaError, "registry",
         prep=lambda r, i: (r / "registry.yaml").write_text("feat: [unclosed\n")),
    Case("registry-python-tag", lambda r, i: ds(r).tombstone(ids(r)[:1]), SchemaError, "registry",
         prep=lambda r, i: (r / "registry.yaml").write_text(
             "feat: !!python/object/apply:os.system ['touch /tmp/usr-pwned']\n")),
    Case("registry-bad-type", lambda r, i: register_namespace(r, "neu", "neu__x:notatype"), SchemaError,
         "notatype"),
    Case("registry-namespace-traversal", lambda r, i: register_namespace(r, "../x", "x:int64"), NamespaceError,
         "(?i)invalid namespace"),
    Case("registry-existing-without-overwrite", lambda r, i: register_namespace(r, F, "feat__y:int64"),
         SchemaError, "already registered"),
    Case("registry-column-outside-namespace", lambda r, i: register_namespace(r, "neu", "other__x:int64"),
         (SchemaError, NamespaceError), "other__x"),
    # ---- tombstones and state
    Case("tombstone-unknown-id", lambda r, i: ds(r).tombstone(["0" * 40]), SchemaError, "not found"),
    Case("tombstone-no-ids", lambda r, i: ds(r).tombstone(["", "  "]), SchemaError, "No ids"),
    Case("tombstone-repeated-ids", lambda r, i: ds(r).tombstone([ids(r)[0]] * 2), SchemaError, "Repeated"),
    Case("restore-unknown-id", lambda r, i: ds(r).restore(["0" * 40]), SchemaError, "not found"),
    Case("state-bad-qc-status", lambda r, i: ds(r).set_state(ids(r)[:1], qc_status="great"), SchemaError,
         "not allowed"),
    Case("state-masked-not-bool", lambda r, i: ds(r).set_state(ids(r)[:1], masked="yes"), SchemaError, "bool"),
    Case("state-no-fields", lambda r, i: ds(r).set_state(ids(r)[:1]), SchemaError, "at least one field"),
    Case("state-bad-split", lambda r, i: ds(r).set_state(ids(r)[:1], split="dev"), SchemaError, "not allowed"),
    # ---- maintenance
    Case("maint-compact-without-gate", lambda r, i: ds(r).compact_overlay(F), SchemaError, "maintenance-only"),
    Case("maint-materialize-without-gate", lambda r, i: ds(r).materialize(), SchemaError, "maintenance-only"),
    Case("maint-compact-no-parts", lambda r, i: maint(r, lambda d: d.compact_overlay(F)), SchemaError,
         "parts not found"),
    Case("maint-garden-retain-zero", lambda r, i: maint(r, lambda d: d.garden_event_log(retain_last=0, write=True,
                                                                                      acknowledge_cursor_reset=True)),
         ValueError, "retain_last"),
    Case("maint-merge-into-itself", lambda r, i: __import__("usr_core").merge(r, crash_ops.DS, crash_ops.DS),
         SchemaError, "itself"),
    Case("maint-remove-bad-mode", lambda r, i: maint(r, lambda d: d.remove_overlay(F, mode="shred")),
         (SchemaError, ValueError), "shred"),
    Case("maint-dedupe-bad-key", lambda r, i: maint(r, lambda d: d.dedupe("colour")), (SchemaError, ValueError),
         "colour"),
    # ---- dataset ids, files on disk
    Case("dataset-id-traversal", lambda r, i: Dataset(r, "../evil").init(), SequencesError, r"invalid segment"),
    Case("dataset-id-absolute", lambda r, i: Dataset(r, "/etc/evil").init(), SequencesError, "absolute"),
    Case("dataset-id-archived", lambda r, i: Dataset(r, "archived/x").init(), SequencesError, "archived"),
    Case("symlinked-lock-file", lambda r, i: ds(r).tombstone(ids(r)[:1]), SequencesError, "symbolic link",
         prep=lambda r, i: symlink_out(ds(r).paths.lock, i)),
    Case("symlinked-event-log", lambda r, i: ds(r).tombstone(ids(r)[:1]), SequencesError, "(?i)event log",
         prep=lambda r, i: symlink_out(ds(r).events_path, i)),
    Case("symlinked-event-log-read-only-op", lambda r, i: ds(r).log_event("note"), SequencesError,
         "(?i)event log", prep=lambda r, i: symlink_out(ds(r).events_path, i)),
    Case("part-missing-keys-with-pending-freeze", lambda r, i: ds(r).write_overlay_part(
        F, pa.table({"id": ["f" * 40], "feat__label": ["a"]})), SchemaError, "not found",
        prep=lambda r, i: register_namespace(r, "pending", "pending__x:int64")),
    Case("zero-byte-records", lambda r, i: ds(r).read_table(), SchemaError, "records.parquet",
         prep=lambda r, i: ds(r).records_path.write_bytes(b"")),
    Case("zero-byte-records-import", lambda r, i: ds(r).import_rows([seq_row("ACGTAA")]), SequencesError,
         "records.parquet", prep=lambda r, i: ds(r).records_path.write_bytes(b"")),
    Case("truncated-records", lambda r, i: ds(r).read_table(), SchemaError, "records.parquet",
         prep=lambda r, i: truncate(ds(r).records_path)),
    Case("corrupt-overlay-file", lambda r, i: ds(r).read_table(), SchemaError, "feat.parquet",
         prep=lambda r, i: garbage(ds(r).paths.compact_overlay(F))),
    Case("corrupt-overlay-part-write", lambda r, i: ds(r).write_overlay_part(
        F, pa.table({"id": ids(r)[:1], "feat__label": ["a"]})), SchemaError, "feat.parquet",
        prep=lambda r, i: garbage(ds(r).paths.compact_overlay(F))),
    # ---- CLI
    Case("cli-init-traversal", lambda r, i: cli(r, "init", "../evil"), subprocess.CalledProcessError,
         "invalid segment|not found"),
    Case("cli-import-wrong-alphabet", lambda r, i: cli(r, "import", crash_ops.DS, "--from", "csv", "--path",
                                                      i / "bad.csv"), subprocess.CalledProcessError, "dna_4",
         prep=lambda r, i: (i / "bad.csv").write_text("sequence\nACGTZ\n")),
    Case("cli-attach-unregistered", lambda r, i: cli(r, "attach", crash_ops.DS, "--path", write_input(
        i, "cli.parquet", pa.table({"id": ids(r)[:1], "x": [1]})), "--namespace", "nope"),
        subprocess.CalledProcessError, "not registered"),
    Case("cli-delete-unknown-id", lambda r, i: cli(r, "delete", crash_ops.DS, "--id", "0" * 40),
         subprocess.CalledProcessError, "not found"),
    Case("cli-register-bad-type", lambda r, i: cli(r, "namespace", "register", "neu", "--columns", "neu__x:wat"),
         subprocess.CalledProcessError, "wat"),
]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad-template") / "root"
    root.mkdir()
    crash_ops.base_setup(root)
    register_namespace(root, "other", "other__x:int64")
    ds(root).set_state(ids(root)[6:7], qc_status="warn")  # settles the auto-freeze for the new registry
    return root


def test_catalogue_size():
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


def _params():
    return [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(reason=f"usr_core bug: {c.bug}", strict=True)]
                         if c.bug else []) for c in CASES]


@pytest.mark.parametrize("case", _params())
def test_bad_input_changes_nothing(case: Case, template, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(template, root, symlinks=True)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    if case.prep:
        case.prep(root, inputs)
    before = tree_digest(root)
    outside_before = {p: p.read_bytes() for p in inputs.iterdir()}
    with pytest.raises(case.exc) as info:
        case.act(root, inputs)
    exc = info.value
    message = exc.stderr if isinstance(exc, subprocess.CalledProcessError) else str(exc)
    import re

    assert re.search(case.match, message), f"unhelpful message for {case.id}: {message!r}"
    if isinstance(exc, subprocess.CalledProcessError):
        assert "Traceback" not in exc.stderr, exc.stderr
    elif isinstance(exc, SequencesError):
        assert exc.hint, f"{case.id}: {type(exc).__name__} without a hint: {message!r}"
    assert tree_digest(root) == before, f"{case.id} changed the root"
    assert {p: p.read_bytes() for p in outside_before} == outside_before, f"{case.id} wrote outside the root"
    assert not (tmp_path.parent / "evil").exists() and not (root.parent / "evil").exists()
