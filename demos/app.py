"""The Gradio demo: one `gr.Blocks` app, one tab per registered model, built from its card.

Each tab shows the card (paper, task, summary), one input widget per typed card input, by
its kind (an image upload for "image", a grayscale image for "mask", a text box for "text",
a JSON text box for "boxes"/"polygons"), one widget per option (a slider where the range is
known, else a number box; a text box with a placeholder while the option has no default, as
the browser's number box would send 0; a checkbox; a dropdown for choices and class labels),
the bundled example inputs, and the result beside its JSON (base64 fields replaced by a
note): drawn (`result.draw(image)`, served as PNG so pixels compare exactly; a small drawing
at a whole multiple of its size, up to 512 px, where the result type's draw takes `scale`,
with its legend where it takes `legend`), or for image results (ImageResult) one sheet of
the input and each output, each captioned (`captioned_sheet`). A generator (no inputs) shows
its options and the grid of generated images. A model that lands in the registry later gets
its tab without editing this file.

    demo = build_demo()                      # every registered model, loaded on first use
    demo.launch(server_name="127.0.0.1")     # or: zoo demo; zoo serve mounts it at /demo

Each tab's button is an API endpoint named `/predict_<model>` (non-alphanumerics as "_"),
so `gradio_client.Client(url).predict(handle_file(path), ..., api_name="/predict_efficientad")`
drives it.
"""

from __future__ import annotations

import inspect
import logging
import re
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.registry import parse_model_list

if TYPE_CHECKING:
    import gradio as gr

    from zoo.pipeline import Pipeline
    from zoo.registry import InputSpec, ModelCard, OptionSpec

log = logging.getLogger(__name__)

PipelineGetter = Callable[[str], "Pipeline"]
UNSET = "empty: the model's default"
DISPLAY_SIDE = 512  # a small drawing is shown at a whole multiple of its size, up to this many px
IMAGE_RESULTS = ("ImageResult",)  # result types whose outputs are images: shown with the input in one captioned sheet
_JSON_HINTS = {"boxes": "[[x0, y0, x1, y1], ...] in pixels", "polygons": "[[[x, y], [x, y], [x, y], ...], ...] in pixels"}


def api_name(model: str) -> str:
    return "predict_" + re.sub(r"[^0-9A-Za-z_]", "_", model)


class PipelineCache:
    """Loads each model on first use (bundled demo weights), keeps it, and remembers failures."""

    def __init__(self, variants: dict[str, str | None] | None = None, backend: str = "torch", device: str = "cpu", export_dir: str | Path | None = None,
                 random_weights: bool = False):
        self.variants = variants or {}
        self.random_weights = random_weights  # weights="random" for every model, asked for explicitly
        self.backend = backend
        self.device = device
        self.export_dir = Path(export_dir) if export_dir is not None else None
        self._pipelines: dict[str, Pipeline] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()

    def __call__(self, name: str) -> Pipeline:
        from zoo.registry import create_model

        with self._lock:
            if name in self._pipelines:
                return self._pipelines[name]
            if name in self._errors:
                raise RuntimeError(self._errors[name])
            options: dict[str, Any] = {}
            if self.export_dir is not None:
                per_model = self.export_dir / name
                options["export_dir"] = per_model if per_model.is_dir() else self.export_dir
            try:
                weights = "random" if self.random_weights else None
                pipeline = create_model(name, self.variants.get(name), weights=weights, backend=self.backend, device=self.device, **options)
            except Exception as err:
                self._errors[name] = f"model {name!r} failed to load: {type(err).__name__}: {err}"
                log.exception("demo: %s failed to load", name)
                raise RuntimeError(self._errors[name]) from err
            self._pipelines[name] = pipeline
            return pipeline


def build_demo(models: str | Sequence[str] | None = None, get_pipeline: PipelineGetter | None = None, title: str = "zoo", random_weights: bool = False) -> gr.Blocks:
    """The demo app. models: None (every registered model), "a,b", or ["a", "b:variant"].
    get_pipeline: name -> ready pipeline (the server passes its loaded models); by default
    each model loads on first use with its bundled demo weights."""
    import gradio as gr

    from zoo.registry import get_card

    specs = parse_model_list(models)
    cards = []
    for name, _ in specs:
        try:
            cards.append(get_card(name))
        except KeyError as err:
            raise ValueError(str(err.args[0])) from None
    getter = get_pipeline or PipelineCache({name: variant for name, variant in specs}, random_weights=random_weights)
    with gr.Blocks(title=title) as demo:
        gr.Markdown(f"# {title}\nOne tab per model. Results are drawn over the input; the JSON is what the REST API returns "
                    "(images shown as pictures, not base64).")
        with gr.Tabs():
            for card in cards:
                with gr.Tab(card.name, id=card.name):
                    _model_tab(card, getter)
    return demo


