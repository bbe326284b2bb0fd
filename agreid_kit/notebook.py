"""Running the kit's parameterized notebooks: parameter validation and headless execution.

Notebooks live in ``notebooks/`` as jupytext ``py:percent`` sources. papermill only *warns* about an
unknown parameter, so every notebook guards its parameters itself::

    # %%
    from agreid_kit.notebook import ParameterGuard
    guard = ParameterGuard(globals())

    # %% tags=["parameters"]
    dataset = "synthag"
    epochs = 2
    guard.freeze(globals())          # the names defined above are the valid parameters

    # %%  (papermill injects its cell between these two)
    params = guard.validate(globals())

``validate`` fails on a name that is not a parameter (listing the valid ones) and on a value whose
type does not match the default's.
"""

from __future__ import annotations

import difflib
import os
import re
import time
from pathlib import Path
from typing import Any, Mapping

_NUMERIC = (int, float)


class NotebookParameterError(ValueError):
    """A notebook was given a parameter it does not have, or a value of the wrong type."""


class ParameterGuard:
    def __init__(self, namespace: Mapping[str, Any]):
        self._before = set(namespace)
        self._before.add("guard")
        self.defaults: dict[str, Any] | None = None

    def freeze(self, namespace: Mapping[str, Any]) -> None:
        names = [n for n in namespace if n not in self._before and not n.startswith("_")]
        self.defaults = {n: namespace[n] for n in names}

    def validate(self, namespace: Mapping[str, Any]) -> dict[str, Any]:
        if self.defaults is None:
            raise RuntimeError("ParameterGuard.validate called before freeze(): call guard.freeze(globals()) at the end of the parameters cell")
        known = set(self.defaults) | self._before | {"guard"}
        unknown = sorted(n for n in namespace if n not in known and not n.startswith("_"))
        if unknown:
            hints = []
            for n in unknown:
                close = difflib.get_close_matches(n, list(self.defaults), n=1)
                hints.append(f"{n!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise NotebookParameterError(
                f"unknown notebook parameter(s): {', '.join(hints)}; valid parameters: {', '.join(sorted(self.defaults))}"
            )
        params = {n: namespace[n] for n in self.defaults}
        for n, default in self.defaults.items():
            value = params[n]
            if default is None or value is None:
                continue
            if isinstance(default, bool) != isinstance(value, bool):
                ok = False
            elif isinstance(default, _NUMERIC) and isinstance(value, _NUMERIC):
                ok = not (isinstance(default, int) and isinstance(value, float) and not value.is_integer())
            else:
                ok = isinstance(value, type(default))
            if not ok:
                raise NotebookParameterError(
                    f"notebook parameter {n!r} must be {type(default).__name__} like its default {default!r}, got {value!r}"
                )
        return params


def notebooks_dir() -> Path:
    """The repository's ``notebooks/`` folder (the kit runs from a checkout; notebooks are not installed)."""
    env = os.environ.get("AGREID_NOTEBOOKS")
    candidates = [Path(env)] if env else []
    candidates += [Path.cwd() / "notebooks", Path(__file__).resolve().parents[1] / "notebooks"]
    for c in candidates:
        if (c / "report.py").is_file():
            return c
    raise FileNotFoundError(
        "cannot find the kit's notebooks/ folder (looked in: " + ", ".join(str(c) for c in candidates)
        + "); run from the agreid-kit checkout or set AGREID_NOTEBOOKS=/path/to/notebooks"
    )


def execute_notebook(
    name: str,
    parameters: Mapping[str, Any],
    output_path: str | os.PathLike,
    cwd: str | os.PathLike | None = None,
    timeout: int | None = None,
    progress: bool = True,
) -> Path:
    """Convert ``notebooks/<name>.py`` to ipynb and execute it headless with papermill.

    The executed notebook is written atomically to ``output_path``; a failing cell raises
    papermill's ``PapermillExecutionError`` (the partially executed notebook is still saved
    beside it as ``<output>.failed.ipynb`` for inspection).
    """
    import jupytext
    import nbformat
    import papermill as pm

    src = notebooks_dir() / f"{name}.py"
    if not src.is_file():
        available = sorted(p.stem for p in notebooks_dir().glob("*.py"))
        raise FileNotFoundError(f"no notebook {name!r} at {src}; available: {', '.join(available)}")
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    nb = jupytext.read(src)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src_ipynb = output_path.with_name(f".{output_path.stem}.src.ipynb")
    nbformat.write(nb, src_ipynb)
    tmp_out = output_path.with_name(f".{output_path.stem}.running.ipynb")
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(
            str(src_ipynb),
            str(tmp_out),
            parameters=dict(parameters),
            kernel_name="python3",
            cwd=str(cwd) if cwd else None,
            execution_timeout=timeout,
            progress_bar=progress,
        )
    except Exception:
        if tmp_out.exists():
            os.replace(tmp_out, output_path.with_suffix(".failed.ipynb"))
        raise
    finally:
        src_ipynb.unlink(missing_ok=True)
    os.replace(tmp_out, output_path)
    if progress:
        print(f"[notebook] {name} executed in {time.perf_counter() - t0:.1f} s -> {output_path}")
    return output_path


# nbconvert's template loads require.js and MathJax from a CDN, and plotly's first figure asks for MathJax
# too. The kit's notebooks embed plotly.js themselves and use no LaTeX, so those tags only break offline
# viewing (require.js would even turn plotly.js into an AMD module that the figures cannot see).
_REMOTE_SCRIPT = re.compile(r"<script\b[^>]*\bsrc=[\"']https?://[^\"']*[\"'][^>]*>\s*</script>", re.IGNORECASE)


def strip_remote_scripts(html: str) -> str:
    """``html`` without ``<script src="http(s)://...">`` tags: a self-contained page that works offline."""
    return _REMOTE_SCRIPT.sub("", html)


def notebook_to_html(ipynb: str | os.PathLike, html_path: str | os.PathLike | None = None) -> Path:
    """Export an executed notebook to one self-contained, offline HTML file (plotly.js embedded, code hidden)."""
    import nbformat
    from nbconvert import HTMLExporter

    from agreid_kit.utils.io import atomic_write_text

    ipynb = Path(ipynb)
    html_path = Path(html_path) if html_path else ipynb.with_suffix(".html")
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(ipynb, as_version=4))
    atomic_write_text(html_path, strip_remote_scripts(body))
    return html_path
