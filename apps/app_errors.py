"""The errors the ranking app reports to the user in words."""

from __future__ import annotations


class AppError(ValueError):
    """A problem the page reports to the user in words (bad upload, empty filter, missing run)."""


class ModelError(AppError):
    """The run's model could not be loaded or failed on an input (e.g. a corrupted checkpoint)."""


def describe(e: BaseException) -> str:
    """``Type: message`` of an exception, on one line."""
    text = " ".join(str(e).split()) or "(no message)"
    return f"{type(e).__name__}: {text[:400]}"
