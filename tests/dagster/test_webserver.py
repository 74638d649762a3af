"""The real webserver + daemon: `dagster dev -w workspace.yaml` on a free loopback port; GraphQL asset graph; a
materialization launched over GraphQL lands as a part on disk; a CLI tombstone marks it stale without recomputing
it; a CLI attach shows up through a daemon sensor tick; one single asset check launched over GraphQL succeeds
[G1] [G2] [G3]."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from dagster_helpers import REPO, cli_attach_motif, free_port, make_root, usr_cli
from usr_core import Dataset
from usr_dagster.demo.__main__ import write_home

pytestmark = pytest.mark.slow

LOCATION = "usr"
Q_LOCATION = """{ workspaceOrError { __typename ... on Workspace { locationEntries { name
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
Q_GRAPH = """{ assetNodes { assetKey { path } isMaterializable isObservable kinds
  dependencyKeys { path } owners { __typename ... on TeamAssetOwner { team } ... on UserAssetOwner { email } } } }"""
M_LAUNCH = """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } ... on InvalidSubsetError { message }
  ... on RunConfigValidationInvalid { errors { message } } } }"""
Q_RUN = """query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"""
Q_OBS = """query($k: AssetKeyInput!) { assetOrError(assetKey: $k) { ... on Asset {
  assetObservations(limit: 1) { timestamp } } } }"""
Q_STALE = """query($k: [AssetKeyInput!]) { assetNodes(assetKeys: $k) { staleStatus } }"""
Q_CHECK = """query($k: AssetKeyInput!, $n: String!) { assetCheckExecutions(assetKey: $k, checkName: $n, limit: 1) {
  runId status evaluation { success } } }"""
Q_MATS = """query($k: AssetKeyInput!) { assetOrError(assetKey: $k) { __typename ... on Asset {
  assetMaterializations(limit: 5) { runId timestamp tags { key value } } } } }"""


def _gql(port, query, variables=None, timeout=30):
    r = requests.post(f"http://127.0.0.1:{port}/graphql", json={"query": query, "variables": variables or {}},
                      timeout=timeout)
    r.raise_for_status()
    body = r.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def _wait(pred, timeout, what, interval=1.0):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = pred()
            if last:
                return last
        except requests.RequestException as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@pytest.fixture
def dagster_dev(tmp_path):
    root = make_root(tmp_path / "root", {"grp/alpha": 40, "beta": 30})
    home = tmp_path / "dagster_home"
    write_home(home)
    port = free_port()
    env = {**os.environ, "USR_ROOT": str(root), "DAGSTER_HOME": str(home), "USR_DAGSTER_AUTOMATION": "0"}
    log = open(tmp_path / "dagster_dev.log", "w")

    def restore_signals():  # pytest or CI may have SIGINT/SIGTERM ignored; dagster dev must get the defaults
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    proc = subprocess.Popen([str(Path(sys.executable).parent / "dagster"), "dev", "-w", str(REPO / "workspace.yaml"),
                             "-h", "127.0.0.1", "-p", str(port)], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, preexec_fn=restore_signals, start_new_session=True)
    try:
        yield root, port, proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the session we started for this dagster dev only
            proc.wait(timeout=30)
        log.close()


def test_G3_webserver_graphql_materialize_and_daemon_sensor(dagster_dev, tmp_path):
    root, port, proc = dagster_dev

    def loaded():
        if proc.poll() is not None:
            raise AssertionError(f"dagster dev exited with {proc.returncode}; see {tmp_path / 'dagster_dev.log'}")
        entries = _gql(port, Q_LOCATION)["workspaceOrError"]["locationEntries"]
        status = {e["name"]: e["locationOrLoadError"] for e in entries}
        loc = status.get(LOCATION)
        if loc and loc["__typename"] == "PythonError":
            raise AssertionError(loc["message"])
        return loc and loc["__typename"] == "RepositoryLocation"

    _wait(loaded, 240, "the code location to load", interval=2)

    nodes = {"/".join(n["assetKey"]["path"]): n for n in _gql(port, Q_GRAPH)["assetNodes"]}
    assert nodes["beta/records"]["isObservable"] and nodes["grp/alpha/records"]["isObservable"]
    for ns in ("gc", "kmer3", "tm", "orf"):
        node = nodes[f"beta/{ns}"]
        assert node["isMaterializable"] and {"usr", "parquet"} <= set(node["kinds"])
        assert {"team": "usr-demo", "__typename": "TeamAssetOwner"} in node["owners"]
    assert {"/".join(d["path"]) for d in nodes["beta/tm"]["dependencyKeys"]} == {"beta/records", "beta/gc"}

    # the event sensor's first tick observes the records (data version) before we materialize from them
    _wait(lambda: _gql(port, Q_OBS, {"k": {"path": ["beta", "records"]}})["assetOrError"].get("assetObservations"),
          120, "the first sensor tick to observe beta/records", interval=3)
    params = {"selector": {"repositoryLocationName": LOCATION, "repositoryName": "__repository__",
                           "pipelineName": "__ASSET_JOB", "assetSelection": [{"path": ["beta", "gc"]}]},
              "mode": "default", "runConfigData": {}}
    launched = _gql(port, M_LAUNCH, {"p": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    def finished():
        status = _gql(port, Q_RUN, {"id": run_id})["runOrError"]["status"]  # run_id: the run launched last
        assert status not in ("FAILURE", "CANCELED"), f"run {run_id} ended {status}"
        return status == "SUCCESS"

    _wait(finished, 300, f"run {run_id} to succeed", interval=2)
    parts = list((root / "beta" / "_derived" / "gc").glob("part-*.parquet"))
    assert len(parts) == 1

    # a tombstone from the CLI changes the records' data version: gc turns stale, nothing is recomputed
    def gc_status():
        return _gql(port, Q_STALE, {"k": [{"path": ["beta", "gc"]}]})["assetNodes"][0]["staleStatus"]

    assert gc_status() == "FRESH"
    victim = Dataset(root, "beta").head(1, include_derived=False).column("id")[0].as_py()
    usr_cli(root, "delete", "beta", "--id", victim, "--reason", "webserver test")
    _wait(lambda: gc_status() == "STALE", 180, "beta/gc to turn stale after the CLI tombstone", interval=3)
    assert len(list((root / "beta" / "_derived" / "gc").glob("part-*.parquet"))) == 1

    # a write from outside Dagster, picked up by the daemon's sensor tick (the sensor starts RUNNING)
    cli_attach_motif(root, "beta", tmp_path)

    def runless():
        data = _gql(port, Q_MATS, {"k": {"path": ["beta", "motif"]}})["assetOrError"]
        mats = data.get("assetMaterializations") or [] if data["__typename"] == "Asset" else []
        return [m for m in mats if not m["runId"]]

    mats = _wait(runless, 180, "the sensor's runless materialization of beta/motif", interval=3)
    tags = {t["key"]: t["value"] for t in mats[0]["tags"]}
    assert tags["dagster/data_version"].startswith("usrc1:")

    # one single asset check, launched on its own (the check of the records asset alone would also do)
    check = {"assetKey": {"path": ["beta", "gc"]}, "name": "key_uniqueness"}
    params = {"selector": {"repositoryLocationName": LOCATION, "repositoryName": "__repository__",
                           "pipelineName": "__ASSET_JOB", "assetSelection": [], "assetCheckSelection": [check]},
              "mode": "default", "runConfigData": {}}
    launched = _gql(port, M_LAUNCH, {"p": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    _wait(finished, 300, f"check run {run_id} to succeed", interval=2)
    execs = _gql(port, Q_CHECK, {"k": {"path": ["beta", "gc"]}, "n": "key_uniqueness"})["assetCheckExecutions"]
    assert execs and execs[0]["runId"] == run_id and execs[0]["status"] == "SUCCEEDED", execs
    assert execs[0]["evaluation"]["success"]

