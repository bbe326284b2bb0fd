#!/usr/bin/env bash
# Create .venv and install agreid-kit with everything it needs (idempotent: a second run is a no-op
# unless pyproject.toml changed). Nothing here downloads model weights or datasets.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.agreid-kit-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing agreid-kit and its dependencies into .venv (first time: a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  # torch and torchvision come together from the registry (see docs: never pin torch to a local CPU
  # file without a matching torchvision).
  .venv/bin/python -m pip install -q -e .
  echo "$want" > "$stamp"
fi
# JupyterLab (of this venv) opens the jupytext .py notebooks as notebooks on double-click, and the paired
# .ipynb copies exist for papermill and for outputs that survive a reload (`make notebooks` refreshes them).
overrides=.venv/share/jupyter/lab/settings/overrides.json
if [ ! -f "$overrides" ]; then
  mkdir -p "$(dirname "$overrides")"
  printf '%s\n' '{"@jupyterlab/docmanager-extension:plugin": {"defaultViewers": {"python": "Jupytext Notebook"}}}' > "$overrides"
fi
if ! ls notebooks/*.ipynb >/dev/null 2>&1; then
  .venv/bin/jupytext --quiet --sync notebooks/*.py >/dev/null
fi
# Headless Chromium serves the real-browser tests and the report screenshot; install it when we can.
if [ "${AGREID_SKIP_CHROMIUM:-0}" != "1" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing Debian chromium for browser tests"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "[setup] warning: could not install chromium; browser tests will be skipped"
  else
    echo "[setup] note: chromium not found (not root or no apt-get); browser tests will be skipped"
  fi
fi
echo "[setup] ready: $(.venv/bin/python -c 'import torch, agreid_kit; print("agreid-kit", agreid_kit.__version__, "torch", torch.__version__)')"
