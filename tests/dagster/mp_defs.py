"""Code location for the multiprocess test, loaded by `dagster job execute -f` (children rebuild it from this file).
forkserver with preloaded modules: spawned children would re-import dagster for every step (tens of seconds)."""
import os

import dagster as dg

from usr_dagster import build_usr_definitions
from usr_dagster.demo.namespaces import gc, orf

executor = dg.multiprocess_executor.configured({
    "max_concurrent": 4,
    "start_method": {"forkserver": {"preload_modules": ["dagster", "pyarrow", "pandas", "usr_core", "usr_dagster"]}},
})
defs = build_usr_definitions(os.environ["USR_TEST_ROOT"], [gc, orf], executor=executor)
