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


PARENT_ENV = "AGREID_PARENT_PID"


def exit_with_parent() -> None:
    """In a kernel started by :func:`execute_notebook`: end this process when the process that started it dies.

    A SIGKILL of ``agreid report`` gives papermill no chance to shut its kernel down; the kernel then
    notices it was orphaned (its parent id changes) within a couple of seconds and exits."""
    import threading

    parent = os.environ.get(PARENT_ENV)
    if not parent or not parent.isdigit() or os.getppid() != int(parent):
        return

    def watch() -> None:
        while True:
            time.sleep(2.0)
            if os.getppid() != int(parent):
                os._exit(1)

    threading.Thread(target=watch, name="agreid-exit-with-parent", daemon=True).start()


class ParameterGuard:
    def __init__(self, namespace: Mapping[str, Any]):
        exit_with_parent()
        self._before = set(namespace)
        self._before.add("guard")
        self.defaults: dict[str, Any] | None = None
        self.inputs: dict[str, str] = {}
        self.outputs: tuple[str, ...] = ()
        self.data_specs: dict[str, str] = {}
        self.choices: dict[str, tuple[Any, ...]] = {}

    def freeze(
        self,
        namespace: Mapping[str, Any],
        inputs: Mapping[str, str] | None = None,
        outputs: tuple[str, ...] = (),
        data_specs: Mapping[str, str] | None = None,
        choices: Mapping[str, tuple[Any, ...]] | None = None,
    ) -> None:
        """Record the parameters (the names defined since the guard was made) and how to check them.

        ``inputs``: path parameters that must exist (a path or a list of paths) -> the command or notebook
        that makes them (said when one is missing); ``data_specs``: ``NAME:ROOT`` parameters whose root must
        exist -> what makes it; ``outputs``: folders the notebook writes. Relative paths of all three are
        resolved against the project root (not the kernel's working folder), and a relative output may
        not leave the project (an absolute one is the user's explicit choice). ``choices``: the allowed
        values of a parameter.
        """
        names = [n for n in namespace if n not in self._before and not n.startswith("_")]
        self.defaults = {n: namespace[n] for n in names}
        self.inputs = dict(inputs or {})
        self.outputs = tuple(outputs)
        self.data_specs = dict(data_specs or {})
        self.choices = dict(choices or {})
        unknown = [n for n in [*self.inputs, *self.outputs, *self.data_specs, *self.choices] if n not in self.defaults]
        if unknown:
            raise RuntimeError(f"ParameterGuard.freeze: {unknown} are not parameters of this notebook")

    def validate(self, namespace: Mapping[str, Any]) -> dict[str, Any]:
        if self.defaults is None:
            raise RuntimeError("ParameterGuard.validate called before freeze(): call guard.freeze(globals()) at the "
                               "end of the parameters cell")
        known = set(self.defaults) | self._before | {"guard"}
        unknown = sorted(n for n in namespace if n not in known and not n.startswith("_"))
        if unknown:
            hints = []
            for n in unknown:
                close = difflib.get_close_matches(n, list(self.defaults), n=1)
                hints.append(f"{n!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise NotebookParameterError(
                f"unknown notebook parameter(s): {', '.join(hints)}; valid parameters: "
                f"{', '.join(sorted(self.defaults))}"
            )
        params = {n: namespace[n] for n in self.defaults}
        for n, default in self.defaults.items():
            value = params[n]
            if default is None:
                continue
            if value is None:
                raise NotebookParameterError(f"notebook parameter {n!r} must be {type(default).__name__} like its "
                                             "default "
                                             f"{default!r}, got None")
            if isinstance(default, bool) != isinstance(value, bool):
                ok = False
            elif isinstance(default, _NUMERIC) and isinstance(value, _NUMERIC):
                ok = not (isinstance(default, int) and isinstance(value, float) and not value.is_integer())
            else:
                ok = isinstance(value, type(default))
            if not ok:
                raise NotebookParameterError(
                    f"notebook parameter {n!r} must be {type(default).__name__} like its default {default!r}, got "
                    f"{value!r}"
                )
        for n, allowed in self.choices.items():
            if params[n] not in allowed:
                raise NotebookParameterError(f"notebook parameter {n!r} must be one of {list(allowed)}, got "
                                             f"{params[n]!r}")
        root = project_root()
        for n in self.outputs:
            params[n] = str(_resolve_output(n, params[n], root))
        for n, hint in self.inputs.items():
            value = params[n]
            paths = [_resolve(v, root) for v in value] if isinstance(value, (list, tuple)) else _resolve(value, root)
            for p in (paths if isinstance(paths, list) else [paths]):
                if not p.exists():
                    raise NotebookParameterError(f"notebook parameter {n!r}: {p} does not exist; {hint}")
            params[n] = [str(p) for p in paths] if isinstance(paths, list) else str(paths)
        for n, hint in self.data_specs.items():
            name, sep, rest = str(params[n]).partition(":")
            if not sep:
                raise NotebookParameterError(f"notebook parameter {n!r} must be a data spec NAME:ROOT, got "
                                             f"{params[n]!r}")
            path = _resolve(rest, root)
            if not path.exists():
                raise NotebookParameterError(f"notebook parameter {n!r}: dataset folder {path} does not exist; {hint}")
            params[n] = f"{name}:{path}"
        if isinstance(namespace, dict):  # the notebook's globals: later cells see the resolved paths
            namespace.update({n: params[n] for n in (*self.outputs, *self.inputs, *self.data_specs)})
        return params


def project_root() -> Path:
    """The checkout the notebooks belong to (relative notebook paths are resolved against it)."""
    return notebooks_dir().resolve().parent


def _resolve(value: Any, root: Path) -> Path:
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else root / path


def _resolve_output(name: str, value: Any, root: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise NotebookParameterError(f"notebook parameter {name!r} must be a folder path, got {value!r}")
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    resolved = (root / path).resolve()
    if root.resolve() not in (resolved, *resolved.parents):
        raise NotebookParameterError(
            f"notebook parameter {name!r}: {value!r} leaves the project ({root}); give an absolute folder to write "
            "elsewhere on purpose"
        )
    return resolved


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

    from agreid_kit.utils.progress import bars_allowed

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
    previous_parent = os.environ.get(PARENT_ENV)
    os.environ[PARENT_ENV] = str(os.getpid())  # the kernel inherits it: see exit_with_parent
    try:
        pm.execute_notebook(
            str(src_ipynb),
            str(tmp_out),
            parameters=dict(parameters),
            kernel_name="python3",
            cwd=str(cwd) if cwd else None,
            execution_timeout=timeout,
            progress_bar=progress and bars_allowed(),  # papermill's bar is carriage returns: terminals only
        )
    except Exception:
        if tmp_out.exists():
            os.replace(tmp_out, output_path.with_suffix(".failed.ipynb"))
        raise
    finally:
        src_ipynb.unlink(missing_ok=True)
        if previous_parent is None:
            os.environ.pop(PARENT_ENV, None)
        else:
            os.environ[PARENT_ENV] = previous_parent
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
