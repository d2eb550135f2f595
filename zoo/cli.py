"""The `zoo` command: the composition root.

The only module that may import every layer, and only lazily inside the subcommand that
needs it, so `zoo list` stays fast. `--json` prints one JSON document on stdout and nothing
else (logs and progress go to stderr).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="zoo: vision model zoo (train, predict, export, serve).")
log = logging.getLogger("zoo")


def _emit_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
    sys.stdout.flush()


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _parse_pairs(pairs: list[str] | None, flag: str) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for pair in pairs or []:
        if "=" not in pair:
            _fail(f"{flag} expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        parsed[key.strip()] = value.strip()
    return parsed


def _card_or_fail(name: str):
    from zoo.registry import get_card

    try:
        return get_card(name)
    except KeyError as err:
        _fail(str(err.args[0]))


@app.command("list")
def list_command(
    task: str | None = typer.Option(None, "--task", help="Only models for this task (e.g. anomaly-detection)."),
    as_json: bool = typer.Option(False, "--json", help="Print the cards as JSON."),
) -> None:
    """List the registered models."""
    from zoo.registry import list_models

    cards = list_models(task)
    if as_json:
        _emit_json([card.to_json() for card in cards])
        return
    for card in cards:
        typer.echo(f"{card.name:<14} {card.task:<22} {card.title} ({card.year})  variants: {', '.join(card.variants)}")


@app.command("info")
def info_command(
    name: str = typer.Argument(..., help="Model name (see `zoo list`)."),
    as_json: bool = typer.Option(False, "--json", help="Print the card as JSON."),
) -> None:
    """Show a model's card, with each variant's parameter counts (computed on the meta device)."""
    card = _card_or_fail(name)
    document = card.to_json(with_params=True)
    if as_json:
        _emit_json(document)
        return
    typer.echo(f"{card.name}: {card.title} ({card.year}), arXiv {card.arxiv}")
    typer.echo(f"  task: {card.task}   result: {card.result_type}   repo: {card.repo} ({card.license})")
    typer.echo(f"  {card.summary}")
    for vname, entry in document["variants"].items():
        params = ", ".join(f"{k} {v:,}" for k, v in entry["params"].items())
        demo = "  [demo weights]" if entry["demo_weights"] else ""
        typer.echo(f"  variant {vname}: {params}{demo}")
        if entry.get("paper_table_params"):
            table = entry["paper_table_params"]
            typer.echo(f"    paper's count: {table['total']:,} ({table['how']})")
        for stage, memory in entry.get("training_memory", {}).items():
            from zoo.memory import format_bytes

            full, ckpt = memory["bytes"], memory["bytes_checkpointing"]
            typer.echo(f"    training memory ({stage}, batch {memory['batch_size']}, fp32 Adam + EMA): {format_bytes(full['total'])} "
                       f"(activations {format_bytes(full['activations'])}); with --set grad_checkpointing=true "
                       f"{format_bytes(ckpt['total'])}")
    typer.echo(f"  inputs: {', '.join(_field_line(i) for i in card.inputs) or 'none (a generator: options only)'}")
    for option in card.options:
        typer.echo(f"  option {_field_line(option)}: {option.help}" if option.help else f"  option {_field_line(option)}")
    typer.echo(f"  graphs: {', '.join(card.graphs)}   train stages: {', '.join(card.train_stages)}")
    for metric in card.metrics:
        typer.echo(f"  measured {metric.name} = {metric.value:.4g} ({metric.variant}, {metric.data}; `{metric.command}`, {metric.date})")


def _field_line(spec: Any) -> str:
    """An input or option in one phrase: name (kind, default, range, choices)."""
    parts = [spec.kind]
    if getattr(spec, "required", True) is False or getattr(spec, "default", None) is not None:
        parts.append(f"default {spec.default}" if spec.default is not None and not hasattr(spec.default, "shape") else "optional")
    if spec.minimum is not None or spec.maximum is not None:
        low, high = spec.minimum, spec.maximum
        span = f"{low}..{high}" if low is not None and high is not None else (f">= {low}" if low is not None else f"<= {high}")
        parts.append({"text": f"length {span}", "boxes": f"{span} boxes", "polygons": f"{span} polygons"}.get(spec.kind, span))
    if spec.choices:
        parts.append("|".join(spec.choices))
    return f"{spec.name} ({', '.join(parts)})"


@app.command("train")
def train_command(
    name: str = typer.Argument(..., help="Model name."),
    variant: str | None = typer.Option(None, "--variant", help="Variant to train (default: the card's default)."),
    data: str = typer.Option("synthetic", "--data", help="'synthetic' (procedural data, written in the real format) or a dataset path."),
    steps: int | None = typer.Option(None, "--steps", help="Training steps (default: the paper's)."),
    seed: int = typer.Option(0, "--seed", help="Seed for weights, data order and augmentation."),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default runs/NAME-VARIANT-STAGE)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in --out."),
    sets: list[str] | None = typer.Option(None, "--set", help="Override a hyperparameter: key=value (repeatable)."),
    stage: str | None = typer.Option(None, "--stage", help="Training stage (default: the card's first)."),
    weights: str | None = typer.Option(None, "--weights", help="Start from these weights (fine-tuning)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda[:N]."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar on stderr."),
    as_json: bool = typer.Option(False, "--json", help="Print the run summary as JSON."),
) -> None:
    """Train or fine-tune a model with the paper's losses; writes OUT/model.safetensors, model.json, log.jsonl, checkpoints/."""
    import torch

    from zoo.registry import create_model
    from zoo.training import NonFiniteLossError, RunExistsError, Trainer
    from zoo.training.distributed import DistContext
    from zoo.weights import WeightsError, save_weights

    card = _card_or_fail(name)
    variant = variant or card.default_variant
    if variant not in card.variants:
        _fail(f"model {name!r} has no variant {variant!r}; variants: {', '.join(card.variants)}")
    if not card.train_stages:
        _fail(f"model {name!r} has no training stages")
    stage = stage or next(iter(card.train_stages))
    if stage not in card.train_stages:
        _fail(f"model {name!r} has no stage {stage!r}; stages: {', '.join(card.train_stages)}")
    spec = card.train_stages[stage]
    out = out or Path("runs") / f"{name}-{variant}-{stage}"
    if data != "synthetic" and not Path(data).exists():
        _fail(f"--data {data}: no such path (use 'synthetic' for procedural data)")

    config = spec.config_cls()
    try:
        config = config.override({k: str(v) for k, v in spec.variant_defaults.get(variant, {}).items()})
        config = config.override(_parse_pairs(sets, "--set"))
    except ValueError as err:
        _fail(str(err))
    if steps is not None:
        if steps <= 0:
            _fail("--steps must be positive")
        config = config.override({"steps": str(steps)})

    # Seed before the model exists: its random initialisation (and everything up to the loop,
    # which reseeds with seed + rank) must be a function of --seed alone.
    torch_seed(seed)
    try:
        pipeline = create_model(name, variant, weights=weights or "random", device="cpu")
    except (WeightsError, FileNotFoundError) as err:
        _fail(str(err))
    command = "zoo " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    # Under torchrun every rank builds the task, rank 0 first: it writes the synthetic data into
    # the one --out folder, and the other ranks then find it there and reuse it.
    ranks = DistContext.from_env(torch.device(device))
    ranks.device(device)
    with ranks.main_first():
        task = spec.build_task(pipeline.model, data, config, seed, Path(out))
    run_info = {"model": name, "variant": variant, "stage": stage, "data": data, "seed": seed, "command": command}
    trainer = Trainer(task, out, seed=seed, resume=resume, device=device, progress=progress and not as_json, run_info=run_info)
    started = time.time()
    try:
        result = trainer.fit()
    except (RunExistsError, FileNotFoundError, NonFiniteLossError) as err:
        _fail(str(err))
    if int(os.environ.get("RANK", "0")) != 0:
        return
    import dataclasses

    from zoo.registry import json_safe

    metadata = {
        **run_info,
        "config": json_safe(dataclasses.asdict(pipeline.config)),
        "train_config": json_safe(config.to_dict()),
        "metrics": result.metrics,
        "steps": result.steps_done,
        "seconds": round(time.time() - started, 1),
        "date": time.strftime("%Y-%m-%d"),
    }
    path = save_weights(result.module, Path(out) / "model.safetensors", metadata)
    summary = {"weights": str(path), **metadata}
    if as_json:
        _emit_json(summary)
    else:
        typer.echo(f"saved {path}")
        for key, value in result.metrics.items():
            typer.echo(f"  {key}: {value:.4f}" if isinstance(value, float) else f"  {key}: {value}")


