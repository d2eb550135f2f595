"""The performance table of docs/benchmarks.md, generated from bench/results/*.json.

Every row names the suite, the date and the device that produced its figure. For each suite
and device the newest full run (not `--quick`) is used. On CPU only ratios are shown (our CPUs
are shared and noisy); absolute times and throughputs appear for GPU runs.

    zoo bench report                      # writes bench/results/TABLE.md, updates docs/benchmarks.md
    python -m zoo.bench.report --readme docs/benchmarks.md

Suites without a row maker here (a family's quality benchmark, say) appear when their document
carries `"table_rows": [[model, measure, value, goal], ...]`.

docs/benchmarks.md (`README` below; the table lived in the README before the docs site) holds the
table between the markers `<!-- bench-table:start -->` and `<!-- bench-table:end -->`;
`update_readme` replaces what lies between them. There, results files are named as code
(`bench/results/NAME.json`), not linked: they lie outside the site, whose strict build fails on
links it cannot follow.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from zoo.bench.common import RESULTS_DIR, device_tag, log, machine_info, new_document

START = "<!-- bench-table:start -->"
END = "<!-- bench-table:end -->"
README = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"  # the page holding the table
SUITE_ORDER = ("reference", "latency", "serving", "flops", "gpu", "gpu-models")
HEADER = "| Model | Measure | Value | Goal | Source |\n|---|---|---|---|---|"


def load_documents(results_dir: str | Path = RESULTS_DIR) -> list[dict[str, Any]]:
    """Every readable results document (quick runs and unreadable files skipped, with a note)."""
    out = []
    for path in sorted(Path(results_dir).glob("*.json")):
        try:
            document = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            log(f"report: skipping {path.name}: {err}")
            continue
        if not isinstance(document, dict) or not {"suite", "date"} <= set(document) or document.get("quick"):
            continue
        if not isinstance(document.get("machine"), dict):
            document["machine"] = {}
        document["_file"] = path.name
        out.append(document)
    return out


def latest(documents: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest document per (suite, device), in the table's suite order."""
    newest: dict[tuple[str, str], dict[str, Any]] = {}
    for document in documents:
        if document["suite"] in ("gpu", "gpu-models") and not document.get("machine", {}).get("gpu"):
            continue  # a CPU dry run of the GPU script measures nothing worth a row
        key = (document["suite"], device_tag(document.get("machine", {})))
        if key not in newest or document.get("timestamp", "") > newest[key].get("timestamp", ""):
            newest[key] = document
    order = {name: i for i, name in enumerate(SUITE_ORDER)}
    return sorted(newest.values(), key=lambda d: (order.get(d["suite"], 99), d.get("timestamp", "")))


def source(document: dict[str, Any]) -> str:
    """`suite, date, device` plus the results file, for the table's Source column."""
    machine = document.get("machine", {})
    threads = machine.get("threads", "?")
    where = machine.get("gpu") or f"CPU, {threads} thread{'' if threads == 1 else 's'}"
    text = f"`{document['suite']}` · {document['date']} · {where}"
    return text + (f" ([json]({document['_file']}))" if "_file" in document else "")


def _x(value: Any) -> str:
    return "-" if value is None else f"×{value}"


def _goal(text: str, met: bool | None) -> str:
    return f"{text} ({'not measured' if met is None else ('met' if met else 'not met')})"


def _model(name: str, variant: str = "") -> str:
    pretty = {"efficientad": "EfficientAD"}.get(name, name)
    return f"{pretty}-{variant.upper()}" if variant in ("s", "m") else (f"{pretty} {variant}" if variant else pretty)


def rows_reference(d: dict[str, Any]) -> list[list[str]]:
    rows = []
    for e in d["results"]:
        r, met = e.get("ratios", {}), e.get("goals_met", {})
        name = e["model"]
        rows.append([name, "anomalib eager / ours ONNX Runtime, inference b1", _x(r.get("anomalib_eager_vs_ours_onnxruntime")),
                     _goal("≥ ×1.5", met.get("onnxruntime_vs_anomalib_eager"))])
        rows.append([name, "anomalib eager / ours eager, inference b1", _x(r.get("anomalib_eager_vs_ours_eager")), ""])
        rows.append([name, "anomalib / ours, one training step", _x(r.get("train_step_anomalib_vs_ours")), _goal("≥ ×1.0", met.get("train_step_anomalib_vs_ours"))])
    return rows


