"""PostgreSQL for the dagster-postgres test: $USR_TEST_PG_DSN, else a throwaway server from the local binaries."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

DSN_ENV = "USR_TEST_PG_DSN"


class Unavailable(RuntimeError):
    pass


def pg_bin() -> Path:
    candidates = [os.environ.get("USR_PG_BIN")] + sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    which = shutil.which("initdb")
    if which:
        candidates.append(str(Path(os.path.realpath(which)).parent))
    for c in candidates:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "pg_ctl").is_file():
            return Path(c)
    raise Unavailable("no initdb/pg_ctl found (apt-get install postgresql, or set USR_PG_BIN or "
                      f"{DSN_ENV}=postgresql://user:pass@127.0.0.1:5432/db)")


@contextmanager
def throwaway_server(port: int):
    """initdb + pg_ctl start on 127.0.0.1:port (as user postgres when we are root); stopped and removed after."""
    bindir = pg_bin()
    prefix, owner = [], None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError as exc:
            raise Unavailable("running as root and there is no 'postgres' user to run the server") from exc
        prefix = ["runuser", "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="usr-pg-"))
    data, log = base / "data", base / "server.log"
    if owner:
        os.chown(base, owner.pw_uid, owner.pw_gid)

    def run(*cmd, timeout=120):
        proc = subprocess.run([*prefix, *map(str, cmd)], capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            detail = log.read_text()[-2000:] if log.exists() else ""
            raise Unavailable(f"{Path(str(cmd[0])).name} failed: {proc.stderr.strip()[-2000:]} {detail}")

    started = False
    try:
        run(bindir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8")
        run(bindir / "pg_ctl", "-D", data, "-l", log, "-w", "-t", "60", "-o",
            f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "start")
        started = True
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        if started:
            subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                           capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


@contextmanager
def fresh_database(dsn: str):
    """A new database on the server of `dsn`, dropped afterwards."""
    import psycopg2

    name = f"usr_dagster_{uuid.uuid4().hex[:12]}"
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield with_database(dsn, name)
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()
