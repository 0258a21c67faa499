"""`foundry report`: the command's output and its errors."""

from __future__ import annotations

import shutil

from tests.report.report_html import read_page


def test_report_command_writes_the_file_and_says_where(audited, cli, tmp_path):
    out = tmp_path / "page.html"
    result = cli("report", audited.ref, "-o", out, home=audited.home)
    assert result.code == 0, result.err
    assert result.out.startswith(f"wrote {out} (") and "12 sections" in result.out
    assert "regression: not in the report" in result.err
    assert read_page(out).headings["fairness"] == "Fairness"


def test_default_output_is_next_to_the_run(audited, cli, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(audited.run_dir, run, ignore=shutil.ignore_patterns("checkpoint"))
    result = cli("report", run, home=audited.home)
    assert result.code == 0, result.err
    expected = run / f"{audited.ref.replace(':', '-')}-report.html"
    assert expected.is_file() and str(expected) in result.out


def test_unknown_model_is_one_error_line(audited, cli):
    result = cli("report", "nosuchmodel:1", home=audited.home)
    assert result.code != 0
    assert result.err.startswith("error: ") and "nosuchmodel" in result.err
    assert "Traceback" not in result.err


def test_a_run_that_never_finished_is_refused(audited, cli, tmp_path):
    run = tmp_path / "audited-20990101-000000-000000"
    run.mkdir()
    for name in ("config.json", "metrics.jsonl"):
        shutil.copy(audited.run_dir / name, run / name)
    result = cli("report", run, home=audited.home)
    assert result.code != 0
    assert "never finished" in result.err and "--resume" in result.err
    assert not list(run.glob("*.html"))


def test_a_folder_that_is_no_run_is_refused(audited, cli, tmp_path):
    result = cli("report", tmp_path, home=audited.home)
    assert result.code != 0 and "not a training run directory" in result.err


def test_data_file_without_the_target_is_refused(audited, cli, tmp_path):
    import pandas as pd

    data = tmp_path / "unlabelled.csv"
    pd.read_csv(audited.csv).drop(columns=["label"]).head(5).to_csv(data, index=False)
    result = cli("report", audited.ref, "--data", data, "-o", tmp_path / "x.html",
                 home=audited.home)
    assert result.code != 0 and "target column 'label'" in result.err