def rows_latency(d: dict[str, Any]) -> list[list[str]]:
    rows = []
    for e in d["results"]:
        name = _model(e["model"], e["variant"]) + (f" ({e['graph']})" if e["graph"] != e["model"] else "")
        for backend, label in (("compile", "torch.compile"), ("onnxruntime", "ONNX Runtime")):
            if backend in e["speedup_vs_eager"]:
                rows.append([name, f"{label} speedup over eager, b{e['batch']} (median; p90 {_x(e['p90_speedup_vs_eager'].get(backend))})", _x(e["speedup_vs_eager"][backend]), ""])
    return rows


def rows_serving(d: dict[str, Any]) -> list[list[str]]:
    s, r, met = d["settings"], d["ratios"], d.get("goals_met", {})
    top = max(s["concurrency"])
    name = _model(s["model"], s["variant"])
    rows = [
        [name, f"throughput, batching on / off, concurrency {top}", _x(r.get(f"batching_throughput_gain_c{top}")), _goal("≥ ×1.5", met.get("batching_gain"))],
        [name, "server p50 / in-process call, concurrency 1", _x(r.get("server_p50_over_in_process")), _goal("≤ ×1.2", met.get("server_overhead"))],
    ]
    if f"throughput_c{top}_over_c1" in r:  # runs with server instances (--instances)
        rows.append([name, f"throughput, concurrency {top} / 1, {s.get('instances', 1)} instances, batching on", _x(r.get(f"throughput_c{top}_over_c1")),
                     _goal("≥ ×1.7", met.get("scaling"))])
        gains = [r.get(f"batching_throughput_gain_c{c}") for c in s["concurrency"]]
        low = min((g for g in gains if g is not None), default=None)
        rows.append([name, "throughput, batching on / off, lowest over concurrency " + ", ".join(str(c) for c in s["concurrency"]), _x(low),
                     _goal("≥ ×1.0", met.get("batching_never_loses"))])
    if str(s.get("device", "cpu")).startswith("cuda"):
        res = d["results"]
        rows.append([name, f"throughput, batching on, concurrency {top}", f"{res.get(f'batching_on_c{top}', {}).get('throughput_rps')} req/s", ""])
    return rows


def rows_flops(d: dict[str, Any]) -> list[list[str]]:
    rows = []
    for e in d["results"]:
        name = _model(e["model"], e["variant"]) + (f" ({e['graph']})" if e["graph"] != e["model"] else "")
        if e["batch"] == 1:
            rows.append([name, "GFLOP per image (torch flop counter)", f"{e['gflops_per_image']}", ""])
        rows.append([name, f"share of fp32 matmul peak reached, b{e['batch']}", f"{e['fraction_of_peak']:.0%}", ""])
    return rows


