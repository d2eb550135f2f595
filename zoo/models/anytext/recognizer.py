"""A differentiable PP-OCR text recogniser in PyTorch, for AnyText's text embedding module (Sec. 3.3)
and text perceptual loss (Sec. 3.4), which both read the recogniser's *neck* features.

`OnnxGraphModule` turns an ONNX graph into a torch module that runs its nodes in order with torch ops:
every float weight of the graph becomes an `nn.Parameter` (frozen by default, so gradients flow
through it to the input as the losses need), integer tensors (shapes, axes) stay Python/int64 values.
It is generic over the operators that PaddleOCR's exported recognisers use (listed in `_OPS`); an ONNX
file with another operator is refused with the operator's name. It is built and tested on the
PP-OCRv4 recognition model that `rapidocr-onnxruntime` ships (`ch_PP-OCRv4_rec_infer.onnx`:
PPLCNetV3 backbone, SVTR neck, CTC head over 6,623 characters + blank + space); its outputs equal
onnxruntime's (tests/models/anytext/test_recognizer.py).

`TextRecognizer` wraps it the way PaddleOCR preprocesses a text line (height 48, width 320 for a
line of aspect up to 320/48, right-padded; (x - 0.5) / 0.5), and gives the CTC probabilities, the
neck features (B, T, C) = the input of the CTC head's linear layer (T = 40 at width 320; C = 120 for
PP-OCRv4; AnyText's PP-OCRv3 neck has C = 64, so 40 x 64 = 2560, Sec. 3.3), and greedy CTC decoding.

What we chose: AnyText runs its own PP-OCRv3 torch port (`ocr_weights/ppv3_rec.pth`, not shipped here);
we wrote that network ourselves (ppocr_v3.py: MobileNetV1Enhance + SVTR neck + CTC head, the reference's
key names, 2,639,665 parameters for 6,625 classes) and `load_anytext_recognizer` /
`TextRecognizer.from_anytext_checkpoint` build it and load that checkpoint strictly, behind the same
interface (neck C = 64, so 40 x 64 = 2560). The PP-OCRv4 model stays the recogniser of our micro variant.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ppocr_v3 import PPOCRv3Recognizer

REC_HEIGHT, REC_WIDTH = 48, 320
BLANK = 0


@functools.cache
def rapidocr_model_path(kind: str = "rec") -> Path:
    """The PP-OCRv4 ONNX model inside the installed `rapidocr-onnxruntime` wheel (no download)."""
    try:
        import rapidocr_onnxruntime
    except ImportError as err:  # pragma: no cover - a pinned dependency
        raise RuntimeError("AnyText's recogniser needs rapidocr-onnxruntime (pip install --no-deps "
                           "rapidocr-onnxruntime==1.4.4 pyclipper shapely six)") from err
    names = {"rec": "ch_PP-OCRv4_rec_infer.onnx", "det": "ch_PP-OCRv4_det_infer.onnx"}
    path = Path(rapidocr_onnxruntime.__file__).parent / "models" / names[kind]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not in the installed rapidocr-onnxruntime wheel")
    return path


@functools.cache
def rapidocr_characters() -> list[str]:
    """The character list of rapidocr's PP-OCRv4 file (its ONNX metadata): 6,623 entries, the same list, in the
    same order, as PaddleOCR's ppocr_keys_v1.txt that AnyText's PP-OCRv3 recogniser reads."""
    import onnx

    model = onnx.load(str(rapidocr_model_path("rec")), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}.get("character", "").splitlines()


def read_character_file(path: str | Path) -> list[str]:
    """A PaddleOCR character dictionary: one entry a line (a line may be a single space), as the reference
    reads it (each line without its line break; no other stripping)."""
    text = Path(path).read_text(encoding="utf-8")
    return [line.removesuffix("\r") for line in text.removesuffix("\n").split("\n")]


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _safe(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


class OnnxGraphModule(nn.Module):
    """An ONNX graph executed with torch ops (see the module docstring). forward(*inputs) returns the
    graph outputs, or the tensors named in `outputs` (any intermediate value, e.g. the neck)."""

    def __init__(self, model: Any, trainable: bool = False):
        super().__init__()
        import onnx
        from onnx import numpy_helper

        if isinstance(model, (str, Path)):
            model = onnx.load(str(model))
        graph = model.graph
        self.input_names = [i.name for i in graph.input]
        self.output_names = [o.name for o in graph.output]
        self.weights = nn.ParameterDict()
        self._ints: dict[str, Tensor] = {}
        self._key: dict[str, str] = {}
        self.nodes: list[tuple[str, list[str], list[str], dict[str, Any]]] = []
        constants = [(i.name, numpy_helper.to_array(i)) for i in graph.initializer]
        for node in graph.node:
            if node.op_type == "Constant":
                constants.append((node.output[0], numpy_helper.to_array(_attrs(node)["value"])))
                continue
            if node.op_type not in _OPS:
                raise NotImplementedError(f"ONNX operator {node.op_type!r} (node {node.name!r}) is not supported; "
                                          f"supported: {', '.join(sorted(_OPS))}")
            self.nodes.append((node.op_type, list(node.input), list(node.output), _attrs(node)))
        # the last node reading each value: intermediate values are dropped after it (memory of a forward
        # pass without gradients stays that of a few layers, not of all 800 nodes' outputs)
        self._last_use = {name: i for i, (_, ins, _, _) in enumerate(self.nodes) for name in ins}
        for name, array in constants:
            if array.dtype.kind == "f":
                key = _safe(name)
                self.weights[key] = nn.Parameter(torch.as_tensor(np.array(array, np.float32)), requires_grad=trainable)
                self._key[name] = key
            else:
                self._ints[name] = torch.as_tensor(np.array(array))

    def forward(self, *inputs: Tensor, outputs: tuple[str, ...] | None = None) -> tuple[Tensor, ...]:
        env: dict[str, Any] = dict(zip(self.input_names, inputs))
        wanted = outputs or tuple(self.output_names)

        def get(name: str) -> Any:
            if name == "":
                return None
            if name in env:
                return env[name]
            if name in self._key:
                return self.weights[self._key[name]]
            return self._ints[name]

        remaining = set(wanted)
        keep = set(wanted)
        for step, (op, ins, outs, attrs) in enumerate(self.nodes):
            result = _OPS[op]([get(n) for n in ins], attrs)
            results = result if isinstance(result, tuple) else (result,)
            for name, value in zip(outs, results):
                env[name] = value
                remaining.discard(name)
            for name in ins:
                if self._last_use.get(name) == step and name not in keep:
                    env.pop(name, None)
            if not remaining:
                break
        return tuple(env[name] for name in wanted)


def _ints(value: Any) -> list[int]:
    if isinstance(value, Tensor):
        return [int(v) for v in value.reshape(-1).tolist()]
    return [int(v) for v in value]


def _reshape(x: Tensor, shape: Any) -> Tensor:
    dims = _ints(shape)
    dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


def _slice(ins: list[Any], attrs: dict[str, Any]) -> Any:
    x, starts, ends = ins[0], _ints(ins[1]), _ints(ins[2])
    axes = _ints(ins[3]) if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
    steps = _ints(ins[4]) if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    index: list[Any] = [slice(None)] * x.dim()
    for axis, start, end, step in zip(axes, starts, ends, steps):
        size = x.shape[axis]
        start = max(min(start, size), -size)
        end = max(min(end, size), -size - 1)
        index[axis] = slice(start, end, step)
    return x[tuple(index)]


def _conv(ins: list[Any], a: dict[str, Any]) -> Tensor:
    x, w = ins[0], ins[1]
    pads = a.get("pads", [0] * (2 * (w.dim() - 2)))
    half = len(pads) // 2
    if list(pads[:half]) != list(pads[half:]):  # asymmetric: pad explicitly
        x = F.pad(x, [p for i in reversed(range(half)) for p in (pads[i], pads[i + half])])
        pads = [0] * len(pads)
    return F.conv2d(x, w, ins[2] if len(ins) > 2 else None, stride=a.get("strides", 1), padding=tuple(pads[:half]),
                    dilation=a.get("dilations", 1), groups=a.get("group", 1))


def _avgpool(ins: list[Any], a: dict[str, Any]) -> Tensor:
    pads = a.get("pads", [0, 0, 0, 0])
    return F.avg_pool2d(ins[0], a["kernel_shape"], a.get("strides", a["kernel_shape"]), padding=tuple(pads[:2]),
                        ceil_mode=bool(a.get("ceil_mode", 0)), count_include_pad=bool(a.get("count_include_pad", 0)))


def _batchnorm(ins: list[Any], a: dict[str, Any]) -> Tensor:
    x, scale, bias, mean, var = ins
    return F.batch_norm(x, mean, var, scale, bias, training=False, eps=a.get("epsilon", 1e-5))


def _clip(ins: list[Any], a: dict[str, Any]) -> Tensor:
    low = ins[1] if len(ins) > 1 and ins[1] is not None else a.get("min")
    high = ins[2] if len(ins) > 2 and ins[2] is not None else a.get("max")
    low = float(low) if low is not None else None
    high = float(high) if high is not None else None
    return ins[0].clamp(low, high)


def _cast(ins: list[Any], a: dict[str, Any]) -> Any:
    to = {1: torch.float32, 6: torch.int32, 7: torch.int64, 9: torch.bool, 11: torch.float64}[a["to"]]
    x = ins[0]
    return x.to(torch.float32 if to == torch.float64 else to)


def _concat(ins: list[Any], a: dict[str, Any]) -> Tensor:
    parts = [x if x.dim() else x.reshape(1) for x in ins]
    if all(not p.is_floating_point() for p in parts):
        return torch.cat([p.to(torch.int64).reshape(-1) if a["axis"] == 0 and p.dim() <= 1 else p for p in parts], a["axis"])
    return torch.cat(parts, a["axis"])


_OPS: dict[str, Any] = {
    "Add": lambda i, a: i[0] + i[1],
    "Sub": lambda i, a: i[0] - i[1],
    "Mul": lambda i, a: i[0] * i[1],
    "Div": lambda i, a: i[0] / i[1],
    "Pow": lambda i, a: torch.pow(i[0], i[1]),
    "Sqrt": lambda i, a: torch.sqrt(i[0]),
    "Relu": lambda i, a: F.relu(i[0]),
    "Sigmoid": lambda i, a: torch.sigmoid(i[0]),
    "HardSigmoid": lambda i, a: (i[0] * a.get("alpha", 0.2) + a.get("beta", 0.5)).clamp(0.0, 1.0),
    "HardSwish": lambda i, a: F.hardswish(i[0]),
    "Clip": _clip,
    "Cast": _cast,
    "Conv": _conv,
    "BatchNormalization": _batchnorm,
    "MatMul": lambda i, a: torch.matmul(i[0], i[1]),
    "Softmax": lambda i, a: torch.softmax(i[0], a.get("axis", -1)),
    "Transpose": lambda i, a: i[0].permute(*a["perm"]),
    "Reshape": lambda i, a: _reshape(i[0], i[1]),
    "Squeeze": lambda i, a: i[0].squeeze(tuple(a["axes"]) if "axes" in a else tuple(_ints(i[1]))),
    "Unsqueeze": lambda i, a: i[0].reshape([*i[0].shape[:a["axes"][0]], 1, *i[0].shape[a["axes"][0]:]]),
    "Concat": _concat,
    "Slice": lambda i, a: _slice(i, a),
    "Shape": lambda i, a: torch.tensor(list(i[0].shape), dtype=torch.int64),
    "ReduceMean": lambda i, a: i[0].mean(dim=tuple(a["axes"]), keepdim=bool(a.get("keepdims", 1))),
    "GlobalAveragePool": lambda i, a: i[0].mean(dim=(2, 3), keepdim=True),
    "AveragePool": _avgpool,
    "Identity": lambda i, a: i[0],
}


def ctc_head_input(module: OnnxGraphModule) -> str:
    """The name of the tensor the CTC head's linear layer reads (the neck's output): the first input
    of the last MatMul before the output softmax."""
    matmuls = [ins[0] for op, ins, _, _ in module.nodes if op == "MatMul"]
    if not matmuls:
        raise ValueError("no MatMul in the graph: not a PP-OCR CTC recogniser")
    return matmuls[-1]


class TextRecognizer(nn.Module):
    """A PP-OCR CTC recogniser (frozen, eval): images of text lines -> (probabilities (B, T, K),
    neck features (B, T, C)); `decode` gives strings. Built from an ONNX file (default: rapidocr's
    PP-OCRv4 model) whose metadata carries the character list, or around a torch network with the same
    outputs (`network=`: AnyText's PP-OCRv3 (ppocr_v3.py), see `from_anytext_checkpoint`)."""

    def __init__(self, path: str | Path | None = None, trainable: bool = False, *, network: PPOCRv3Recognizer | None = None,
                 characters: Sequence[str] | None = None):
        super().__init__()
        self.network: PPOCRv3Recognizer | None = network
        if network is not None:
            chars = list(characters) if characters is not None else rapidocr_characters()
            self.characters = ["<blank>", *chars, " "]
            if len(self.characters) != network.classes:
                raise ValueError(f"{len(chars)} characters + blank + space = {len(self.characters)} classes, but the "
                                 f"network's CTC head has {network.classes}: pass the checkpoint's character list")
            network.requires_grad_(trainable)
            self.eval()
            return
        import onnx

        model = onnx.load(str(path or rapidocr_model_path("rec")))
        meta = {p.key: p.value for p in model.metadata_props}
        self.characters = ["<blank>", *meta.get("character", "").splitlines(), " "]
        self.graph = OnnxGraphModule(model, trainable=trainable)
        self.neck_name = ctc_head_input(self.graph)
        self.eval()

    @classmethod
    def from_anytext_checkpoint(cls, source: str | Path | dict[str, Tensor],
                                characters: Sequence[str] | str | Path | None = None) -> TextRecognizer:
        """AnyText's PP-OCRv3 recogniser (`ppocr_v3.PPOCRv3Recognizer`) with the weights of its checkpoint
        (`ocr_weights/ppv3_rec.pth` / `ppv3_rec_en.pth`, a .safetensors copy, the whole AnyText checkpoint
        with its `text_predictor.*` keys, or a state dict). `characters`: the dictionary entries (a list, or
        the path of a one-per-line file such as AnyText's en_dict.txt); default: rapidocr's list, which is
        AnyText's ppocr_keys_v1 (6,623 entries, 6,625 classes)."""
        if not isinstance(source, dict):
            from zoo.weights import read_state

            source = read_state(Path(source))[0]
        if isinstance(characters, (str, Path)):
            characters = read_character_file(characters)
        return load_anytext_recognizer(source, characters)

    def preprocess(self, images: Tensor) -> Tensor:
        """Line crops (B, 3, h, w) in [0, 1] -> the recogniser's input, as its own code prepares it: AnyText's
        for the PP-OCRv3 network (`anytext_line_tensor`), PaddleOCR's for the ONNX model (`line_tensor`)."""
        return anytext_line_tensor(images) if self.network is not None else line_tensor(images)

    @property
    def classes(self) -> int:
        return len(self.characters)

    @property
    def feature_dim(self) -> int:
        """T x C of the neck at width 320 (T = 40): the embedding module's input (Sec. 3.3)."""
        return (REC_WIDTH // 8) * self.neck_channels

    @property
    def neck_channels(self) -> int:
        if self.network is not None:
            return self.network.neck_channels
        for op, ins, _, _ in self.graph.nodes:
            if op == "MatMul" and ins[0] == self.neck_name:
                return int(self.graph.weights[self.graph._key[ins[1]]].shape[0])
        raise ValueError("no CTC head")

    def forward(self, lines: Tensor) -> tuple[Tensor, Tensor]:
        """lines: (B, 3, 48, W) normalised as `line_tensor` does -> (probs, neck)."""
        if self.network is not None:
            return self.network(lines)
        probs, neck = self.graph(lines, outputs=(self.graph.output_names[0], self.neck_name))
        return probs, neck

    def decode(self, probs: Tensor) -> list[tuple[str, float]]:
        """Greedy CTC decoding (repeats merged, blanks dropped) with the mean probability of the kept steps."""
        best, index = probs.max(-1)
        out = []
        for row, scores in zip(index.tolist(), best.tolist()):
            chars, kept, prev = [], [], -1
            for c, s in zip(row, scores):
                if c != BLANK and c != prev:
                    chars.append(self.characters[c] if c < len(self.characters) else "")
                    kept.append(s)
                prev = c
            out.append(("".join(chars), float(np.mean(kept)) if kept else 0.0))
        return out

    @torch.no_grad()
    def read(self, images: list[np.ndarray]) -> list[tuple[str, float]]:
        """Text of each line image (H, W, 3) uint8, preprocessed as PaddleOCR does."""
        if not images:
            return []
        device = next(self.parameters()).device
        batch = torch.cat([line_tensor(torch.as_tensor(im).permute(2, 0, 1).float()[None] / 255.0) for im in images])
        return self.decode(self(batch.to(device))[0])


def line_tensor(images: Tensor, height: int = REC_HEIGHT, width: int = REC_WIDTH, align_corners: bool = False) -> Tensor:
    """Differentiable PaddleOCR line preprocessing: images (B, 3, h, w) in [0, 1] -> (B, 3, 48, 320):
    resized to height 48 keeping the aspect (width ceil(48 w / h), at most 320; bilinear), (x - 0.5) / 0.5,
    right-padded with zeros. `align_corners=True` is AnyText's own resize (cldm/recognizer.py)."""
    b, _, h, w = images.shape
    new_w = min(width, max(1, int(math.ceil(height * w / h))))
    resized = F.interpolate(images, size=(height, new_w), mode="bilinear", align_corners=align_corners)
    resized = (resized - 0.5) / 0.5
    return F.pad(resized, (0, width - new_w))


def anytext_line_tensor(images: Tensor) -> Tensor:
    """AnyText's preprocessing of a line crop for its PP-OCRv3 (cldm/recognizer.py): a crop taller than 1.2x
    its width is turned a quarter (the reference's transpose of H and W, then a flip along the new height),
    then resized with align_corners=True, normalised and right-padded as `line_tensor`."""
    if images.shape[2] > 1.2 * images.shape[3]:
        images = images.transpose(2, 3).flip(2)
    return line_tensor(images, align_corners=True)


def load_anytext_recognizer(state: dict[str, Tensor], characters: Sequence[str] | None = None) -> TextRecognizer:
    """AnyText's own recogniser checkpoint (`ocr_weights/ppv3_rec.pth`: `backbone.*` (MobileNetV1Enhance),
    `neck.*` (SVTR `encoder`) and `head.fc.*` keys, possibly under `module.`, `state_dict.`, or
    `text_predictor.` in the whole AnyText checkpoint) -> a `TextRecognizer` running our
    `ppocr_v3.PPOCRv3Recognizer` with its weights: `classes` K from `head.fc.weight`, `neck_channels` C = 64,
    `feature_dim` = 40 x C = 2560 (AnyText's Linear(2560, 768), Sec. 3.3). `characters`: the dictionary
    entries without blank and space (default: rapidocr's list = ppocr_keys_v1, for K = 6,625). A checkpoint
    whose keys or shapes differ from the network's is refused (`zoo.weights.WeightsMismatchError`, naming the
    first missing, unexpected and mis-shaped keys); BatchNorm's `num_batches_tracked` counters may be absent."""
    from zoo.weights import load_into, unnest

    for head in ("state_dict", "module", "text_predictor", "module"):
        state = unnest(state, (head,))
    weight = state.get("head.fc.weight")
    if weight is None:
        found = sorted({k.split(".")[0] for k in state})
        raise KeyError(f"not an AnyText/PaddleOCR recogniser checkpoint: no head.fc.weight (top-level keys: {found})")
    if not any(k.startswith("backbone.") for k in state) or not any(k.startswith("neck.") for k in state):
        raise KeyError("an AnyText recogniser checkpoint has backbone.* and neck.* keys beside head.fc.*")
    classes = int(weight.shape[0])
    if characters is None and classes != len(rapidocr_characters()) + 2:
        raise ValueError(f"the checkpoint's CTC head has {classes} classes, not the Chinese model's "
                         f"{len(rapidocr_characters()) + 2}: pass its character list (e.g. AnyText's en_dict.txt for 97)")
    network = PPOCRv3Recognizer(classes)
    own = network.state_dict()
    counters = {k: own[k] for k in own if k.endswith(".num_batches_tracked") and k not in state}
    load_into(network, {**state, **counters})
    return TextRecognizer(network=network, characters=characters)
