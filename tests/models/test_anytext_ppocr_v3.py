"""AnyText's PP-OCRv3 recogniser (zoo/models/anytext/ppocr_v3.py) loaded from random-weight checkpoints
written in the reference's layout (tyxsspa/AnyText `ocr_weights/ppv3_rec.pth`, a RecModel state dict)."""

import math

import pytest
import torch
from safetensors.torch import save_file

from zoo.models.anytext.glyphs import line_image
from zoo.models.anytext.ppocr_v3 import ENGLISH_CLASSES, GlobalAttention, PPOCRv3Recognizer, param_count
from zoo.models.anytext.recognizer import TextRecognizer, line_tensor, load_anytext_recognizer
from zoo.weights import WeightsMismatchError


def official_layout(classes: int = 6625) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the reference's RecModel state dict for create_predictor's config (MobileNetV1Enhance
    scale 0.5; SequenceEncoder svtr dims 64, depth 2, hidden 120; CTCHead), written from the reference's layer
    definitions (ocr_recog/RecMv1_enhance.py, RNN.py, RecSVTR.py, RecCTCHead.py), not from our module."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv_bn(conv: str, bn: str, cout: int, cin: int, k: int) -> None:
        shapes[f"{conv}.weight"] = (cout, cin, k, k)
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{bn}.{name}"] = (cout,)
        shapes[f"{bn}.num_batches_tracked"] = ()

    def linear(prefix: str, cout: int, cin: int) -> None:
        shapes[f"{prefix}.weight"], shapes[f"{prefix}.bias"] = (cout, cin), (cout,)

    conv_bn("backbone.conv1._conv", "backbone.conv1._batch_norm", 16, 3, 3)
    # (in, out, depthwise kernel) of conv2_1 .. conv6 at scale 0.5; squeeze-excite in conv5_6 and conv6
    blocks = [(16, 32, 3), (32, 64, 3), (64, 64, 3), (64, 128, 3), (128, 128, 3), (128, 256, 3), *[(256, 256, 5)] * 5,
              (256, 512, 5), (512, 512, 5)]
    for i, (cin, cout, k) in enumerate(blocks):
        p = f"backbone.block_list.{i}"
        conv_bn(f"{p}._depthwise_conv._conv", f"{p}._depthwise_conv._batch_norm", cin, 1, k)  # groups = cin
        if i >= 11:
            shapes[f"{p}._se.conv1.weight"], shapes[f"{p}._se.conv1.bias"] = (cin // 4, cin, 1, 1), (cin // 4,)
            shapes[f"{p}._se.conv2.weight"], shapes[f"{p}._se.conv2.bias"] = (cin, cin // 4, 1, 1), (cin,)
        conv_bn(f"{p}._pointwise_conv._conv", f"{p}._pointwise_conv._batch_norm", cout, cin, 1)
    e = "neck.encoder"
    conv_bn(f"{e}.conv1.conv", f"{e}.conv1.norm", 64, 512, 3)
    conv_bn(f"{e}.conv2.conv", f"{e}.conv2.norm", 120, 64, 1)
    for i in range(2):
        b = f"{e}.svtr_block.{i}"
        shapes[f"{b}.norm1.weight"] = shapes[f"{b}.norm1.bias"] = (120,)
        linear(f"{b}.mixer.qkv", 360, 120)
        linear(f"{b}.mixer.proj", 120, 120)
        shapes[f"{b}.norm2.weight"] = shapes[f"{b}.norm2.bias"] = (120,)
        linear(f"{b}.mlp.fc1", 240, 120)
        linear(f"{b}.mlp.fc2", 120, 240)
    shapes[f"{e}.norm.weight"] = shapes[f"{e}.norm.bias"] = (120,)
    conv_bn(f"{e}.conv3.conv", f"{e}.conv3.norm", 512, 120, 1)
    conv_bn(f"{e}.conv4.conv", f"{e}.conv4.norm", 64, 1024, 3)
    conv_bn(f"{e}.conv1x1.conv", f"{e}.conv1x1.norm", 64, 64, 1)
    linear("head.fc", classes, 64)
    return shapes


def parameters_of(layout: dict[str, tuple[int, ...]]) -> int:
    return sum(math.prod(s) for k, s in layout.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))


def random_checkpoint(layout: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=g)
        elif key.endswith(("norm.weight", "_batch_norm.weight", "norm1.weight", "norm2.weight")):
            state[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            state[key] = 0.1 * torch.randn(shape, generator=g)
    return state


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    state = random_checkpoint(official_layout())
    path = tmp_path_factory.mktemp("ppv3") / "ppv3_rec.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)  # as saved from a DataParallel RecModel
    return path, state


@pytest.fixture(scope="module")
def recognizer(checkpoint):
    return TextRecognizer.from_anytext_checkpoint(checkpoint[0])


def _lines(texts):
    images = torch.stack([torch.as_tensor(line_image(t)) for t in texts])[:, None].repeat(1, 3, 1, 1)
    return line_tensor(1.0 - images)


def test_reference_layout_and_parameter_count():
    layout = official_layout()
    assert layout["backbone.conv1._conv.weight"] == (16, 3, 3, 3)
    assert layout["backbone.block_list.12._se.conv1.weight"] == (128, 512, 1, 1)
    assert layout["neck.encoder.conv4.conv.weight"] == (64, 1024, 3, 3)
    assert layout["neck.encoder.svtr_block.0.mixer.qkv.weight"] == (360, 120)
    assert layout["head.fc.weight"] == (6625, 64)
    assert parameters_of(layout) == param_count() == 2_639_665  # Chinese model: ppocr_keys_v1 + blank + space
    assert parameters_of(official_layout(ENGLISH_CLASSES)) == param_count(ENGLISH_CLASSES) == 2_215_345
    ours = PPOCRv3Recognizer()
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == layout
    assert sum(p.numel() for p in ours.parameters()) == 2_639_665


def test_checkpoint_loads_strictly(checkpoint, recognizer, tmp_path):
    _, state = checkpoint
    loaded = recognizer.network.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert (recognizer.classes, recognizer.neck_channels, recognizer.feature_dim) == (6625, 64, 2560)  # Linear(2560, 768)
    assert recognizer.characters[1] == "'" and len(recognizer.characters) == 6625  # ppocr_keys_v1's first entry
    # a safetensors copy without BatchNorm's counters, and the whole AnyText checkpoint (text_predictor.*)
    save_file({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, str(tmp_path / "rec.safetensors"))
    again = TextRecognizer.from_anytext_checkpoint(tmp_path / "rec.safetensors")
    assert torch.equal(again.network.head.fc.weight, state["head.fc.weight"])
    whole = {f"text_predictor.{k}": v for k, v in state.items()} | {"embedding_manager.proj.weight": torch.zeros(768, 2560)}
    torch.save({"state_dict": whole}, tmp_path / "anytext.ckpt")
    assert TextRecognizer.from_anytext_checkpoint(tmp_path / "anytext.ckpt").classes == 6625
    # the English model, with its dictionary file (95 entries, the last a space)
    en = random_checkpoint(official_layout(ENGLISH_CLASSES))
    (tmp_path / "en_dict.txt").write_text("\n".join([chr(c) for c in range(33, 127)] + [" "]) + "\n", encoding="utf-8")
    english = TextRecognizer.from_anytext_checkpoint(en, characters=tmp_path / "en_dict.txt")
    assert english.classes == 97 and english.characters[-2:] == [" ", " "]
    with pytest.raises(ValueError, match="en_dict"):
        load_anytext_recognizer(en)


def test_outputs_on_a_rendered_line(recognizer):
    x = _lines(["HELLO 2026", "AnyText"])
    with torch.no_grad():
        probs, neck = recognizer(x)
        short = recognizer(x[..., :160])[1]
    assert probs.shape == (2, 40, 6625) and neck.shape == (2, 40, 64)  # T = 320 / 8
    assert torch.allclose(probs.sum(-1), torch.ones(2, 40), atol=1e-5)
    assert short.shape == (2, 20, 64)
    assert torch.isfinite(neck).all() and neck.std() > 0
    logits, neck2 = recognizer.network.logits(x)
    assert torch.allclose(logits.softmax(-1), probs, atol=1e-6) and torch.allclose(neck2, neck)
    assert torch.allclose(recognizer.network.head.fc(neck), logits, atol=1e-5)  # the neck is the CTC head's input
    assert len(recognizer.decode(probs)) == 2


def test_gradients_reach_the_input(recognizer):
    x = _lines(["STOP"]).requires_grad_(True)
    _, neck = recognizer(x)
    neck.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in recognizer.parameters())


def test_eval_mode_is_deterministic(recognizer):
    x = _lines(["OPEN 24h"])
    assert not recognizer.training and not recognizer.network.training
    with torch.no_grad():
        a, b = recognizer(x), recognizer(x)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_global_attention_against_hand_computation():
    torch.manual_seed(0)
    attn = GlobalAttention(120).eval()
    x = torch.randn(2, 40, 120)
    q, k, v = attn.qkv(x).reshape(2, 40, 3, 8, 15).permute(2, 0, 3, 1, 4)
    weights = torch.softmax((q * 15 ** -0.5) @ k.transpose(-1, -2), dim=-1)  # the reference's scale head_dim ** -0.5
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(2, 40, 120))
    assert torch.allclose(attn(x), expected, atol=1e-5)


def test_mismatching_checkpoints_are_refused(checkpoint):
    _, state = checkpoint
    missing = {k: v for k, v in state.items() if k != "backbone.block_list.3._pointwise_conv._conv.weight"}
    with pytest.raises(WeightsMismatchError, match=r"1 missing keys: backbone\.block_list\.3\._pointwise_conv\._conv\.weight"):
        load_anytext_recognizer(missing)
    wrong = dict(state, **{"neck.encoder.conv1.conv.weight": torch.zeros(8, 512, 1, 3)})
    with pytest.raises(WeightsMismatchError, match=r"mis-shaped keys: neck\.encoder\.conv1\.conv\.weight \(checkpoint \(8, 512, 1, 3\)"):
        load_anytext_recognizer(wrong)
    with pytest.raises(WeightsMismatchError, match=r"unexpected keys: neck\.encoder\.extra"):
        load_anytext_recognizer(dict(state, **{"neck.encoder.extra": torch.zeros(1)}))
    with pytest.raises(KeyError, match="head.fc.weight"):
        load_anytext_recognizer({"backbone.x": torch.zeros(1)})


def test_the_paper_config_reads_lines_with_the_v3_recogniser(checkpoint):
    """sd15's config names AnyText's own recogniser: its 40 x 64 neck feeds the embedding module's Linear(2560, 768)."""
    import dataclasses

    from zoo.models.anytext import MICRO
    from zoo.models.anytext.model import AnyTextConfig, build_recognizer

    assert AnyTextConfig().recognizer == "ppocr-v3" and AnyTextConfig().ocr_feature_dim == 2560
    with pytest.raises(ValueError, match="recognizer_weights"):
        build_recognizer(AnyTextConfig())  # nothing is downloaded: the checkpoint must be named
    rec = build_recognizer(AnyTextConfig(recognizer_weights=str(checkpoint[0])))
    _, neck = rec(_lines(["SALE"]))
    assert neck.reshape(1, -1).shape == (1, 2560)
    with pytest.raises(ValueError, match="ocr_feature_dim=4800"):
        build_recognizer(dataclasses.replace(MICRO, recognizer="ppocr-v3", recognizer_weights=str(checkpoint[0])))
    with pytest.raises(ValueError, match="unknown recognizer"):
        build_recognizer(dataclasses.replace(MICRO, recognizer="tesseract"))


def test_each_recogniser_gets_its_own_preprocessing(recognizer):
    """AnyText's PP-OCRv3 sees crops as the reference prepares them (a tall crop turned a quarter, align_corners
    resize); rapidocr's PP-OCRv4 as PaddleOCR does."""
    import torch.nn.functional as F

    from zoo.models.anytext.recognizer import anytext_line_tensor

    tall = torch.rand(1, 3, 60, 20)
    out = recognizer.preprocess(tall)
    turned = tall.transpose(2, 3).flip(2)  # (1, 3, 20, 60): the reference's transpose(1, 2).flip(dims=[1]) on CHW
    expected = (F.interpolate(turned, size=(48, 144), mode="bilinear", align_corners=True) - 0.5) / 0.5
    assert out.shape == (1, 3, 48, 320) and torch.allclose(out[..., :144], expected) and not out[..., 144:].any()
    wide = torch.rand(1, 3, 24, 100)
    assert torch.allclose(anytext_line_tensor(wide), line_tensor(wide, align_corners=True))
    assert not torch.allclose(line_tensor(wide, align_corners=True), line_tensor(wide))  # the two resizes differ
    v4 = TextRecognizer()
    assert torch.equal(v4.preprocess(tall), line_tensor(tall))  # PaddleOCR's: no turn, align_corners False
