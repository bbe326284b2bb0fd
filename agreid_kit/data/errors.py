"""Errors raised for bad dataset input; messages always name the path or value at fault."""


class DatasetError(ValueError):
    """A dataset root, list file, file name or protocol is not what the kit expects."""
