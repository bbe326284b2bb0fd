"""``agreid app``: parser, lazy imports, and what it serves when the run is missing."""

import json
import subprocess
import sys
from pathlib import Path

from agreid_kit.cli import main


def test_cli_does_not_import_gradio_until_served():
    code = "import sys; from agreid_kit.cli import build_parser; build_parser(); print('gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_bad_port_is_a_clear_error(capsys):
    assert main(["app", "--port", "70000"]) == 2
    assert "--port must be in 0..65535" in capsys.readouterr().err


def test_missing_run_serves_the_how_to_page(tmp_path, monkeypatch, capsys):
    import agreid_kit.apps.ranking_app as ra

    served = {}
    monkeypatch.setattr(ra, "launch_app", lambda demo, port=None, **kw: served.update(demo=demo, port=port))
    assert main(["app", "--run", str(tmp_path / "no-run"), "--port", "7999"]) == 0
    demo = served["demo"]
    assert demo.backend is None and served["port"] == 7999
    texts = [str(getattr(b, "value", "")) for b in demo.blocks.values()]
    assert any("make report" in t and str(tmp_path / "no-run") in t for t in texts)
    assert "no usable run" in capsys.readouterr().out


def test_tradeoff_table_is_found_in_the_main_jobs_report(tmp_path):
    from agreid_kit.apps.ranking_app import _tradeoff_candidates

    run = tmp_path / "runs" / "sdreid-stage2"
    run.mkdir(parents=True)
    reports = tmp_path / "reports"
    for day, target in (("2026-11-20", run), ("2026-11-21", tmp_path / "other-run")):
        (reports / day).mkdir(parents=True)
        (reports / day / "tradeoff.csv").write_text("tau,rank1,mAP,mINP,sec_per_1000\n1,0.1,0.1,0.1,3.0\n")
        (reports / day / "tradeoff.json").write_text(json.dumps({"settings": {"run": str(target)}}))
    found = _tradeoff_candidates(run, reports_root=reports)
    assert found[:2] == [run / "analysis" / "tradeoff.csv", run / "tradeoff.csv"]
    assert found[2:] == [reports / "2026-11-20" / "tradeoff.csv"]  # not the report made for another run


def test_busy_port_is_one_line_naming_port(tmp_path, capfd):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["app", "--run", str(tmp_path / "no-run"), "--port", str(port)]) == 2
    out = capfd.readouterr()
    err = out.err.strip()
    assert len(err.splitlines()) == 1 and f"--port {port} is already in use" in err and "--port 0" in err
    everything = out.out + out.err
    assert "GRADIO_SERVER_PORT" not in everything and "Traceback" not in everything and "share=True" not in everything


def test_launch_prints_no_share_hint(tmp_path, capfd):
    import httpx

    from agreid_kit.apps.ranking_app import build_app, launch_app

    demo = build_app(tmp_path / "no-run")
    _, url, _ = launch_app(demo, port=None, prevent_thread_lock=True, quiet=False)
    try:
        assert url.startswith("http://127.0.0.1:") and httpx.get(url, timeout=30).status_code == 200
    finally:
        demo.close()
    out = capfd.readouterr()
    assert f"serving on {url}" in out.out and "local only" in out.out
    assert "share" not in (out.out + out.err).lower()  # no "set share=True": the app is local only


def test_cli_passes_report_and_port(tmp_path, monkeypatch):
    import agreid_kit.apps.ranking_app as ra

    seen = {}
    def build_app(run, **kw):
        seen.update(run=run, **kw)
        return type("D", (), {"backend": None})()

    monkeypatch.setattr(ra, "build_app", build_app)
    monkeypatch.setattr(ra, "launch_app", lambda demo, port=None, **kw: seen.update(port=port))
    assert main(["app", "--run", str(tmp_path / "r"), "--report", str(tmp_path / "rep"), "--port", "0"]) == 0
    assert seen["report"] == str(tmp_path / "rep") and seen["port"] is None and seen["run"] == str(tmp_path / "r")
    assert Path(seen["run"]).name == "r"
