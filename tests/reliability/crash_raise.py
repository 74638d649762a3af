"""Fault-injection harness (issue 13 item 4): RAISE at every step of every mutating operation.

Where crash_harness.py kills the process at each crash point (every file old or new), this harness makes
the step raise (USR_CRASH_MODE=raise turns `crash_point` into an InjectedFault, an OSError) and checks the
transaction's promise for each (operation, step):

  * the operation fails and the root is byte-identical to before (tree digest, lock files aside), or
  * the operation succeeds and its event is in the log (a step after the commit only cleans up).

It runs in one process (a raise does not kill it): per operation, build the setup state once (template),
run it once with USR_CRASH_TRACE to list its steps, then for each step copy the template and run again.

    python tests/reliability/crash_raise.py [--ops a,b]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

try:
    from . import crash_harness, crash_ops
except ImportError:  # run as a script or imported by pytest without a package
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import crash_harness
    import crash_ops

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from testkit import tree_digest  # noqa: E402

# the operations that run as one transaction, with the event each must commit
EXPECTED_EVENT = {
    "init": "init", "import": "import_rows", "compact-attach": "attach", "compact-attach-restamp": "attach",
    "part-promote": "write_overlay_part", "part-restamp": "write_overlay_part", "tombstone-restamp": "tombstone",
    "part-append": "write_overlay_part", "create-overlay": "write_overlay_part", "tombstone": "tombstone",
    "restore": "restore", "state-set": "state_set", "overlay-compact": "compact_overlay",
    "materialize": "materialize", "materialize-archive": "materialize", "registry-freeze": "registry_freeze",
    "overlay-remove-archive": "archive_overlay", "refresh-metadata": "refresh_overlay_metadata",
    "dedupe": "dedupe", "merge": "merge_datasets",
}


@dataclass
class OpResult:
    op: str
    points: int = 0
    failed_clean: int = 0  # raised, root byte-identical
    succeeded: int = 0  # passed a post-commit step, event present
    problems: list[str] = field(default_factory=list)


def _actions(root: Path) -> dict[str, list[str]]:
    """The actions of each dataset's event log."""
    out = {}
    for log in sorted(root.glob("**/.events.log")):
        out[log.parent.name] = [json.loads(line).get("action") for line in log.read_bytes().splitlines()
                                if line.strip()]
    return out


def _new_actions(before: dict[str, list[str]], after: dict[str, list[str]]) -> list[str]:
    return [a for name, acts in after.items() for a in acts[len(before.get(name, [])):]]


def _run(op: str, root: Path, env: dict[str, str]) -> BaseException | None:
    from usr_core.storage import atomic

    atomic._CRASH_HITS.clear()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        crash_ops.OPS[op].run(root)
        return None
    except Exception as exc:  # the injected fault, or what the code turned it into
        return exc
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def run_op(op: str, work: Path) -> OpResult:
    res = OpResult(op)
    template = work / op / "template"
    template.mkdir(parents=True)
    crash_ops.OPS[op].setup(template)
    trace = work / op / "trace.txt"
    err = _run(op, _copy(template, work / op / "traced"), {"USR_CRASH_TRACE": str(trace)})
    if err is not None:
        res.problems.append(f"clean run failed: {type(err).__name__}: {err}")
        return res
    points = crash_harness.kill_points(trace)  # a step reached k times is `<step>#k`
    res.points = len(points)
    for i, point in enumerate(points):
        root = _copy(template, work / op / f"p{i:03d}")
        before, actions_before = tree_digest(root), _actions(root)
        err = _run(op, root, {"USR_CRASH_AT": point, "USR_CRASH_MODE": "raise"})
        if err is None:
            new = _new_actions(actions_before, _actions(root))
            if EXPECTED_EVENT[op] not in new:
                res.problems.append(f"{point}: succeeded without its {EXPECTED_EVENT[op]!r} event (new: {new})")
            res.succeeded += 1
        elif tree_digest(root) != before:
            res.problems.append(f"{point}: failed ({type(err).__name__}: {err}) and changed the root: "
                                f"{_diff(template, root)}")
        else:
            res.failed_clean += 1
        shutil.rmtree(root, ignore_errors=True)
    return res


def _diff(a: Path, b: Path) -> list[str]:
    def listing(r: Path) -> dict[str, int]:
        return {p.relative_to(r).as_posix(): (p.stat().st_size if p.is_file() else -1)
                for p in r.rglob("*") if not p.name.endswith(".lock")}
    la, lb = listing(a), listing(b)
    return sorted(k for k in set(la) | set(lb) if la.get(k) != lb.get(k))[:8]


def run_all(ops: list[str], work: Path) -> list[OpResult]:
    return [run_op(op, work) for op in ops]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", default=",".join(EXPECTED_EVENT))
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="usr-raise-"))
    try:
        results = run_all(args.ops.split(","), work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    bad = 0
    for r in results:
        print(f"{r.op}: {r.points} steps, {r.failed_clean} failed cleanly, {r.succeeded} succeeded with the event")
        for p in r.problems:
            print("   ", p)
        bad += len(r.problems)
    print(f"steps: {sum(r.points for r in results)}, problems: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