def torch_seed(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@app.command("predict")
def predict_command(
    name: str = typer.Argument(..., help="Model name."),
    inputs: list[str] | None = typer.Argument(None, help="Images for the model's image input, one result each (paths, or skimage:NAME); none for a generator."),
    prompt: str | None = typer.Option(None, "--prompt", help="Text for the model's text input (see `zoo info NAME`)."),
    named: list[str] | None = typer.Option(None, "--input", help="Any input by name, name=value: an image path, text, or JSON for boxes/polygons (repeatable)."),
    count: int = typer.Option(1, "--count", help="How many results a model without image inputs makes (a generator: seeds S, S+1, ...)."),
    variant: str | None = typer.Option(None, "--variant", help="Variant (default: the card's default)."),
    weights: str | None = typer.Option(None, "--weights", help="Weights: a path, a store name, 'random'; default: bundled demo weights."),
    random_weights: bool = typer.Option(False, "--random-weights", help="Random initialisation (what --weights random does); needed for a variant without bundled weights."),
    backend: str = typer.Option("torch", "--backend", help="torch, onnxruntime or openvino (both need --export-dir)."),
    export_dir: Path | None = typer.Option(None, "--export-dir", help="Folder written by `zoo export` (for --backend onnxruntime)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda[:N]."),
    opts: list[str] | None = typer.Option(None, "--opt", help="Model option key=value (see `zoo info NAME`)."),
    as_json: bool = typer.Option(False, "--json", help="Print results as JSON."),
    out: Path | None = typer.Option(None, "--out", help="Write the drawn result here (PNG); several results get -0, -1, ... suffixes."),
) -> None:
    """Run a model on its typed inputs (images, --prompt, --input name=value) and print (or draw) the results."""
    from zoo.imageio import ImageDecodeError
    from zoo.registry import create_model
    from zoo.weights import WeightsError

    card = _card_or_fail(name)
    try:
        options = card.parse_options(_parse_pairs(opts, "--opt"))
        items, labels, drawn_on = _predict_items(card, list(inputs or []), prompt, _parse_pairs(named, "--input"), count)
    except (ValueError, ImageDecodeError) as err:  # ImageDecodeError is a ValueError; named for the reader
        _fail(str(err))
    backend_options: dict[str, Any] = {}
    if export_dir is not None:
        backend_options["export_dir"] = export_dir
    try:
        pipeline = create_model(name, variant, weights=_weights(weights, random_weights), backend=backend, device=device, **backend_options)
    except (WeightsError, FileNotFoundError, ValueError) as err:
        _fail(str(err))
    try:
        results = pipeline.predict(items, **options)
    except ValueError as err:
        _fail(f"{name}: {err}")
    documents = [{"input": label, **result.to_json()} for label, result in zip(labels, results)]
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        for index, (image, result) in enumerate(zip(drawn_on, results)):
            target = out if len(results) == 1 else out.with_name(f"{out.stem}-{index}{out.suffix or '.png'}")
            result.draw(image).save(target)
    if as_json:
        _emit_json({"model": name, "variant": pipeline.variant, "backend": pipeline.backend, "results": documents})
        return
    for index, document in enumerate(documents):
        label = document["input"] if document["input"] is not None else f"result {index}"
        typer.echo(f"{label}: {document.get('type', type(results[index]).__name__)}")
        for line in summary_lines({k: v for k, v in document.items() if k not in ("input", "type")}):
            typer.echo("  " + line)
    if out is not None:
        typer.echo(f"drawn: {out}" if len(results) == 1 else f"drawn: {out.stem}-0..{len(results) - 1}{out.suffix or '.png'} beside {out}")


def _predict_items(card: Any, positional: list[str], prompt: str | None, named: dict[str, str], count: int) -> tuple[list[Any], list[str | None], list[Any]]:
    """The card's typed inputs from the command line: (predict items, a label per item, the
    image each result is drawn over). Positional INPUTs feed the first image input, one item
    each; --prompt the first text input; --input any input by name (shared by every item)."""
    from zoo.imageio import load_image

    images, texts = card.image_inputs, [spec for spec in card.inputs if spec.kind == "text"]
    if positional and not images:
        kinds = ", ".join(f"{i.name} ({i.kind})" for i in card.inputs) or "none (a generator: set --opt seed=... and --count)"
        raise ValueError(f"model {card.name!r} takes no image INPUT arguments; its inputs: {kinds}")
    if prompt is not None:
        if not texts:
            raise ValueError(f"model {card.name!r} has no text input for --prompt; inputs: {', '.join(i.name for i in card.inputs) or 'none'}")
        if texts[0].name in named:
            raise ValueError(f"input {texts[0].name!r} given twice (--prompt and --input)")
        named = {**named, texts[0].name: prompt}
    if positional and images[0].name in named:
        raise ValueError(f"input {images[0].name!r} given twice (INPUT arguments and --input)")
    if count < 1 or (positional and count != 1):
        raise ValueError("--count must be >= 1, and is for models without image INPUT arguments (each INPUT makes one result)")
    shared = {}
    for key, value in named.items():
        shared[key] = load_image(value) if card.input(key).is_image else value
    rows = [{**shared, images[0].name: load_image(path)} for path in positional] if positional else [dict(shared) for _ in range(count)]
    items = [card.pipeline_input(card.parse_inputs(row)) for row in rows]
    labels: list[str | None] = list(positional) if positional else [None] * count
    drawn_on = [row.get(images[0].name) if images else None for row in rows]
    return items, labels, drawn_on


def summary_lines(document: Any) -> list[str]:
    """A result's JSON as readable lines: numbers rounded, long lists summarised, lists of
    records one a line, and base64 images named, never printed (`--json` has everything)."""
    lines: list[str] = []
    for key, value in document.items():
        if key.endswith("_base64"):
            count = len(value) if isinstance(value, list) else 1
            lines.append(f"{key.removesuffix('_base64')}: {count} image(s), not printed (--out FILE draws them, --json carries them)")
        elif isinstance(value, dict) and value and all(not isinstance(v, (dict, list)) for v in value.values()):
            lines.append(f"{key}: " + ", ".join(f"{k}={_scalar(v)}" for k, v in value.items()))
        elif isinstance(value, dict):
            lines.append(f"{key}:" + ("" if value else " none"))
            lines.extend("  " + line for line in summary_lines(value))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"{key}: {len(value)}")
            lines.extend(f"  - {', '.join(f'{k}={_compact(v)}' for k, v in item.items())}" for item in value)
        else:
            lines.append(f"{key}: {_compact(value)}")
    return lines


