"""Our PyTorch PP-OCR recogniser against onnxruntime on the same ONNX model (rapidocr's PP-OCRv4)."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from zoo.models.anytext.glyphs import fonts, line_image
from zoo.models.anytext.recognizer import OnnxGraphModule, TextRecognizer, line_tensor, load_anytext_recognizer, rapidocr_model_path


@pytest.fixture(scope="module")
def recognizer():
    return TextRecognizer()


def _lines(texts):
    images = torch.stack([torch.as_tensor(line_image(t)) for t in texts])[:, None].repeat(1, 3, 1, 1)
    return line_tensor(1.0 - images)  # dark text on a light background


def test_outputs_equal_onnxruntime_on_rendered_lines(recognizer):
    texts = ["HELLO 2026", "AnyText", "OPEN 24h"]
    if any("CJK" in f for f in fonts()):
        texts.append("文档增强")
    x = _lines(texts)
    session = ort.InferenceSession(str(rapidocr_model_path()), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        probs, neck = recognizer(x)
    assert np.abs(probs.numpy() - expected).max() < 1e-4
    assert neck.shape == (len(texts), 40, 120) and recognizer.neck_channels == 120 and recognizer.feature_dim == 4800
    read = [t for t, _ in recognizer.decode(probs)]
    from rapidocr_onnxruntime.ch_ppocr_rec.utils import CTCLabelDecode

    theirs = CTCLabelDecode(character=recognizer.characters[1:-1])(expected)
    assert read == [t for t, _ in theirs]  # rapidocr's own CTC decoding of onnxruntime's output
    assert [t.strip() for t in read] == texts


def test_gradients_reach_the_input(recognizer):
    x = _lines(["STOP"]).requires_grad_(True)
    _, neck = recognizer(x)
    neck.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in recognizer.parameters())


def test_unknown_operator_is_named():
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Einsum", ["a", "a"], ["b"], equation="ij,jk->ik")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 2])],
                              [helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 2])])
    with pytest.raises(NotImplementedError, match="Einsum"):
        OnnxGraphModule(helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 12)]))


def test_anytext_recognizer_checkpoint_layout():
    from zoo.models.anytext.ppocr_v3 import PPOCRv3Recognizer  # the layout itself: tests/models/test_anytext_ppocr_v3.py

    state = {f"module.{k}": v for k, v in PPOCRv3Recognizer(6625).state_dict().items()}
    rec = load_anytext_recognizer(state)
    assert (rec.classes, rec.neck_channels, rec.feature_dim) == (6625, 64, 2560)  # AnyText's Linear(2560, 768)
    with pytest.raises(KeyError, match="head.fc.weight"):
        load_anytext_recognizer({"backbone.x": torch.zeros(1)})