def rows_gpu(d: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, e in d.get("summary", {}).items():
        variant = name.split("-")[-1]
        label = _model("efficientad", variant)
        if "best_latency_ms" in e:
            paper = f"; paper {e['paper_latency_ms']} ms on an RTX A6000" if "paper_latency_ms" in e else ""
            goal = _goal(f"< {e['goal_ms']} ms", e.get("goal_met")) if "goal_ms" in e else ""
            rows.append([label, f"latency b1, best ({e['best_latency_config']}){paper}", f"{e['best_latency_ms']} ms", goal])
        if "best_images_per_s" in e:
            paper = f"; paper {e['paper_images_per_s']:.0f} images/s" if "paper_images_per_s" in e else ""
            rows.append([label, f"throughput, best ({e['best_throughput_config']}){paper}", f"{e['best_images_per_s']:.0f} images/s", ""])
    for e in d.get("others", []):
        if "median_ms" in e:
            rows.append([_model(e["model"], e["variant"]) + f" ({e['graph']})", f"latency b1, {e['mode']}", f"{e['median_ms']} ms", ""])
    return rows


def _given_rows(d: dict[str, Any]) -> list[list[str]]:
    """Other suites (e.g. a family's quality benchmark) put their rows in the document itself:
    `"table_rows": [[model, measure, value, goal], ...]`; without them they stay out of the table."""
    rows = d.get("table_rows") or []
    return [[str(c) for c in (list(row) + ["", "", "", ""])[:4]] for row in rows if isinstance(row, (list, tuple))]


ROWS = {"reference": rows_reference, "latency": rows_latency, "serving": rows_serving, "flops": rows_flops, "gpu": rows_gpu,
        "gpu-models": rows_gpu}


def render_table(results_dir: str | Path = RESULTS_DIR) -> str:
    """The performance table (markdown), newest full run per suite and device."""
    lines = [HEADER]
    for document in latest(load_documents(results_dir)):
        make = ROWS.get(document["suite"], _given_rows)
        where = source(document)
        for row in make(document):
            lines.append("| " + " | ".join([*row, where]) + " |")
    if len(lines) == 1:
        lines.append("| - | no full benchmark run yet: `zoo bench SUITE` writes bench/results/ | - | - | - |")
    notes = (
        "Ratios are medians of interleaved rounds measured side by side in one run (×2 = twice as fast); "
        "absolute times only from GPU runs. Regenerate with `zoo bench report`."
    )
    return "\n".join(lines) + "\n\n" + notes + "\n"


def write_table(results_dir: str | Path = RESULTS_DIR, path: str | Path | None = None) -> Path:
    """Write TABLE.md (the benchmarks page's table, links relative to the results folder)."""
    path = Path(path) if path else Path(results_dir) / "TABLE.md"
    path.write_text(render_table(results_dir))
    return path


def update_readme(readme: str | Path = README, results_dir: str | Path = RESULTS_DIR) -> bool:
    """Replace the table between the page's markers (docs/benchmarks.md by default); False (and nothing written) without them."""
    readme = Path(readme)
    if not readme.is_file():
        return False
    text = readme.read_text()
    if START not in text or END not in text:
        return False
    table = render_table(results_dir)
    rel = Path(results_dir).resolve()
    # the results folder as the repository names it, else as seen from the page's folder
    base = next((b for b in (README.parents[1], readme.resolve().parent) if rel.is_relative_to(b)), None)
    prefix = (rel.relative_to(base) if base else rel).as_posix() + "/"
    table = re.sub(r"\[json\]\(([^)/]+\.json)\)", lambda m: f"`{prefix}{m.group(1)}`", table)
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    readme.write_text(pattern.sub(lambda _: f"{START}\n{table}{END}", text, count=1))
    return True


def run(out_dir: str | Path | None = None, readme: str | Path | None = README, command: str | None = None, **_: Any) -> dict[str, Any]:
    """`zoo bench report`: TABLE.md from the results folder (or `out_dir`), docs/benchmarks.md if it has the markers."""
    results_dir = Path(out_dir) if out_dir is not None else RESULTS_DIR
    path = write_table(results_dir)
    # The benchmarks page shows the project's own results only: a table from another folder (a test's,
    # a scratch run's) never lands in it.
    official = results_dir.resolve() == RESULTS_DIR.resolve()
    updated = update_readme(readme, results_dir) if readme and official else False
    log(f"report: wrote {path}" + (f" and updated {readme}" if updated else f"; {readme} has no {START} marker, left alone"))
    document = new_document("report", quick=False, machine=machine_info(), command=command)
    document.update({"table_path": str(path), "readme_updated": updated, "table": path.read_text()})
    return document


def render(document: dict[str, Any]) -> str:
    return document["table"]


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m zoo.bench.report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    print(render(run(out_dir=args.results, readme=args.readme)))


if __name__ == "__main__":
    main()
