"""PVD converters: a random-weight transformers BERT folder fills the text encoder; a PVD checkpoint
saved elsewhere (nested, DDP-prefixed) round-trips through the card's converter."""

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from zoo import registry
from zoo.models.pvd.convert import convert_state_dict, load_text_encoder
from zoo.weights import WeightsError


def _bert(config, **overrides):
    kw = dict(vocab_size=config.vocab_size, hidden_size=config.text_hidden, num_hidden_layers=config.text_layers,
              num_attention_heads=config.text_heads, intermediate_size=config.text_intermediate,
              max_position_embeddings=config.text_max_positions)
    return BertForMaskedLM(BertConfig(**{**kw, **overrides}))


def test_transformers_bert_folder_fills_the_text_encoder(tmp_path):
    torch.manual_seed(0)
    pipe = registry.create_model("pvd", "micro", weights="random")
    bert = _bert(pipe.config).eval()
    bert.save_pretrained(tmp_path / "bert")
    (tmp_path / "bert" / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    before = {k: v.clone() for k, v in pipe.model.state_dict().items() if not k.startswith("text_encoder.")}
    vocab = load_text_encoder(pipe, tmp_path / "bert")
    assert vocab == str(tmp_path / "bert" / "vocab.txt")
    ids = torch.tensor([[2, 5, 9, 3, 0, 0]])
    mask = (ids != 0).long()
    want = bert.bert(input_ids=ids, attention_mask=mask).last_hidden_state
    got = pipe.model.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(got, want)
    for k, v in before.items():  # nothing else touched
        torch.testing.assert_close(pipe.model.state_dict()[k], v)


def test_bert_with_other_sizes_is_refused_by_name(tmp_path):
    pipe = registry.create_model("pvd", "micro", weights="random")
    _bert(pipe.config, hidden_size=32, num_attention_heads=2).save_pretrained(tmp_path / "bert")
    with pytest.raises(WeightsError, match="hidden_size=32"):
        load_text_encoder(pipe, tmp_path / "bert")


def test_pvd_checkpoint_round_trip_through_the_converter(tmp_path):
    torch.manual_seed(0)
    source = registry.create_model("pvd", "micro", weights="random")
    torch.save({"model": {f"module.{k}": v for k, v in source.model.state_dict().items()}, "epoch": 3}, tmp_path / "ckpt.pth")
    other = registry.create_model("pvd", "micro", weights=tmp_path / "ckpt.pth")
    for spec in source.graph_specs():
        inputs = spec.example_inputs()
        for a, b in zip(source.run_graph(spec.name, *inputs), other.run_graph(spec.name, *inputs)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    bert_only = {"bert.embeddings.word_embeddings.weight": torch.zeros(2, 2)}
    with pytest.raises(WeightsError, match="load_text_encoder"):
        convert_state_dict(bert_only, source.config)
