"""The demo code location that workspace.yaml loads.

Root: $USR_ROOT, else ./demo_root (seeded on first load when missing). The event sensor, the automation sensor and
the compaction schedule start RUNNING; derived namespaces are materialized automatically when missing."""
from __future__ import annotations

import os
from pathlib import Path

from dagster import AutomationCondition, definitions

from .build import build_usr_definitions
from .demo.namespaces import DEMO_NAMESPACES
from .demo.seed import ensure_demo

DEFAULT_ROOT = "demo_root"


def demo_root() -> Path:
    env = os.environ.get("USR_ROOT")
    return Path(env) if env else Path.cwd() / DEFAULT_ROOT


def demo_definitions(root=None):
    root = Path(root) if root is not None else demo_root()
    ensure_demo(root, owned="USR_ROOT" not in os.environ)
    auto = os.environ.get("USR_DAGSTER_AUTOMATION", "1") != "0"
    return build_usr_definitions(root, DEMO_NAMESPACES, running=True,
                                 automation_condition=AutomationCondition.on_missing() if auto else None)


@definitions
def defs():
    return demo_definitions()