def _card_markdown(card: ModelCard) -> str:
    paper = f"[arXiv:{card.arxiv}](https://arxiv.org/abs/{card.arxiv})" if card.arxiv else ""
    lines = [f"### {card.title} ({card.year})", f"**Task:** {card.task} · **Result:** {card.result_type} · {paper}", "", card.summary]
    if card.repo and card.repo.startswith("http"):
        lines.append(f"\nOfficial code: {card.repo} ({card.license})")
    return "\n".join(lines)


def _option_widget(option: OptionSpec) -> gr.components.Component:
    import gradio as gr

    label = option.name
    info = option.help or None
    if option.kind == "bool":
        return gr.Checkbox(value=bool(option.default), label=label, info=info)
    if option.choices:  # a label's choices are its class names: the name is shown and sent, the card parses it
        value = option.choices[option.default] if option.kind == "label" and isinstance(option.default, int) else option.default
        return gr.Dropdown(choices=list(option.choices), value=value, label=label, info=info)
    if option.kind in ("float", "int"):
        step = 1 if option.kind == "int" else 0.01
        if option.minimum is not None and option.maximum is not None and option.default is not None:
            return gr.Slider(minimum=option.minimum, maximum=option.maximum, value=option.default, step=step, label=label, info=info)
        if option.default is None:
            # An unset default stays empty: a text box with a placeholder (the card parses what is
            # typed). The browser's number box turns empty into 0, which the model would take
            # for a value (EfficientAD's threshold 0 flagged every image).
            return gr.Textbox(value="", label=label, info=info, placeholder=UNSET)
        return gr.Number(value=option.default, label=label, info=info, precision=0 if option.kind == "int" else None,
                         minimum=option.minimum, maximum=option.maximum)
    return gr.Textbox(value=option.default or "", label=label, info=info, placeholder=UNSET if option.default is None else None)


def _input_widget(spec: InputSpec) -> gr.components.Component:
    """The widget for one typed input, by its kind."""
    import gradio as gr

    info = spec.help or None
    label = spec.name if spec.required else f"{spec.name} (optional)"
    if spec.kind == "image":
        return gr.Image(type="pil", label=label, sources=["upload", "clipboard"])
    if spec.kind == "mask":
        return gr.Image(type="pil", image_mode="L", label=f"{label}: white marks the region", sources=["upload", "clipboard"])
    if spec.kind == "text":
        if spec.choices:
            return gr.Dropdown(choices=list(spec.choices), value=spec.default, label=label, info=info)
        return gr.Textbox(value=spec.default or "", label=label, info=info, max_length=int(spec.maximum) if spec.maximum else None)
    return gr.Textbox(value="", label=f"{label}: JSON", info=info, lines=2, placeholder=_JSON_HINTS[spec.kind])


def _example_rows(card: ModelCard) -> list[list[Any]]:
    """Bundled examples ("skimage:brick", paths) as files Gradio can show: one row per example."""
    from zoo.imageio import load_image

    if not card.examples or not card.inputs:
        return []
    # An example fills the first image input, or the first text input of a model without images.
    target = (card.image_inputs or tuple(i for i in card.inputs if i.kind == "text") or (None,))[0]
    if target is None:
        return []
    folder = Path(tempfile.gettempdir()) / "zoo-demo-examples"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for example in card.examples:
        row: list[Any] = []
        for spec in card.inputs:
            if spec is target and spec.is_image:
                path = folder / (re.sub(r"[^0-9A-Za-z_.-]", "_", example) + ".png")
                try:
                    if not path.exists():
                        load_image(example).save(path)
                except Exception as err:  # a missing example must not take the demo down
                    log.warning("demo: example %s of %s unavailable: %s", example, card.name, err)
                    row = []
                    break
                row.append(str(path))
            elif spec is target:
                row.append(example)
            else:
                row.append(card.example_text(example, spec) if spec.kind == "text" else None)
        if row:
            rows.append(row)
    return rows


