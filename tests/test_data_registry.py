"""Registry, data specs and the `agreid data` command."""

from pathlib import Path

import pytest

from agreid_kit.cli import main
from agreid_kit.data import (
    DATASETS,
    DatasetError,
    available_protocols,
    load_dataset,
    parse_data_spec,
    protocol_descriptions,
    register_dataset,
)

BUILTIN = {
    "agreid_v1": ["A->G", "G->A"],
    "agreid_v2": ["A->C", "A->W", "C->A", "W->A"],
    "cargo": ["ALL", "A<->A", "G<->G", "A<->G", "A->G", "G->A", "A<->G-strict"],
    "lagper": ["A->G", "G->A", "G->A+G", "A->G-exp1", "G->A-exp2"],
    "g2aps": ["A->G", "G->A"],
    "cp2108": ["ALL", "A->G", "G->A", "A<->A", "G<->G", "A<->G-strict"],
    "market": ["ALL", "A->G", "G->A", "A<->G", "A<->G-strict", "A<->A", "G<->G"],
}


def test_builtin_datasets_and_descriptions():
    for name, protocols in BUILTIN.items():
        assert name in DATASETS and available_protocols(name) == protocols
        assert all(len(d) > 10 for d in protocol_descriptions(name).values())


def test_unknown_names_list_valid_ones(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset 'viper'; valid: .*'agreid_v1'.*'lagper'.*'market'"):
        load_dataset("viper", tmp_path, "ALL")
    with pytest.raises(DatasetError, match="unknown protocol 'A<->G'; valid: \\['A->G', 'G->A'\\]"):
        load_dataset("agreid_v1", tmp_path, "A<->G")
    with pytest.raises(DatasetError, match="root folder .*nowhere does not exist. Expected layout"):
        load_dataset("lagper", tmp_path / "nowhere", "A->G")


def test_parse_data_spec():
    assert parse_data_spec("cargo:/data/CARGO") == ("cargo", "/data/CARGO")
    assert parse_data_spec("cp2108:C:/data/cp") == ("cp2108", "C:/data/cp")
    with pytest.raises(DatasetError, match="must be NAME:ROOT"):
        parse_data_spec("/data/CARGO")
    with pytest.raises(DatasetError, match="unknown dataset 'carg'"):
        parse_data_spec("carg:/x")
    with pytest.raises(DatasetError, match="root folder after ':' is empty"):
        parse_data_spec("cargo:")


def test_register_dataset(tmp_path):
    calls = []

    def loader(root, protocol, **options):
        calls.append((root, protocol, options))
        return "split"

    register_dataset("toy_test_only", loader, {"P1": "one protocol"}, "a toy")
    try:
        assert load_dataset("toy_test_only", tmp_path, "P1", k=1) == "split"
        assert calls == [(tmp_path, "P1", {"k": 1})]
        with pytest.raises(ValueError, match="at least one protocol"):
            register_dataset("toy_empty", loader, {}, "none")
    finally:
        DATASETS.pop("toy_test_only")


def test_cli_protocols_and_info(tmp_path, capsys):
    assert main(["data", "protocols", "cp2108"]) == 0
    out = capsys.readouterr().out
    assert "A<->G-strict" in out and "gallery image of the query's own view removed" in out
    root = tmp_path / "CARGO"
    for rel in ["train/Cam1/Cam1_day_1_0.jpg", "query/Cam2/Cam2_day_10_0.jpg", "gallery/Cam7/Cam7_night_10_1.jpg"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    assert main(["data", "info", f"cargo:{root}", "--protocol", "A<->G"]) == 0
    out = capsys.readouterr().out
    assert "cargo [A<->G]" in out and "query" in out
    assert main(["data", "info", f"cargo:{root}", "-p", "X"]) == 2
    assert "unknown protocol 'X'" in capsys.readouterr().err
    assert main(["data", "info", f"cargo:{Path(root) / 'none'}", "-p", "ALL", "-o", "bad"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