def _scalar(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _compact(value: Any) -> str:
    """A value on one line: short number lists in full, long ones as count and range."""
    if not isinstance(value, list):
        return _scalar(value)
    flat = _flatten(value)
    if len(flat) > 12:
        numbers = [v for v in flat if isinstance(v, (int, float)) and not isinstance(v, bool)]
        span = f", {_scalar(min(numbers))}..{_scalar(max(numbers))}" if numbers else ""
        return f"{len(flat)} values{span}"
    if all(isinstance(v, list) and all(isinstance(x, int) for x in v) for v in value) and value:
        return ", ".join("x".join(str(x) for x in v) for v in value)  # shapes: 8x8x3
    return "[" + ", ".join(_compact(v) for v in value) + "]"


def _flatten(value: Any) -> list[Any]:
    if not isinstance(value, list):
        return [value]
    return [leaf for item in value for leaf in _flatten(item)]


@app.command("export")
def export_command(
    name: str = typer.Argument(..., help="Model name."),
    fmt: str = typer.Option(..., "--format", help="onnx | onnx-fp16 | onnx-int8 | openvino | openvino-bf16 | openvino-int8 | tensorrt | triton."),
    out: Path = typer.Option(..., "--out", help="Output folder (for triton: the model repository)."),
    variant: str | None = typer.Option(None, "--variant", help="Variant (default: the card's default)."),
    weights: str | None = typer.Option(None, "--weights", help="Weights: a path, a store name, 'random'; default: bundled demo weights."),
    random_weights: bool = typer.Option(False, "--random-weights", help="Random initialisation (what --weights random does); needed for a variant without bundled weights."),
    exporter: str = typer.Option("auto", "--exporter", help="auto (torch.export, falling back to TorchScript) | dynamo | torchscript."),
    precision: str | None = typer.Option(None, "--precision", help="fp32 | fp16 for tensorrt (default fp16) and triton (default fp32)."),
    triton_backend: str = typer.Option("onnxruntime", "--triton-backend", help="triton: serve ONNX (onnxruntime) or TensorRT plans (tensorrt)."),
    instance_kind: str = typer.Option("auto", "--instance-kind", help="triton instance_group kind: auto | cpu | gpu."),
    as_json: bool = typer.Option(False, "--json", help="Print export.json on stdout."),
) -> None:
    """Export a model's graphs, check them against PyTorch, write OUT/export.json with the figures."""
    from zoo.export import FORMATS, ExportError, ParityError, export_model, summary_lines
    from zoo.weights import WeightsError

    _card_or_fail(name)
    if fmt not in FORMATS:
        _fail(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    try:
        manifest = export_model(
            name, fmt, out, variant=variant, weights=_weights(weights, random_weights), exporter=exporter, precision=precision,
            triton_backend=triton_backend, instance_kind=instance_kind,
        )
    except ParityError as err:
        if as_json:
            _emit_json({"error": str(err), **err.report.get("manifest", {})})
        typer.echo(f"error: export parity check failed; figures in {out / 'export.json'}\n{err}", err=True)
        raise typer.Exit(1) from err
    except (ExportError, WeightsError, FileNotFoundError, ValueError) as err:
        _fail(str(err))
    if as_json:
        _emit_json(manifest)
        return
    for line in summary_lines(manifest):
        typer.echo(line)
    typer.echo(f"wrote {out / 'export.json'}")


@app.command("serve")
def serve_command(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; anything but loopback needs --api-key."),
    port: int = typer.Option(8000, "--port", help="Port to bind."),
    models: str | None = typer.Option(None, "--models", help="Comma-separated models to serve, NAME or NAME:VARIANT (default: every registered model)."),
    backend: str = typer.Option("torch", "--backend", help="torch, onnxruntime or openvino (both need --export-dir)."),
    export_dir: Path | None = typer.Option(None, "--export-dir", help="Folder written by `zoo export` (DIR/NAME per model, or one model's folder)."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="ZOO_API_KEY", help="Require this key (Authorization: Bearer KEY or X-API-Key); env ZOO_API_KEY."),
    max_batch_size: int = typer.Option(8, "--max-batch-size", help="Dynamic batching: rows per execution (1 turns batching off)."),
    max_queue_delay_ms: float = typer.Option(0.0, "--max-queue-delay-ms", help="Dynamic batching: how long a request may wait for company "
                                              "(0, as Triton: batches form from requests that queued while the last batch ran)."),
    queue_size: int = typer.Option(64, "--queue-size", help="Requests waiting per graph before 503 + Retry-After."),
    timeout_s: float = typer.Option(30.0, "--timeout-s", help="Per-request timeout (queue + compute) before 504."),
    instances: int | None = typer.Option(None, "--instances", help="Batches of one graph run at once, each on its share of the cores "
                                          "(Triton's instance_group count; default: one per core up to 4 on a CPU, 1 on a GPU)."),
    no_demo: bool = typer.Option(False, "--no-demo", help="Do not mount the Gradio demo at /demo."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda[:N]."),
    max_body_mb: float = typer.Option(64.0, "--max-body-mb", help="Largest request body (413 above)."),
    max_image_pixels: int | None = typer.Option(None, "--max-image-pixels", help="Largest image (width x height) an upload may declare (413 above)."),
    random_weights: bool = typer.Option(False, "--random-weights", help="Serve every model with random initialisation (a variant without bundled weights is refused otherwise)."),
) -> None:
    """Serve every model over HTTP: Open Inference Protocol v2 (tritonclient works), REST, /metrics, the demo at /demo."""
    from zoo.serving import BatchingConfig, Limits, ServeOptions, serve

    try:
        from zoo.serving.batching import default_instances

        batching = BatchingConfig(max_batch_size=max_batch_size, max_queue_delay_s=max_queue_delay_ms / 1000.0, queue_size=queue_size, timeout_s=timeout_s,
                                  instances=instances if instances is not None else default_instances(device))
        limits = Limits(max_body_bytes=int(max_body_mb * 1024 * 1024), **({"max_image_pixels": max_image_pixels} if max_image_pixels else {}))
    except ValueError as err:
        _fail(str(err))
    demo_factory = None
    if not no_demo:
        from zoo.demos import build_demo

        def demo_factory(manager):  # noqa: ANN001 - the server hands over its loaded models
            return build_demo(list(manager.entries), get_pipeline=manager.pipeline)

    options = ServeOptions(
        host=host, port=port, models=models, backend=backend, device=device, export_dir=str(export_dir) if export_dir else None,
        api_key=api_key, batching=batching, limits=limits, demo=demo_factory, random_weights=random_weights,
    )
    if not random_weights:
        _require_bundled_weights(models)
    try:
        serve(options, echo=typer.echo)
    except ValueError as err:
        _fail(str(err))


@app.command("demo")
def demo_command(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; anything but loopback needs --api-key."),
    port: int = typer.Option(7860, "--port", help="Port to bind."),
    models: str | None = typer.Option(None, "--models", help="Comma-separated models, NAME or NAME:VARIANT (default: every registered model)."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="ZOO_API_KEY", help="Login 'zoo' with this key as the password; env ZOO_API_KEY."),
    random_weights: bool = typer.Option(False, "--random-weights", help="Every model with random initialisation (a variant without bundled weights is refused otherwise)."),
) -> None:
    """Run the Gradio demo alone: a tab per model, bundled demo weights and examples."""
    from zoo.demos import launch_demo

    typer.echo(f"zoo demo: http://{host}:{port}/")
    try:
        launch_demo(host=host, port=port, models=models, api_key=api_key, random_weights=random_weights)
    except ValueError as err:
        _fail(str(err))


def _weights(weights: str | None, random_weights: bool) -> str | None:
    """--weights W or --random-weights (the same as --weights random), not both."""
    if random_weights and weights not in (None, "random"):
        _fail(f"--random-weights and --weights {weights} exclude each other")
    return "random" if random_weights else weights


def _require_bundled_weights(models: str | None) -> None:
    """Models named on the command line must have bundled weights, or the user asks for random
    ones: fail before serving rather than serve random weights (or a failed model) silently."""
    from zoo.registry import get_card, parse_model_list

    if not models:
        return  # every registered model: one without weights is reported failed on its ready endpoint
    for name, variant in parse_model_list(models):
        try:
            card = get_card(name)
        except KeyError:
            return  # the server names unknown models itself
        variant = variant or card.default_variant
        if variant in card.variants and card.demo_weights_path(variant) is None:
            bundled = [v for v in card.variants if card.demo_weights_path(v) is not None]
            _fail(f"{name}:{variant} has no bundled weights: serve a variant that has them ({', '.join(bundled) or 'none'}), "
                  "or pass --random-weights to serve random initialisation")


@app.command("bench")
def bench_command(
    suite: str = typer.Argument(..., help="latency | reference | serving | flops | gpu | demo-check | report"),
    quick: bool = typer.Option(False, "--quick", help="Each suite in under a minute (CI smoke test); writes only where --out says."),
    as_json: bool = typer.Option(False, "--json", help="Print the results document as JSON."),
    out: Path | None = typer.Option(None, "--out", help="Results folder (default: bench/results for full runs)."),
    threads: int | None = typer.Option(None, "--threads", help="Intra-op threads for torch and ONNX Runtime (default 1: our CPUs are shared)."),
    budget_s: float | None = typer.Option(None, "--budget-s", help="Wall-clock budget for the suite in seconds."),
    device: str | None = typer.Option(None, "--device", help="gpu and serving suites: cuda or cpu."),
) -> None:
    """Benchmarks that print ratios measured side by side in one run; JSON under bench/results/."""
    from zoo.bench import SUITES, render, run_suite
    from zoo.bench.common import RESULTS_DIR

    if suite not in SUITES:
        _fail(f"unknown suite {suite!r}; suites: {', '.join(SUITES)}")
    if suite == "reference":
        from zoo.bench.reference import AnomalibMissing, anomalib_model_class

        try:
            anomalib_model_class()
        except AnomalibMissing as err:
            _fail(str(err))
    target = out if out is not None else (None if quick and suite != "report" else RESULTS_DIR)
    command = "zoo " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        document = run_suite(suite, quick=quick, out_dir=target, threads=threads, budget_s=budget_s, device=device, command=command)
    except (KeyError, ValueError, RuntimeError) as err:
        _fail(str(err))
    if as_json:
        from zoo.bench.common import finite

        _emit_json(finite(document))
    else:
        typer.echo(render(suite, document))
    if document.get("failed"):  # demo-check: an example that does not show what it should fails the command
        raise typer.Exit(1)


def main() -> None:
    logging.basicConfig(level=os.environ.get("ZOO_LOG_LEVEL", "WARNING"), stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
