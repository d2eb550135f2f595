"""zoo.bench.report: the performance table of docs/benchmarks.md from results files; `zoo bench report`."""

import json
from pathlib import Path

from typer.testing import CliRunner

from zoo.bench import report
from zoo.bench.common import write_document
from zoo.cli import app


def _doc(suite, date, timestamp, quick=False, gpu=None, **body):
    machine = {"cpu": "test cpu", "threads": 1, **({"gpu": gpu} if gpu else {})}
    return {"schema": 1, "suite": suite, "date": date, "timestamp": timestamp, "command": f"zoo bench {suite}", "quick": quick, "machine": machine, **body}


def _latency(ratio_value, date="2026-01-02", timestamp="2026-01-02T10:00:00Z", quick=False):
    cell = {
        "model": "efficientad", "variant": "micro", "graph": "efficientad", "batch": 1,
        "backends": {"eager": {"median_ms": 10.0, "n": 5}, "onnxruntime": {"median_ms": 5.0, "n": 5}},
        "speedup_vs_eager": {"onnxruntime": ratio_value}, "p90_speedup_vs_eager": {"onnxruntime": 1.9},
    }
    return _doc("latency", date, timestamp, quick=quick, settings={"threads": 1}, results=[cell], skipped=[])


def _write(tmp_path, document, name):
    (tmp_path / name).write_text(json.dumps(document))


def test_table_uses_newest_full_run_and_names_suite_and_date(tmp_path):
    _write(tmp_path, _latency(1.5, "2026-01-01", "2026-01-01T10:00:00Z"), "latency-cpu-2026-01-01.json")
    _write(tmp_path, _latency(2.0, "2026-01-02", "2026-01-02T10:00:00Z"), "latency-cpu-2026-01-02.json")
    _write(tmp_path, _latency(9.9, "2026-01-03", "2026-01-03T10:00:00Z", quick=True), "latency-cpu-2026-01-03.json")
    reference = _doc("reference", "2026-01-02", "2026-01-02T11:00:00Z", settings={}, results=[{
        "model": "EfficientAD-S", "ratios": {"anomalib_eager_vs_ours_onnxruntime": 1.7, "anomalib_eager_vs_ours_eager": 1.1, "train_step_anomalib_vs_ours": 0.9},
        "goals_met": {"onnxruntime_vs_anomalib_eager": True, "train_step_anomalib_vs_ours": False},
    }])
    _write(tmp_path, reference, "reference-cpu-2026-01-02.json")
    gpu_dry_run = _doc("gpu", "2026-01-02", "2026-01-02T12:00:00Z", summary={"efficientad-micro": {"best_latency_ms": 3.0, "best_latency_config": "fp32 eager"}})
    _write(tmp_path, gpu_dry_run, "gpu-cpu-2026-01-02.json")
    gpu = _doc("gpu", "2026-01-04", "2026-01-04T12:00:00Z", gpu="NVIDIA H200", summary={"efficientad-s": {
        "best_latency_ms": 0.8, "best_latency_config": "fp16 cuda_graph", "paper_latency_ms": 2.0, "goal_ms": 1.0, "goal_met": True,
        "best_images_per_s": 9000.0, "best_throughput_config": "fp16 cuda_graph b64", "paper_images_per_s": 600.0}}, others=[])
    _write(tmp_path, gpu, "gpu-h200-2026-01-04.json")

    table = report.render_table(tmp_path)
    rows = [line for line in table.splitlines() if line.startswith("| ") and "Model" not in line]
    latency_rows = [r for r in rows if "`latency`" in r]
    assert len(latency_rows) == 1 and "×2.0" in latency_rows[0] and "2026-01-02" in latency_rows[0]  # newest full run only
    assert not any("×9.9" in r for r in rows)  # quick runs never reach the table
    assert any("anomalib eager / ours ONNX Runtime" in r and "×1.7" in r and "met" in r for r in rows)
    assert any("one training step" in r and "not met" in r for r in rows)
    assert any("0.8 ms" in r and "NVIDIA H200" in r and "2026-01-04" in r for r in rows)
    assert not any("3.0 ms" in r for r in rows)  # CPU dry runs of the GPU script are not figures
    assert all(r.count("`") >= 2 and "20" in r.split("|")[-2] for r in rows)  # every row names suite and date
    # reference rows come before latency rows (the table's suite order)
    assert rows.index(next(r for r in rows if "`reference`" in r)) < rows.index(latency_rows[0])


def test_other_suites_bring_their_own_rows(tmp_path):
    quality = _doc("efficientad-quality", "2026-01-05", "2026-01-05T10:00:00Z", results={}, table_rows=[["EfficientAD micro", "image AUROC, parts", "0.84"]])
    _write(tmp_path, quality, "efficientad-quality-2026-01-05.json")
    _write(tmp_path, _doc("other", "2026-01-05", "2026-01-05T10:00:00Z", results={}), "other-2026-01-05.json")
    _write(tmp_path, {"not": "a results document"}, "stray.json")
    rows = [line for line in report.render_table(tmp_path).splitlines() if line.startswith("| EfficientAD")]
    assert rows == ["| EfficientAD micro | image AUROC, parts | 0.84 |  | `efficientad-quality` · 2026-01-05 · CPU, 1 thread ([json](efficientad-quality-2026-01-05.json)) |"]


def test_update_readme_replaces_only_between_markers(tmp_path):
    results = tmp_path / "bench" / "results"
    results.mkdir(parents=True)
    _write(results, _latency(2.0), "latency-cpu-2026-01-02.json")
    readme = tmp_path / "README.md"
    readme.write_text(f"# zoo\nintro\n{report.START}\nold table\n{report.END}\nafter\n")
    assert report.update_readme(readme, results)
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# zoo\nintro\n") and text.endswith(f"{report.END}\nafter\n")
    assert "(`bench/results/latency-cpu-2026-01-02.json`)" in text  # named from the page's folder, as code
    assert "](" not in text  # no link: the strict docs build fails on links outside the site
    plain = tmp_path / "PLAIN.md"
    plain.write_text("no markers\n")
    assert not report.update_readme(plain, results) and plain.read_text() == "no markers\n"


def test_cli_bench_report_json(tmp_path):
    write_document(_latency(2.0), tmp_path)
    result = CliRunner().invoke(app, ["bench", "report", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["suite"] == "report" and "×2.0" in document["table"]
    assert (tmp_path / "TABLE.md").read_text() == document["table"]
    assert document["readme_updated"] is False  # a scratch folder's table never reaches the benchmarks page
    assert report.README == Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"
    assert str(tmp_path) not in report.README.read_text()


def test_project_page_names_results_from_the_repository_root(tmp_path):
    """The real page: results under bench/results/ are named `bench/results/NAME.json` (repository root)."""
    from zoo.bench.common import RESULTS_DIR

    page = tmp_path / "benchmarks.md"
    page.write_text(f"{report.START}\n{report.END}\n")
    assert report.update_readme(page, RESULTS_DIR)
    text = page.read_text()
    names = sorted(p.name for p in RESULTS_DIR.glob("*.json"))
    assert "](" not in text and any(f"`bench/results/{n}`" in text for n in names)


def test_cli_bench_unknown_suite():
    result = CliRunner().invoke(app, ["bench", "nope"])
    assert result.exit_code == 2
    assert "unknown suite" in result.output
