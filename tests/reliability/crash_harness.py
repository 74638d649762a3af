"""Crash-injection harness (issue 6 §1): SIGKILL every mutating operation at every file-system step.

    python -m tests.reliability.crash_harness [--ops a,b] [--jobs 2] [--keep DIR]
    python tests/reliability/crash_harness.py ...

For each operation: build its setup state once (template), run it once cleanly in a child with
USR_CRASH_TRACE to enumerate its kill points (a point reached k times is named `<point>#k`) and to learn
the new state; then for every point copy the template, run the operation in a child with
USR_CRASH_AT=<point>, require death by SIGKILL, and check:
  * every dataset opens and reads without error (read_table, head, info, list_overlays, manifest);
  * every row (per id, all merged columns) equals its old or its new state; the registry is old or new;
  * nothing acknowledged before is lost: rows present before and after the operation are present, and
    every event logged before survives (in the log or its archive), every log line parses;
  * the rerun (the operation, or its idempotent form) succeeds and yields exactly the new state.
Prints `kill points: N, operations: M, rows lost: 0`.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import pickle
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

try:
    from . import crash_ops
except ImportError:  # run as a script or imported by pytest without a package
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import crash_ops

HERE = Path(__file__).resolve()
VOLATILE = {"created_at"}  # ingest stamps "now"; a rerun after a kill legitimately differs there


def _norm(v):
    if isinstance(v, (dt.datetime, dt.date)):
        return v.isoformat()
    if isinstance(v, list):
        return tuple(_norm(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _norm(x)) for k, x in v.items()))
    if isinstance(v, float) and v != v:
        return "NaN"
    return v


def capture(root: Path) -> dict:
    """Open and read everything; raises on any read error.  Returns a comparable state."""
    from usr_core import Dataset, load_registry
    from usr_core.layout import discover_datasets

    state = {"registry": load_registry(root, required=False), "datasets": {}, "events": {}}
    for name in sorted(set(discover_datasets(root)) | {crash_ops.DS, crash_ops.SRC}):
        ds = Dataset(root, name)
        events = _events(ds)
        state["events"][name] = events
        if not ds.exists():
            continue
        table = ds.read_table(include_deleted=True)
        ds.head(3)
        ds.info()
        ds.list_overlays()
        ds.manifest()
        state.setdefault("validate", {})[name] = _validate(ds, root)
        rows = {}
        for row in table.to_pylist():
            rows[row["id"]] = tuple(sorted((k, _norm(v)) for k, v in row.items() if k not in VOLATILE))
        if len(rows) != table.num_rows:
            raise AssertionError(f"{name}: duplicate ids in the merged read ({table.num_rows} rows, {len(rows)} ids)")
        state["datasets"][name] = rows
    return state


def _validate(ds, root: Path) -> str | None:
    """The outcome of `validate()` (None = passes); an intermediate state must match old or new."""
    if not hasattr(ds, "validate"):
        return None
    from usr_core import SequencesError

    try:
        ds.validate()
    except SequencesError as exc:
        return f"{type(exc).__name__}: {str(exc).replace(str(root), '<root>')}"
    return None


def _events(ds) -> list:
    """(timestamp, action) of every event in the log and its archive; every line must parse."""
    out = []
    paths = [ds.events_path]
    archive = Path(ds.paths.events_archive)
    if archive.is_dir():
        paths += sorted(archive.glob("*.jsonl"))
    for p in paths:
        if not p.is_file():
            continue
        opener = __import__("gzip").open if p.suffix == ".gz" else open
        with opener(p, "rb") as fh:
            for i, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        e = json.loads(line)
                    except ValueError as exc:
                        raise AssertionError(f"{p} line {i} does not parse: {exc}") from None
                    out.append((e.get("timestamp_utc"), e.get("action")))
    return out


def compare(old: dict, new: dict, got: dict, *, final: bool = False) -> tuple[list[str], int]:
    """Problems (empty = fine) and the number of rows lost."""
    problems, lost = [], 0
    if final:
        if got["registry"] != new["registry"]:
            problems.append("registry after rerun differs from the clean run's")
    elif got["registry"] not in (old["registry"], new["registry"]):
        problems.append("registry is neither the old nor the new one")
    for name in sorted(set(old["datasets"]) | set(new["datasets"]) | set(got["datasets"])):
        ov, nv, gv = (s.get("validate", {}).get(name) for s in (old, new, got))
        if (final and gv != nv) or (not final and gv not in (ov, nv)):
            problems.append(f"{name}: validate() gives {gv!r}; old state: {ov!r}, new state: {nv!r}")
        o, n, g = (s["datasets"].get(name, {}) for s in (old, new, got))
        for rid in sorted(set(o) | set(n) | set(g)):
            ov, nv, gv = o.get(rid), n.get(rid), g.get(rid)
            if gv is None and ov is not None and nv is not None:
                lost += 1
            if final and gv != nv:
                problems.append(f"{name} row {rid[:12]} after rerun differs from the clean run: {gv} vs {nv}")
            elif not final and gv != ov and gv != nv:
                problems.append(f"{name} row {rid[:12]} is neither old nor new: {gv}\n old={ov}\n new={nv}")
        kept = set(got["events"].get(name, []))
        gone = [e for e in old["events"].get(name, []) if e not in kept]
        if gone:
            problems.append(f"{name}: {len(gone)} event(s) logged before the operation are gone: {gone[:2]}")
    return problems[:5], lost


@dataclass
class PointResult:
    op: str
    point: str
    problems: list[str] = field(default_factory=list)
    rows_lost: int = 0


# ---------------------------------------------------------------- work done in forked children

def do_setup(op: str, root: str, out: str) -> None:
    Path(root).mkdir(parents=True, exist_ok=True)
    crash_ops.OPS[op].setup(Path(root))
    _dump(capture(Path(root)), out)


def do_run(op: str, root: str) -> None:
    crash_ops.OPS[op].run(Path(root))


def do_capture(root: str, out: str) -> None:
    _dump(capture(Path(root)), out)


def do_verify(op: str, root: str, old: str, new: str, out: str) -> None:
    """After a kill: read, compare with old/new, rerun, compare with the clean run's state."""
    old_s, new_s = _load(old), _load(new)
    res = {"problems": [], "rows_lost": 0}
    try:
        got = capture(Path(root))
    except Exception as exc:  # the dataset must open and read after any kill
        res["problems"].append(f"unreadable after kill: {type(exc).__name__}: {exc}")
        _dump(res, out)
        return
    res["problems"], res["rows_lost"] = compare(old_s, new_s, got)
    try:
        o = crash_ops.OPS[op]
        (o.rerun or o.run)(Path(root))
        final = capture(Path(root))
        more, lost = compare(old_s, new_s, final, final=True)
        res["problems"] += more
        res["rows_lost"] += lost
    except Exception as exc:
        res["problems"].append(f"rerun failed: {type(exc).__name__}: {exc}")
    _dump(res, out)


