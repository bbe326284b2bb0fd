"""Shared pieces of the official-layout readers: folder checks, list files, name parsing, split assembly.

Every failure is a ``DatasetError`` whose message names the path or value at fault and, for missing
folders/files, shows the tree the reader expected.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from agreid_kit.data.errors import DatasetError
from agreid_kit.data.records import DatasetSplit, Record, relabel_train

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")

# Options every reader accepts (readers add their own).
COMMON_OPTIONS = ("on_bad_name", "record_hook", "dataset_name")


def check_options(dataset: str, options: dict[str, Any], allowed: Sequence[str]) -> None:
    unknown = sorted(set(options) - set(allowed) - set(COMMON_OPTIONS))
    if unknown:
        raise DatasetError(
            f"dataset {dataset!r}: unknown option(s) {unknown}; valid options: "
            f"{sorted(set(allowed) | set(COMMON_OPTIONS))}"
        )
    mode = options.get("on_bad_name", "error")
    if mode not in ("error", "skip"):
        raise DatasetError(f"dataset {dataset!r}: option on_bad_name must be 'error' or 'skip', got {mode!r}")


def require_dir(path: Path, what: str, tree: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{what}: folder {path} is missing. Expected layout:\n{tree}")
    return path


def require_file(path: Path, what: str, tree: str) -> Path:
    if not path.is_file():
        raise DatasetError(f"{what}: file {path} is missing. Expected layout:\n{tree}")
    return path


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (or below it), sorted so record order is deterministic."""
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in it if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def read_list_file(path: Path, tree: str) -> list[tuple[int, str]]:
    """Non-empty lines of a list file as (line number, first whitespace-separated token)."""
    require_file(path, "list file", tree)
    out = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if line:
                out.append((n, line.split()[0]))
    if not out:
        raise DatasetError(f"list file {path} is empty (expected one image path per line)")
    return out


def is_query_line(rel: str) -> bool:
    """Official list files: a line whose first path component starts with ``query`` is a query."""
    first = rel.replace("\\", "/").lstrip("./").split("/", 1)[0]
    return first.startswith("query")


class NameParser:
    """Applies a reader's parse function to many paths, honouring ``on_bad_name`` (error|skip).

    Skipped files are counted per reason and reported (warning + ``DatasetSplit.options['skipped']``),
    never dropped silently.
    """

    def __init__(self, dataset: str, parse: Callable[[Path], Record], on_bad_name: str = "error"):
        self.dataset = dataset
        self.parse = parse
        self.skip = on_bad_name == "skip"
        self.skipped: list[str] = []

    def __call__(self, paths: Iterable[Path]) -> list[Record]:
        out = []
        for p in paths:
            try:
                out.append(self.parse(p))
            except DatasetError as e:
                if not self.skip:
                    raise DatasetError(f"{e} (pass on_bad_name='skip' to skip such files and count them)") from None
                self.skipped.append(f"{p}: {e}")
        return out


def assemble_split(
    dataset: str,
    protocol: str,
    root: Path,
    train: list[Record],
    query: list[Record],
    gallery: list[Record],
    num_views: int,
    description: str,
    options: dict[str, Any],
    parser: NameParser | None = None,
    notes: dict[str, Any] | None = None,
) -> DatasetSplit:
    """Apply the record hook, check non-empty sets, relabel training pids, record what was skipped."""
    hook = options.get("record_hook")
    name = options.get("dataset_name") or dataset
    if hook is not None:
        train, query, gallery = ([apply_record_hook(hook, r) for r in rs] for rs in (train, query, gallery))
    if not train:
        raise DatasetError(f"dataset {name!r} at {root}: the training set is empty")
    for what, recs in (("query", query), ("gallery", gallery)):
        if not recs:
            raise DatasetError(f"dataset {name!r} protocol {protocol!r} at {root}: the {what} set is empty")
    opts = {k: v for k, v in options.items() if k not in ("record_hook",) and _jsonable(v)}
    if notes:
        opts.update(notes)
    if parser is not None and parser.skipped:
        opts["skipped"] = len(parser.skipped)
        opts["skipped_examples"] = parser.skipped[:5]
        warnings.warn(
            f"dataset {name!r} at {root}: skipped {len(parser.skipped)} file(s) whose names did not parse, "
            f"e.g. {parser.skipped[0]}",
            stacklevel=3,
        )
    return DatasetSplit(
        dataset=name,
        protocol=protocol,
        root=str(root),
        train=relabel_train(train),
        query=query,
        gallery=gallery,
        num_views=num_views,
        description=description,
        options=opts,
    )


def apply_record_hook(hook: Callable[[Record], Record], r: Record) -> Record:
    out = hook(r)
    if not isinstance(out, Record):
        raise DatasetError(f"record_hook returned {type(out).__name__} for {r.path}, expected a Record")
    return out


def _jsonable(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool, list, dict, tuple))


def with_camid(records: Iterable[Record], camid_of: Callable[[Record], int]) -> list[Record]:
    return [replace(r, camid=camid_of(r)) for r in records]


def by_view(records: Iterable[Record], views: Sequence[int]) -> list[Record]:
    return [r for r in records if r.view in views]


def root_path(root: str | os.PathLike, dataset: str, tree: str) -> Path:
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DatasetError(f"dataset {dataset!r}: root folder {path} does not exist. Expected layout:\n{tree}")
    return path.resolve()
