"""The fast training path: the decoder's fused step, the compiled pass, static-shape
batches, and training features resident on a device (cpu here; the same code runs on CUDA)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from captioner.data.datamodule import CaptionDataModule
from captioner.data.resident_features import ResidentFeatures
from captioner.features.cache import ensure_features
from captioner.features.feature_file import FeatureFile
from captioner.model import CaptionDecoder
from captioner.model.compiled import CompiledForward, compiled_graphs, gradients_match, use_compile
from captioner.model.losses import doubly_stochastic_penalty, masked_caption_loss
from captioner.model.packed import packed_teacher_forcing
from captioner.sources import load_records
from tests.conftest import settings_of


@pytest.fixture
def path(tiny_cfg, shared_data_root) -> Path:
    records = load_records("shapes", Path(tiny_cfg.dataset.root), tiny_cfg.dataset)
    return ensure_features(settings_of(tiny_cfg), records, shared_data_root)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_decoder_step_is_the_torch_cell_on_the_same_parameters(cell):
    """The split input gates and the stacked [W_hh; W_query] product are nn.GRUCell / nn.LSTMCell."""
    torch.manual_seed(0)
    decoder = CaptionDecoder(50, 16, 8, 12, 10, cell).eval().double()
    features, tokens = torch.randn(3, 5, 16, dtype=torch.double), torch.randint(1, 50, (3, 7))
    logits, attention = decoder(features, tokens)
    regions, keys, state = decoder.prepare(features)
    for t in range(tokens.shape[1] - 1):
        context, weights = decoder.attention(regions, keys, state[0])
        step_input = torch.cat([decoder.embedding(tokens[:, t]), context], dim=-1)
        state = decoder.cell(step_input, state) if cell == "lstm" else (decoder.cell(step_input, state[0]),)
        torch.testing.assert_close(logits[:, t], decoder.logits(state[0]), rtol=0, atol=1e-12)
        torch.testing.assert_close(attention[:, t], weights, rtol=0, atol=1e-12)


def _loss(forward, features, tokens):
    logits, attention = forward(features, tokens)
    targets = tokens[:, 1:]
    return masked_caption_loss(logits, targets) + doubly_stochastic_penalty(
        attention, (targets != 0).float())


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_compiled_pass_gives_the_eager_loss_and_gradients(cell):
    torch.manual_seed(0)
    decoder = CaptionDecoder(40, 24, 16, 32, 16, cell, dropout=0.0)
    features = torch.rand(6, 4, 24)
    tokens = torch.randint(4, 40, (6, 6))
    tokens[:, 0], tokens[3:, 4:] = 1, 0  # padded rows too
    eager = _loss(decoder, features, tokens)
    eager_grads = torch.autograd.grad(eager, list(decoder.parameters()))
    before = compiled_graphs()
    compiled = _loss(CompiledForward(decoder), features, tokens)
    compiled_grads = torch.autograd.grad(compiled, list(decoder.parameters()))
    assert compiled_graphs() == before + 1
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
    for got, want in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_packed_pass_gives_the_padded_loss_and_gradients(cell):
    """Skipping padding changes the arithmetic done, not its result: same loss (cross-entropy with
    label smoothing + attention penalty), same gradient of every parameter, same attention."""
    torch.manual_seed(0)
    decoder = CaptionDecoder(40, 24, 16, 32, 16, cell, dropout=0.0).double()
    features = torch.rand(7, 4, 24, dtype=torch.double)
    tokens = torch.randint(4, 40, (7, 9))
    tokens[:, 0] = 1
    for row, words in enumerate([7, 2, 5, 7, 0, 3, 1]):  # unsorted lengths, one of them empty
        tokens[row, 1 + words] = 2
        tokens[row, 2 + words:] = 0

    def loss(logits, targets, attention):
        step_mask = (tokens[:, 1:] != 0).double()
        return (masked_caption_loss(logits, targets, label_smoothing=0.1)
                + doubly_stochastic_penalty(attention, step_mask))

    logits, attention = decoder(features, tokens)
    padded = loss(logits, tokens[:, 1:], attention)
    padded_grads = torch.autograd.grad(padded, list(decoder.parameters()))
    packed_logits, packed_targets, packed_attention = packed_teacher_forcing(decoder, features, tokens)
    real = tokens[:, 1:] != 0
    assert packed_logits.shape == (int(real.sum()), 40) and bool((packed_targets != 0).all())
    packed = loss(packed_logits, packed_targets, packed_attention)
    packed_grads = torch.autograd.grad(packed, list(decoder.parameters()))
    torch.testing.assert_close(packed, padded, rtol=1e-12, atol=1e-12)
    for got, want in zip(packed_grads, padded_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(packed_attention, attention * real.unsqueeze(-1), rtol=0, atol=1e-12)
    # the packed logits are the padded ones at the real positions, step by step
    torch.testing.assert_close(packed_logits.sort(dim=0).values,
                               logits[real].sort(dim=0).values, rtol=0, atol=1e-12)


def test_static_batches_compile_once_for_the_whole_epoch(path):
    words = 4  # captions cut to 4 words: a short pass compiles in seconds
    static = words + 2
    datamodule = CaptionDataModule(path, batch_size=8, max_caption_length=words,
                                   static_caption_length=static)
    datamodule.setup()
    loader = datamodule.train_dataloader()
    batches = list(loader)
    assert len(batches) == len(datamodule.train_captions) // 8  # the last, smaller batch dropped
    assert {tuple(b["tokens"].shape) for b in batches} == {(8, static)}
    torch.manual_seed(0)
    decoder = CaptionDecoder(len(datamodule.vocabulary), datamodule.feature_dim, 8, 16, 8, "gru")
    forward = CompiledForward(decoder, backend="aot_eager")  # the same graph capture, no C++ build
    before = compiled_graphs()
    for batch in batches[:4]:
        _loss(forward, batch["features"], batch["tokens"]).backward()
    assert compiled_graphs() == before + 1  # the first batch compiles; no batch after it does


@pytest.mark.parametrize("setting, device, expected", [
    ("auto", "cuda", True), ("auto", "cpu", False), (True, "cpu", True), ("false", "cuda", False)])
def test_compile_switch(setting, device, expected):
    assert use_compile(setting, device) is expected


def test_the_gradient_check_has_an_absolute_floor_for_gradients_that_are_zero_in_truth():
    big, bias = torch.tensor([0.5, -2.0]), torch.tensor([1e-9])  # eager: attention.score.bias is ~0
    same, worst = gradients_match([big * (1 + 1e-4), torch.tensor([3e-10])], [big, bias])
    assert same and worst == pytest.approx(0.7, rel=1e-3)  # 7e-10 relative to 1e-9: noise, not a mismatch
    assert not gradients_match([big * 1.1, bias], [big, bias])[0]  # a 10% difference is one
    assert not gradients_match([big, torch.tensor([1e-3])], [big, bias])[0]  # ... and so is a real bias


def test_compile_switch_names_a_bad_value():
    with pytest.raises(ValueError, match="model.compile='yes': expected auto, true or false"):
        use_compile("yes", "cuda")


def test_resident_features_answer_like_the_file(path):
    features = FeatureFile(path)
    train = features.splits["train"]
    resident = ResidentFeatures(features, train, "cpu")
    asked = np.asarray([train[3], train[0], train[3], train[-1]])
    got = resident.read(asked)
    assert got.dtype == torch.float16 and got.shape == (4, features.regions, features.channels)
    np.testing.assert_array_equal(got.numpy(), features.read(asked))
    # an image that is not resident (a val image) is refused: row -1 read the last resident one's
    with pytest.raises(IndexError, match=rf"images \[{features.splits['val'][0]}\] are not resident"):
        resident.read([train[0], features.splits["val"][0]])


def test_resident_training_batches_match_the_streamed_ones(path):
    streamed = CaptionDataModule(path, batch_size=8, in_memory=False)
    resident = CaptionDataModule(path, batch_size=8, in_memory=False, resident_device="cpu")
    for datamodule in (streamed, resident):
        datamodule.setup()
    assert streamed.resident is None and resident.resident is not None
    orders = []
    for datamodule in (streamed, resident):
        torch.manual_seed(0)  # the same shuffle for both
        orders.append(list(datamodule.train_dataloader()))
    for a, b in zip(*orders, strict=True):
        torch.testing.assert_close(a["features"], b["features"], rtol=0, atol=0)
        torch.testing.assert_close(a["tokens"], b["tokens"], rtol=0, atol=0)
