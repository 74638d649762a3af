"""The demo code location that workspace.yaml loads.

Root: $USR_ROOT, else ./demo_root (seeded on first load when missing). The event sensor, the automation sensor and
the compaction schedule start RUNNING; derived namespaces are materialized automatically while missing (USR_DAGSTER_AUTOMATION=0 turns that off)."""
from __future__ import annotations

import os
from pathlib import Path

from dagster import AutomationCondition, definitions

from .build import build_usr_definitions
from .demo.namespaces import DEMO_NAMESPACES
from .demo.sliced import SLICED_NAMESPACES
from .demo.seed import ensure_demo

DEFAULT_ROOT = "demo_root"


def demo_root() -> Path:
    env = os.environ.get("USR_ROOT")
    return Path(env) if env else Path.cwd() / DEFAULT_ROOT


def fill_missing() -> AutomationCondition:
    """Materialize a namespace while it has never been materialized and its parents exist. (`on_missing()` only
    reacts to assets that *become* missing after the condition is applied, so a fresh demo would stay empty.)"""
    A = AutomationCondition
    return (A.missing() & ~A.any_deps_missing() & ~A.in_progress() & ~A.execution_failed()).with_label(
        "missing, parents present")


def demo_definitions(root=None):
    root = Path(root) if root is not None else demo_root()
    ensure_demo(root, owned="USR_ROOT" not in os.environ)
    auto = os.environ.get("USR_DAGSTER_AUTOMATION", "1") != "0"
    return build_usr_definitions(root, [*DEMO_NAMESPACES, *SLICED_NAMESPACES], running=True,
                                 automation_condition=fill_missing() if auto else None)


@definitions
def defs():
    return demo_definitions()