def _model_tab(card: ModelCard, getter: PipelineGetter) -> None:
    import gradio as gr

    gr.Markdown(_card_markdown(card))
    with gr.Row():
        with gr.Column():
            inputs = [_input_widget(spec) for spec in card.inputs]
            options = [_option_widget(option) for option in card.options]
            button = gr.Button("Run", variant="primary")
        with gr.Column():
            label = "generated" if card.is_generator else "input and result" if card.result_type in IMAGE_RESULTS else "result"
            drawn = gr.Image(type="pil", format="png", label=label, interactive=False)
            as_json = gr.JSON(label="result JSON")
    rows = _example_rows(card)
    if rows:
        gr.Examples(examples=rows, inputs=inputs, label="bundled examples")
    button.click(_runner(card, getter), inputs=[*inputs, *options], outputs=[drawn, as_json], api_name=api_name(card.name))


def _runner(card: ModelCard, getter: PipelineGetter) -> Callable[..., tuple[Any, dict[str, Any]]]:
    import gradio as gr

    def run(*values: Any) -> tuple[Any, dict[str, Any]]:
        from zoo.imageio import ImageDecodeError, load_image

        count = len(card.inputs)
        raw_options = {}
        for option, value in zip(card.options, values[count:]):
            if value is None or (isinstance(value, str) and value == "" and option.kind != "str"):
                continue  # left empty: the card's default
            raw_options[option.name] = value
        raw_inputs: dict[str, Any] = {}
        first_image = None
        for spec, value in zip(card.inputs, values[:count]):
            if value is None or (isinstance(value, str) and not value.strip() and not spec.is_image):
                continue  # left empty: the card says whether that is allowed
            if spec.is_image:
                try:
                    value = load_image(value) if spec.kind == "image" else value
                except ImageDecodeError as err:
                    raise gr.Error(f"input {spec.name!r}: {err}") from None
                first_image = value if first_image is None else first_image
            raw_inputs[spec.name] = value
        try:
            parsed = card.parse_options(raw_options)
            prepared = card.parse_inputs(raw_inputs)
        except ValueError as err:
            raise gr.Error(f"{card.name}: {err}") from None
        options = {key: parsed[key] for key in raw_options}  # predict fills in the defaults itself
        try:
            pipeline = getter(card.name)
        except Exception as err:
            raise gr.Error(str(getattr(err, "message", err))) from None
        item = card.pipeline_input(prepared)
        try:
            result = pipeline.predict(item, **options)
        except Exception as err:
            log.exception("demo: %s failed", card.name)
            raise gr.Error(f"{card.name} failed: {type(err).__name__}: {getattr(err, 'message', err)}") from None
        return _picture(result, first_image), panel_json(result.to_json())

    # Named parameters (image, threshold, ...) so gradio_client callers can pass keywords.
    names = [re.sub(r"\W", "_", f.name) for f in (*card.inputs, *card.options)]
    run.__signature__ = inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names])  # type: ignore[attr-defined]
    return run


