"""Progress output: bars on a terminal, one line per quarter in logs, nothing when off; one switch."""

from pathlib import Path

import pytest

from agreid_kit.utils.progress import LineProgress, progress_bar, set_progress_mode


def test_lines_mode_prints_a_line_per_quarter_without_carriage_returns(monkeypatch, capsys):
    monkeypatch.setenv("AGREID_PROGRESS", "lines")
    for _ in progress_bar(range(100), desc="work"):
        pass
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["work"] * 4
    assert "25%" in lines[0] and "100%" in lines[-1]


def test_off_and_auto_in_a_pipe(monkeypatch, capsys):
    monkeypatch.setenv("AGREID_PROGRESS", "off")
    for _ in progress_bar(range(10), desc="quiet"):
        pass
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("AGREID_PROGRESS", "auto")  # pytest captures stderr: not a terminal -> lines
    assert isinstance(progress_bar(range(3), desc="x"), LineProgress)
    monkeypatch.setenv("AGREID_PROGRESS", "sometimes")
    with pytest.raises(ValueError, match="AGREID_PROGRESS"):
        progress_bar(range(3))


def test_manual_updates_initial_and_postfix(monkeypatch, capsys):
    monkeypatch.setenv("AGREID_PROGRESS", "lines")
    bar = progress_bar(total=8, desc="epoch", initial=4)
    bar.set_postfix(loss="1.0")
    bar.update(2)
    bar.update(2)
    bar.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("epoch:  75%") and "loss=1.0" in err[0] and "100%" in err[-1]


def test_cli_switch_sets_the_mode_for_every_command(monkeypatch):
    import os

    from agreid_kit.cli import main

    monkeypatch.setenv("AGREID_PROGRESS", "auto")
    assert main(["--progress", "off", "data", "protocols", "synthag"]) == 0
    assert os.environ["AGREID_PROGRESS"] == "off"
    set_progress_mode("auto")


def test_papermill_bar_only_on_a_terminal(monkeypatch, tmp_path):
    """`agreid report` into a log printed papermill's per-cell bar as carriage-return spam."""
    import papermill

    from agreid_kit import notebook

    seen = {}

    def fake_execute(src, out, **kwargs):
        seen["bar"] = kwargs["progress_bar"]
        Path(out).write_text(Path(src).read_text())

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    for mode, expected in (("lines", False), ("off", False), ("bar", True)):
        monkeypatch.setenv("AGREID_PROGRESS", mode)
        notebook.execute_notebook("quickstart", {}, tmp_path / f"{mode}.ipynb", progress=True)
        assert seen["bar"] is expected, mode
    monkeypatch.setenv("AGREID_PROGRESS", "auto")  # pytest's captured stderr is not a terminal
    notebook.execute_notebook("quickstart", {}, tmp_path / "auto.ipynb", progress=True)
    assert seen["bar"] is False
