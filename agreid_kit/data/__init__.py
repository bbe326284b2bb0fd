"""Datasets: records, splits, official-layout readers and the registry."""

from agreid_kit.data.errors import DatasetError
from agreid_kit.data.records import DatasetSplit, Record, relabel_train
from agreid_kit.data.registry import (
    DATASETS,
    available_protocols,
    load_dataset,
    parse_data_spec,
    protocol_descriptions,
    register_dataset,
)

__all__ = [
    "DATASETS",
    "DatasetError",
    "DatasetSplit",
    "Record",
    "available_protocols",
    "load_dataset",
    "parse_data_spec",
    "protocol_descriptions",
    "register_dataset",
    "relabel_train",
]

# Register the built-in readers (and synthag) now, so DATASETS is complete for anyone who imports it.
from agreid_kit.data import registry as _registry  # noqa: E402

_registry._ensure_builtin()
