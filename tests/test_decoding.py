"""Decoding options as one typed value, and the caption-length arithmetic in one place."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from captioner.data.vocabulary import Vocabulary
from captioner.errors import ConfigError
from captioner.model import CaptionDecoder, greedy_decode, sample_captions
from captioner.model.decoding import GREEDY, DecodeOptions, decode
from captioner.model.tokens import END_ID, PAD_ID, SPECIAL_TOKENS, START_ID, UNK_ID, CaptionLength
from captioner.settings.reading import decode_settings


def test_options_come_from_the_config_and_change_only_where_given():
    options = DecodeOptions.from_config({"strategy": "beam", "beam_size": 5, "unknown_key": 1})
    assert options == DecodeOptions("beam", beam_size=5)
    changed = options.with_changes(beam_size=None, length_penalty=1.0)
    assert changed == DecodeOptions("beam", beam_size=5, length_penalty=1.0)
    assert changed.as_dict() == {"strategy": "beam", "beam_size": 5, "length_penalty": 1.0,
                                 "block_trigram_repeats": False, "allow_unk": False}
    with pytest.raises(ValueError, match="decode.strategy='bem': expected greedy or beam"):
        options.with_changes(strategy="bem")


@pytest.mark.parametrize("changes, message", [
    ({"beam_size": 0}, r"^decode.beam_size=0: expected an integer >= 1$"),
    ({"beam_size": 2.5}, r"^decode.beam_size=2.5: expected an integer >= 1$"),
    ({"length_penalty": -1}, r"^decode.length_penalty=-1: expected a number >= 0$"),
    ({"length_penalty": float("nan")}, r"^decode.length_penalty=nan: expected a number >= 0$"),
    ({"allow_unk": "yes"}, r"^decode.allow_unk='yes': expected true or false$"),
    ({"block_trigram_repeats": 1}, r"^decode.block_trigram_repeats=1: expected true or false$"),
], ids=["beam-size-0", "fractional-beam", "negative-length-penalty", "nan-length-penalty", "text-flag",
        "number-flag"])
def test_options_built_in_python_are_checked_as_the_settings_check_them(changes, message):
    # Before, only the strategy was checked: beam_size=0 failed later in beam search (IndexError).
    with pytest.raises(ConfigError, match=message):
        DecodeOptions("beam", **changes)
    with pytest.raises(ConfigError, match=message):
        GREEDY.with_changes(**changes)


def test_numpy_scalars_are_taken_as_the_python_values_they_hold():
    # Values from array code (a sweep over np.arange) failed in OmegaConf ("int64 is not a supported
    # primitive type") or went to results.json as types json cannot write.
    changes = {"strategy": np.str_("beam"), "beam_size": np.int64(4), "length_penalty": np.float32(0.5),
               "block_trigram_repeats": np.bool_(True), "allow_unk": np.bool_(False)}
    settings = decode_settings(changes)
    assert (settings.beam_size, settings.length_penalty, settings.block_trigram_repeats) == (4, 0.5, True)
    options = GREEDY.with_changes(**changes)
    assert options == DecodeOptions("beam", 4, 0.5, True, False)
    assert json.loads(json.dumps(options.as_dict())) == options.as_dict()
    assert all(type(value) in (str, int, float, bool) for value in options.as_dict().values())
    with pytest.raises(ConfigError, match="decode.beam_size=0: expected an integer >= 1"):
        decode_settings({"beam_size": np.int32(0)})


def test_caption_length_owns_the_token_arithmetic_and_the_vocabulary_agrees():
    length = CaptionLength(20)
    assert (length.with_end, length.with_start_and_end) == (21, 22)
    assert length.search_arguments() == (20, START_ID, END_ID, PAD_ID)
    vocabulary = Vocabulary.build(["a red circle"])
    assert tuple(vocabulary.words[:4]) == SPECIAL_TOKENS
    assert (vocabulary.pad_id, vocabulary.start_id, vocabulary.end_id) == (PAD_ID, START_ID, END_ID)
    # a training row of the longest caption is exactly with_start_and_end tokens
    ids, lengths = vocabulary.encode_batch([" ".join(["red"] * 30)], length.max_words)
    assert ids.shape[1] == lengths.max() == length.with_start_and_end


def test_decode_follows_the_options():
    torch.manual_seed(0)
    decoder = CaptionDecoder(12, feature_dim=8, embed_dim=16, hidden_dim=32, attention_dim=16).eval()
    features = torch.randn(3, 5, 8)
    length = CaptionLength(6)
    greedy, _ = decode(decoder, features, GREEDY, length)
    expected, _ = greedy_decode(decoder, features, 6, START_ID, END_ID, PAD_ID)
    assert torch.equal(greedy, expected)
    one_beam, _ = decode(decoder, features, DecodeOptions("beam", beam_size=1), length)
    assert torch.equal(one_beam, greedy)  # a beam of one is greedy search
    assert greedy.shape[1] <= length.with_end


def test_a_beam_of_one_is_greedy_also_where_bf16_makes_words_tie():
    """bf16 keeps ~3 digits: over 5,000 words, two logits are often exactly equal, and argmax
    (first) and topk (CPU: last) broke such ties apart, so a bf16 run's beam_size=1 test captions
    differed from its greedy validation ones."""
    torch.manual_seed(0)
    decoder = CaptionDecoder(5000, feature_dim=16, embed_dim=32, hidden_dim=64, attention_dim=32).eval()
    with torch.no_grad():
        decoder.vocab_out.weight.mul_(0.03)  # near-flat logits, as early in training
    features = torch.randn(32, 9, 16)
    length = CaptionLength(6)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits, _, _ = decoder.step(torch.full((32,), START_ID), *decoder.prepare(features))
        greedy, _ = decode(decoder, features, GREEDY, length)
        one_beam, attention = decode(decoder, features, DecodeOptions("beam", beam_size=1), length)
    top2 = logits.float().topk(2, dim=1).values
    assert (top2[:, 0] == top2[:, 1]).any()  # ties at the very first word, so the check below can fail
    assert torch.equal(one_beam, greedy) and attention.dtype == torch.float32


def test_unk_is_never_written_unless_research_use_allows_it():
    torch.manual_seed(0)
    decoder = CaptionDecoder(12, feature_dim=8, embed_dim=16, hidden_dim=32, attention_dim=16).eval()
    with torch.no_grad():
        decoder.vocab_out.bias[UNK_ID] += 50.0  # <unk> is the model's favourite word
    features, length = torch.randn(3, 5, 8), CaptionLength(6)
    for options in (GREEDY, DecodeOptions("beam", beam_size=3)):
        tokens, _ = decode(decoder, features, options, length)
        assert not (tokens == UNK_ID).any() and tokens.shape[1] >= 1, options
        allowed, _ = decode(decoder, features, options.with_changes(allow_unk=True), length)
        assert (allowed == UNK_ID).any(), options
    sampled, _ = sample_captions(decoder, features, 4, *length.search_arguments(), banned=(UNK_ID,))
    assert not (sampled == UNK_ID).any()
    unbanned, _ = sample_captions(decoder, features, 4, *length.search_arguments())
    assert (unbanned == UNK_ID).any()


def test_every_search_writes_at_least_one_word_where_the_model_would_end_at_once():
    # An untrained model (or an odd image) whose likeliest first token is <end> got the empty caption.
    torch.manual_seed(0)
    decoder = CaptionDecoder(12, feature_dim=8, embed_dim=16, hidden_dim=32, attention_dim=16).eval()
    with torch.no_grad():
        decoder.vocab_out.bias[END_ID] = 50.0  # <end> the likeliest token at every step
    features = torch.randn(3, 5, 8)
    length = CaptionLength(6)
    for options in (GREEDY, DecodeOptions("beam", beam_size=3), DecodeOptions("beam", beam_size=3,
                                                                              length_penalty=1.0)):
        tokens, _ = decode(decoder, features, options, length)
        assert (tokens[:, 0] != END_ID).all() and (tokens[:, 1] == END_ID).all(), options
    sampled, log_probs = sample_captions(decoder, features, 4, *length.search_arguments())
    assert (sampled[:, 0] != END_ID).all() and torch.isfinite(log_probs).all()