def _picture(result: Any, image: Any) -> Any:
    """What the result panel shows. Image results (ImageResult): the input and each output,
    captioned with the result's info["images"] names (`captioned_sheet`). Anything else:
    `draw`, a small drawing (input, map or generated grid) at a whole multiple of its size,
    up to DISPLAY_SIDE px, and with its legend, where the result type's `draw` takes `scale`
    and `legend`."""
    if type(result).__name__ in IMAGE_RESULTS:
        return captioned_sheet(_captioned_images(result, image))[0]
    accepted = inspect.signature(result.draw).parameters
    drawn = result.draw(image)
    options: dict[str, Any] = {}
    if "scale" in accepted:  # by the size drawn at scale 1: the input's, a map's, a generated grid's
        options["scale"] = max(1, min(8, DISPLAY_SIDE // max(drawn.size)))
    if "legend" in accepted:
        options["legend"] = True
    if options.get("scale", 1) == 1 and not options.get("legend"):
        return drawn
    return result.draw(image, **options)


def _captioned_images(result: Any, image: Any) -> list[tuple[Any, str]]:
    """[(picture, caption)]: the input first (when there is one), then each output image."""
    from PIL import Image

    outputs = [Image.fromarray(array) for array in result.images]
    names = result.info.get("images") if isinstance(result.info, dict) else None
    if not (isinstance(names, (list, tuple)) and len(names) == len(outputs) and all(isinstance(n, str) for n in names)):
        names = ["result"] if len(outputs) == 1 else [f"result {i + 1}" for i in range(len(outputs))]
    shown = [(image.convert("RGB"), "input")] if image is not None else []
    return shown + list(zip(outputs, names))


def captioned_sheet(items: list[tuple[Any, str]], gap: int = 6) -> tuple[Any, list[tuple[int, int, int, int]]]:
    """Pictures with a caption under each, in one sheet: side by side, or one under another
    when they are wide (a document page reads better full width); small pictures at a whole
    multiple of their size (nearest, up to DISPLAY_SIDE px). Returns the sheet and each
    picture's (left, top, right, bottom) in it."""
    from PIL import Image, ImageDraw

    from zoo.results import label_font, label_text_size

    cell_w = max(picture.width for picture, _ in items)
    cell_h = max(picture.height for picture, _ in items)
    scale = max(1, min(8, DISPLAY_SIDE // max(cell_w, cell_h)))
    cell_w, cell_h = cell_w * scale, cell_h * scale
    stacked = cell_w >= 1.5 * cell_h
    size = label_text_size(max(cell_w, cell_h), max(cell_w, cell_h))  # by the longer side: a page's caption reads too
    font = label_font(size)
    caption_h = size + 2 * max(2, size // 3)
    step_x, step_y = (0, cell_h + caption_h + gap) if stacked else (cell_w + gap, 0)
    count = len(items)
    sheet = Image.new("RGB", (cell_w + step_x * (count - 1), cell_h + caption_h + step_y * (count - 1)), (255, 255, 255))
    pen = ImageDraw.Draw(sheet)
    boxes = []
    for index, (picture, caption) in enumerate(items):
        x, y = index * step_x, index * step_y
        shown = picture.convert("RGB")
        if scale > 1:
            shown = shown.resize((shown.width * scale, shown.height * scale), Image.NEAREST)
        sheet.paste(shown, (x, y))
        boxes.append((x, y, x + shown.width, y + shown.height))
        # the caption under the picture (Gradio's label and buttons sit over the image's top corners)
        pen.rectangle([x, y + cell_h, x + cell_w - 1, y + cell_h + caption_h - 1], fill=(235, 235, 235))
        left, top, right, bottom = font.getbbox(caption)
        pen.text((x + (cell_w - (right - left)) // 2 - left, y + cell_h + (caption_h - (bottom - top)) // 2 - top), caption, fill=(0, 0, 0), font=font)
    return sheet, boxes


def panel_json(document: Any) -> Any:
    """The result's JSON for the panel: base64 fields (images, maps) replaced by a note; the
    pictures are shown beside it and the REST API returns them."""
    if isinstance(document, dict):
        return {key: (_base64_note(value) if "base64" in key else panel_json(value)) for key, value in document.items()}
    if isinstance(document, list):
        return [panel_json(value) for value in document]
    return document


def _base64_note(value: Any) -> Any:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return f"{len(value)} PNG image(s), base64 in the REST answer; shown as pictures here"
    if isinstance(value, str):
        return f"base64 PNG ({len(value)} characters) in the REST answer; not shown here"
    return panel_json(value)


def launch_demo(host: str = "127.0.0.1", port: int = 7860, models: str | Sequence[str] | None = None, api_key: str | None = None,
                random_weights: bool = False, **launch_options: Any) -> Any:
    """`zoo demo`: the demo on its own. Beyond loopback it needs a key (login "zoo" / the key)."""
    import ipaddress

    loopback = host in ("localhost",) or _is_loopback(ipaddress, host)
    if not loopback and not api_key:
        raise ValueError(f"binding the demo to {host} exposes it: set an API key (--api-key or $ZOO_API_KEY), or bind to 127.0.0.1")
    demo = build_demo(models, random_weights=random_weights)
    auth = ("zoo", api_key) if api_key else None
    return demo.launch(server_name=host, server_port=port, auth=auth, **launch_options)


def _is_loopback(ipaddress: Any, host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
