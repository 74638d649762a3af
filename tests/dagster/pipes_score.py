"""External side of the Pipes test: computes the `score` namespace with usr_core only (no dagster import)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from score_fn import score_table  # noqa: E402
from usr_core.external import pipes_main  # noqa: E402

pipes_main(score_table)
assert "dagster" not in sys.modules, "the external side must not import dagster"
