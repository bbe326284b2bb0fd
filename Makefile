# The two commands the README opens with: `make report` (main job) and `make test`.
PY := .venv/bin/python
export HF_HUB_OFFLINE := 1
export GRADIO_ANALYTICS_ENABLED := False

.PHONY: setup test lint report app bench notebooks lab

setup:
	bash scripts/setup.sh

# Lint first (ruff: pyproject.toml [tool.ruff]), then the tests.
test: setup
	.venv/bin/ruff check .
	$(PY) -m pytest -q

lint: setup
	.venv/bin/ruff check .

report: setup
	.venv/bin/agreid report

app: setup
	.venv/bin/agreid app

bench: setup
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# Paired .ipynb copies of the jupytext notebooks (git keeps the .py; JupyterLab and papermill open the .ipynb,
# and jupytext keeps both in sync on save).
notebooks: setup
	.venv/bin/jupytext --sync notebooks/*.py

lab: notebooks
	.venv/bin/jupyter lab --notebook-dir=. notebooks
