"""The README's CLI walk-through runs as written (issue 14): its ```bash block, parsed from README.md, in
`bash -e` on a fresh scratch folder with the installed `usr`, every line a real subprocess."""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pyarrow.parquet as pq

from conftest import USR

README = Path(__file__).resolve().parents[2] / "README.md"


def cli_block() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## The `usr` command line"):]
    section = section[:section.index("\n## ", 1)]
    blocks = re.findall(r"^```bash\n(.*?)^```", section, re.S | re.M)
    assert len(blocks) == 1, "the CLI section holds exactly one bash block"
    return blocks[0]


def test_C1_C3_C5_readme_cli_block_runs_as_written(tmp_path):
    """[C1][C3][C5][O5][O6][X2][X10] every README line succeeds under `bash -e` on a fresh root."""
    block = cli_block()
    assert "usr attach" in block and "--as-part" in block and "overlay-compact" in block
    assert "../shared" not in README.read_text(encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "USR_ROOT"}
    env.update(TMPDIR=str(tmp_path), PATH=f"{Path(USR).parent}{os.pathsep}{env.get('PATH', '')}")
    res = subprocess.run(["bash", "-e", "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, f"README block failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    (work,) = [p for p in tmp_path.iterdir() if p.is_dir() and (p / "root").is_dir()]
    demo = work / "root" / "demo"
    assert (demo / "_derived" / "qc.parquet").is_file() and not (demo / "_derived" / "qc").exists()
    exported = pq.read_table(work / "exports" / "demo.parquet")
    assert {"qc__gc", "qc__profile", "labels__label", "usr_state__split"} <= set(exported.column_names)
    assert exported.num_rows == 2  # one of three records was deleted
    assert "OK: validation passed." in res.stdout
    events = json.loads(res.stdout.strip().splitlines()[-1])["data"]
    assert [e["action"] for e in events][-1] == "materialize"


def test_P1_P2_readme_python_block_runs(tmp_path):
    """[P1][P2] the README's Python API example runs as written on a fresh root (`...` as the loop body)."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## The Python API"):]
    code = re.search(r"^```python\n(.*?)^```", section, re.S | re.M).group(1).replace("    ...\n", "    pass\n")
    root = tmp_path / "root"
    root.mkdir()
    exec(compile(code, "README.md", "exec"), {"root": root})
    assert (root / "demo" / "_derived" / "qc.parquet").is_file()
