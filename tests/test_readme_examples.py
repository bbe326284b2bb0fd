"""The README's headless-notebook examples, run as written (a CI test, so the documented recipes keep working).

Every fenced ``bash`` block that follows the marker ``<!-- README example, run by tests/test_readme_examples.py -->``
is executed line by line in a scratch copy of the project (its ``notebooks/`` and a ``runs/`` tree whose
``runs/synthag-small/seed0/sdreid`` is the tiny main job's stage-1 run), with two translations only:
``.venv/bin/`` becomes this interpreter's ``bin/`` folder, and ``make notebooks`` runs the Makefile's recipe
for that target (checked to be the jupytext sync below), because the scratch copy has no virtual environment.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _mainjob import tiny_job

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- README example, run by tests/test_readme_examples.py -->"
NOTEBOOKS_RECIPE = "jupytext --sync notebooks/*.py"


def readme_examples() -> list[list[str]]:
    """The marked bash blocks of README.md, each as its list of commands (backslash continuations joined)."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(re.escape(MARKER) + r"\s*```bash\n(.*?)```", text, flags=re.S)
    return [[c.strip() for c in b.replace("\\\n", " ").splitlines() if c.strip()] for b in blocks]


def test_the_readme_marks_the_notebook_examples():
    examples = readme_examples()
    assert len(examples) >= 2, "README.md lost its tested notebook examples"
    assert any("papermill" in c for b in examples for c in b)
    assert any("execute_notebook" in c for b in examples for c in b)
    # `make notebooks` is translated to the Makefile's own recipe: keep the two in step.
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^notebooks:.*\n\t(.+)$", makefile, flags=re.M)
    assert recipe and recipe.group(1).strip().endswith(NOTEBOOKS_RECIPE), recipe


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    cfg, _ = tiny_job(tmp_path_factory)
    proj = tmp_path_factory.mktemp("readme-project")
    shutil.copytree(ROOT / "notebooks", proj / "notebooks",
                    ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints"))
    seed_dir = proj / "runs" / "synthag-small" / "seed0"
    seed_dir.mkdir(parents=True)
    (seed_dir / "sdreid").symlink_to(Path(cfg.run_dir("sdreid")).resolve(), target_is_directory=True)
    return proj


def _translate(command: str) -> list[str]:
    bindir = Path(sys.executable).parent
    if command == "make notebooks":
        command = f".venv/bin/{NOTEBOOKS_RECIPE}"
    command = command.replace(".venv/bin/", f"{bindir}/")
    parts = shlex.split(command)
    # a glob in the recipe (notebooks/*.py) is the shell's job
    out: list[str] = []
    for p in parts:
        out.extend(sorted(str(x) for x in Path.cwd().glob(p)) if "*" in p else [p])
    return out


@pytest.mark.parametrize("index", range(len(readme_examples())))
def test_readme_example_runs(project, index, monkeypatch):
    monkeypatch.chdir(project)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "AGREID_NOTEBOOKS": str(project / "notebooks"),
           "AGREID_PROGRESS": "off"}
    outputs = []
    for command in readme_examples()[index]:
        argv = _translate(command)
        done = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"README command failed: {command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        outputs += [a for a in argv if a.endswith(".ipynb") and a.startswith("out/")]
    for out in outputs:
        nb = json.loads((project / out).read_text())
        errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{out}: {errors[:1]}"
