"""Packaging: one dependency list in two places, only the agreid_kit namespace installed, CLI help everywhere."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _norm(req: str) -> str:
    return re.sub(r"\s+", "", req).lower().replace("_", "-")


def test_environment_yml_and_pyproject_list_the_same_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert sorted(map(_norm, project)) == sorted(map(_norm, pip_section))
    assert len(project) == len(set(map(_norm, project))), "duplicate dependency in pyproject.toml"


def test_only_agreid_kit_namespace_is_installed():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = cfg["packages"]
    assert packages and all(p == "agreid_kit" or p.startswith("agreid_kit.") for p in packages)
    # every declared package exists where setuptools will look for it, and no module is left out
    mapping = cfg.get("package-dir", {})
    for p in packages:
        folder = ROOT / mapping.get(p, p.replace(".", "/"))
        assert (folder / "__init__.py").is_file(), f"declared package {p} has no {folder}/__init__.py"
    for init in (ROOT / "agreid_kit").rglob("__init__.py"):
        pkg = ".".join(init.parent.relative_to(ROOT).parts)
        assert pkg in packages, f"{pkg} exists but is not listed in pyproject.toml packages"


def test_widgets_and_apps_import_under_the_kit_namespace():
    import agreid_kit.apps  # noqa: F401
    import agreid_kit.widgets  # noqa: F401


def _subcommands():
    from agreid_kit.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return parser, action.choices


def test_cli_help_works_for_every_subcommand():
    parser, choices = _subcommands()
    assert {"synth", "train", "evaluate"} <= set(choices)
    for name, sub in choices.items():
        text = sub.format_help()
        assert name in text and "usage" in text.lower()


def test_console_script_runs():
    exe = Path(sys.executable).parent / "agreid"
    if not exe.exists():
        pytest.skip("agreid console script not installed in this environment")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "agreid" in out.stdout