def _dump(obj, path) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)


def _load(path):
    with open(path, "rb") as fh:
        return pickle.load(fh)


CALLS = {"setup": do_setup, "run": do_run, "capture": do_capture, "verify": do_verify}


class ForkServer:
    """A pre-imported helper process that forks one child per call (saves ~1 s of imports each).

    Single-threaded, so forking it is safe; the child gets the requested environment, runs the call
    and exits 0 (or 1 with a traceback in its log); the server reports the wait status."""

    def __init__(self):
        env = {k: v for k, v in os.environ.items() if k not in ("USR_CRASH_AT", "USR_CRASH_TRACE", "USR_ROOT")}
        self.proc = subprocess.Popen([sys.executable, str(HERE), "--serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)

    def call(self, func: str, args: list, env: dict, log: Path) -> tuple[int, str]:
        self.proc.stdin.write(json.dumps({"func": func, "args": args, "env": env, "log": str(log)}) + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        if not reply:
            raise RuntimeError("fork server died")
        return json.loads(reply)["rc"], (log.read_text() if log.exists() else "")

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def serve() -> None:
    import importlib

    for mod in ("usr_core", "usr_core.dataset", "usr_core.maintenance.compact", "usr_core.maintenance.materialize",
                "usr_core.txn", "usr_core.maintenance.dedupe", "usr_core.maintenance.merge",
                "usr_core.maintenance.garden", "usr_core.validate"):
        try:
            importlib.import_module(mod)
        except ImportError:
            pass
    for line in sys.stdin:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.environ.update(req["env"])
                fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                CALLS[req["func"]](*req["args"])
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        sys.stdout.write(json.dumps({"rc": rc}) + "\n")
        sys.stdout.flush()


class Pool:
    """`jobs` fork servers fed by a thread pool."""

    def __init__(self, jobs: int):
        self.servers: queue.Queue = queue.Queue()
        self.started = [ForkServer() for _ in range(max(1, jobs))]
        for srv in self.started:
            self.servers.put(srv)
        self.threads = ThreadPoolExecutor(max_workers=max(1, jobs))

    def call(self, func: str, *args, env: dict | None = None, log: Path) -> tuple[int, str]:
        srv = self.servers.get()
        try:
            return srv.call(func, [str(a) for a in args], env or {}, log)
        finally:
            self.servers.put(srv)

    def map(self, fn, items):
        return list(self.threads.map(fn, items))

    def close(self):
        self.threads.shutdown()
        for srv in self.started:
            srv.close()


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def kill_points(trace: Path) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in trace.read_text().splitlines() if trace.exists() else []:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


def _point(pool: Pool, work: Path, op: str, i: int, point: str) -> PointResult:
    res = PointResult(op, point)
    d = work / op / f"p{i:03d}"
    root = _copy(work / op / "template", d / "root")
    rc, log = pool.call("run", op, root, env={"USR_CRASH_AT": point}, log=d / "run.log")
    if rc != -signal.SIGKILL:
        res.problems.append(f"child did not die by SIGKILL (rc={rc}): {log[-600:]}")
        return res
    out = d / "verify.pkl"
    rc, log = pool.call("verify", op, root, work / op / "old.pkl", work / op / "new.pkl", out, log=d / "verify.log")
    if rc != 0:
        res.problems.append(f"verify crashed (rc={rc}): {log[-1500:]}")
        return res
    v = _load(out)
    res.problems, res.rows_lost = v["problems"], v["rows_lost"]
    return res


def run_all(names: list[str], work: Path, jobs: int = 2) -> "Summary":
    """Set up every operation, enumerate its kill points with a traced clean run, then kill at each."""
    summary = Summary()
    ops = [crash_ops.OPS[n] for n in names]
    live = []
    for op in ops:
        why = op.missing()
        if why:
            summary.add(op.name, [], why)
        else:
            live.append(op)
    pool = Pool(jobs)
    try:
        setups: dict = {}
        for op in live:
            setups.setdefault(op.setup, op.name)

        def do_template(item):
            fn, first = item
            d = work / "_setup" / first
            d.mkdir(parents=True)
            rc, log = pool.call("setup", first, d / "root", d / "old.pkl", log=d / "setup.log")
            return fn, (d if rc == 0 else log)

        templates = dict(pool.map(do_template, list(setups.items())))

        def prepare(op):
            t = templates[op.setup]
            if isinstance(t, str):
                return op.name, [PointResult(op.name, "(setup)", [f"setup failed: {t[-1500:]}"])]
            d = work / op.name
            d.mkdir(parents=True)
            _copy(t / "root", d / "template")
            shutil.copyfile(t / "old.pkl", d / "old.pkl")
            clean = _copy(t / "root", d / "clean")
            rc, log = pool.call("run", op.name, clean, env={"USR_CRASH_TRACE": str(d / "trace.txt")},
                                log=d / "clean.log")
            if rc != 0:
                return op.name, [PointResult(op.name, "(clean run)", [f"clean run failed rc={rc}: {log[-1500:]}"])]
            rc, log = pool.call("capture", clean, d / "new.pkl", log=d / "capture.log")
            if rc != 0:
                return op.name, [PointResult(op.name, "(clean run)", [f"clean state unreadable: {log[-1500:]}"])]
            points = kill_points(d / "trace.txt")
            return op.name, points or [PointResult(op.name, "(trace)", ["no kill points reached"])]

        prepared = pool.map(prepare, live)
        tasks = [(name, i, p) for name, pts in prepared for i, p in enumerate(pts) if isinstance(p, str)]
        results = pool.map(lambda t: _point(pool, work, *t), tasks)
        by_op: dict[str, list] = {op.name: [] for op in live}
        for name, pts in prepared:
            by_op[name] += [p for p in pts if isinstance(p, PointResult)]
        for r in results:
            by_op[r.op].append(r)
        for name, res in by_op.items():
            summary.add(name, res, None)
    finally:
        pool.close()
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", nargs=2, metavar=("OP", "ROOT"), help=argparse.SUPPRESS)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--ops", default="", help="comma-separated operation names (default: all)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--keep", default=None, help="work directory to keep (default: a temp dir, removed)")
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    if args.serve:
        serve()
        return 0
    names = [n for n in args.ops.split(",") if n] or list(crash_ops.OPS)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="usr-crash-", dir=scratch_dir()))
    try:
        summary = run_all(names, work, args.jobs)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    summary.report(print)
    print(summary.line())
    return 1 if summary.failed or summary.lost else 0


def scratch_dir() -> str | None:
    """tmpfs when available: fsync there is free and SIGKILL does not drop the page cache anyway."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


@dataclass
class Summary:
    total: int = 0
    covered: int = 0
    lost: int = 0
    failed: int = 0
    skipped: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)

    per_op: dict = field(default_factory=dict)

    def add(self, name, results, skip):
        if skip:
            self.skipped[name] = skip
            return
        self.covered += 1
        self.total += len(results)
        bad = [r for r in results if r.problems]
        self.failed += len(bad)
        self.failures += bad
        self.lost += sum(r.rows_lost for r in results)
        self.per_op[name] = (len(results), len(bad))

    def report(self, echo) -> None:
        for name, why in self.skipped.items():
            echo(f"{name}: SKIPPED ({why})")
        for name, (n, bad) in self.per_op.items():
            echo(f"{name}: {n} kill points, {bad} failed")
        for r in self.failures:
            echo(f"  FAIL {r.op} @ {r.point}: " + "\n    ".join(r.problems))

    def line(self) -> str:
        return f"kill points: {self.total}, operations: {self.covered}, rows lost: {self.lost}"


if __name__ == "__main__":
    sys.exit(main())
