"""JupyterLab as the setup ships it: `.py` notebooks open as notebooks, and the server says so.

A real JupyterLab server (this venv's) is started on a free local port over the repository, and asked what
the page asks it when a user double-clicks `notebooks/feature_views.py`: the document-manager settings (the
shipped override makes "Jupytext Notebook" the default viewer of Python files) and the file's contents as a
notebook (jupytext's contents manager turns the `py:percent` file into cells, parameters tag included).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = Path(sys.prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read().decode())


@pytest.fixture(scope="module")
def lab():
    if not OVERRIDES.is_file():
        pytest.skip(f"{OVERRIDES} missing: run scripts/setup.sh (make setup) first")
    port = _free_port()
    env = {**os.environ, "JUPYTER_PLATFORM_DIRS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         "--allow-root", "--IdentityProvider.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
         f"--ServerApp.root_dir={ROOT}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            _get(f"{base}/api/status", timeout=2)
            break
        except Exception:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited: {proc.stderr.read()[-2000:]}")
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("jupyter lab did not answer within 90 s")
    yield base
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_python_files_open_with_the_jupytext_notebook_viewer(lab):
    settings = _get(f"{lab}/lab/api/settings/@jupyterlab/docmanager-extension:plugin")
    # overrides.json becomes the schema default the page reads (a user's own setting would win over it)
    default = settings["schema"]["properties"]["defaultViewers"]["default"]
    assert default.get("python") == "Jupytext Notebook", default
    assert "python" not in (settings["settings"].get("defaultViewers") or {})


def test_a_py_notebook_is_served_as_cells_with_its_parameters_tag(lab):
    model = _get(f"{lab}/api/contents/notebooks/feature_views.py?type=notebook&content=1")
    assert model["type"] == "notebook"
    cells = model["content"]["cells"]
    assert len(cells) > 3
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and "run_dir" in "".join(tagged[0]["source"])
    # paired with the .ipynb copy that `make notebooks` writes
    assert "ipynb" in model["content"]["metadata"]["jupytext"]["formats"]
