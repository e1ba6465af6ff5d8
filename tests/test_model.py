import itertools
import random

import pytest
import torch

from captioner.model import BahdanauAttention, CaptionDecoder, beam_search, greedy_decode
from captioner.model.losses import doubly_stochastic_penalty, masked_caption_loss


def test_attention_weights_sum_to_one_and_are_positive():
    torch.manual_seed(0)
    attention = BahdanauAttention(feature_dim=8, hidden_dim=6, attention_dim=5)
    regions, hidden = torch.randn(3, 10, 8), torch.randn(3, 6)
    context, weights = attention(regions, attention.keys(regions), hidden)
    assert weights.shape == (3, 10)
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(3))
    assert torch.all(weights > 0)
    torch.testing.assert_close(context, (weights.unsqueeze(-1) * regions).sum(dim=1))


def test_attention_gives_masked_regions_zero_weight():
    torch.manual_seed(0)
    attention = BahdanauAttention(8, 6, 5)
    regions = torch.randn(2, 4, 8)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    _, weights = attention(regions, attention.keys(regions), torch.randn(2, 6), mask)
    assert torch.all(weights[0, 2:] == 0) and torch.all(weights[0, :2] > 0)
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(2))


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_region_keys_are_computed_once_per_batch(cell):
    decoder = CaptionDecoder(vocab_size=12, feature_dim=8, embed_dim=6, hidden_dim=10,
                             attention_dim=4, cell=cell)
    calls = []
    decoder.attention.key.register_forward_hook(lambda *args: calls.append(1))
    decoder.vocab_out.register_forward_hook(lambda *args: calls.append(2))
    logits, attention = decoder(torch.randn(2, 5, 8), torch.randint(1, 12, (2, 7)))
    assert logits.shape == (2, 6, 12) and attention.shape == (2, 6, 5)
    assert calls.count(1) == 1  # keys once, not per step
    assert calls.count(2) == 1  # one vocabulary projection over all steps


def test_padded_positions_never_contribute_to_the_loss():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 9, requires_grad=True)
    targets = torch.tensor([[5, 6, 2, 0], [5, 2, 0, 0]])
    loss = masked_caption_loss(logits, targets)
    loss.backward()
    padded = targets == 0
    assert torch.all(logits.grad[padded] == 0)
    assert torch.all(logits.grad[~padded].abs().sum(-1) > 0)
    changed = logits.detach().clone()
    changed[padded] = 100 * torch.randn_like(changed[padded])
    torch.testing.assert_close(masked_caption_loss(changed, targets), loss.detach())
    # and it is the plain mean over the real positions
    real = torch.nn.functional.cross_entropy(logits.detach()[~padded], targets[~padded])
    torch.testing.assert_close(loss.detach(), real)


def test_doubly_stochastic_penalty_is_zero_for_attention_summing_to_one_per_region():
    steps, regions = 4, 4
    attention = torch.eye(regions).unsqueeze(0)  # step t looks only at region t
    assert doubly_stochastic_penalty(attention, torch.ones(1, steps)) == 0
    # masking out a step leaves its region unattended: (1 - 0)^2 for one region in four
    assert doubly_stochastic_penalty(attention, torch.tensor([[1.0, 1, 1, 0]])) == 0.25


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_greedy_decoding_of_a_batch_equals_decoding_each_image_alone(cell):
    torch.manual_seed(0)
    decoder = CaptionDecoder(vocab_size=15, feature_dim=8, embed_dim=6, hidden_dim=10,
                             attention_dim=4, cell=cell).eval()
    features = torch.randn(6, 5, 8)
    tokens, attention = greedy_decode(decoder, features, max_length=7, start_id=1, end_id=2)
    for i in range(len(features)):
        alone, alone_attention = greedy_decode(decoder, features[i:i + 1], 7, 1, 2)
        width = alone.shape[1]
        assert tokens[i, :width].tolist() == alone[0].tolist()
        assert torch.all(tokens[i, width:] == 0)  # padding after the image's own end
        torch.testing.assert_close(attention[i, :width], alone_attention[0])


def test_greedy_decoding_pads_after_end_and_stops_at_max_length():
    torch.manual_seed(0)
    decoder = CaptionDecoder(vocab_size=15, feature_dim=8, embed_dim=6, hidden_dim=10,
                             attention_dim=4).eval()
    with torch.no_grad():  # make <end> (id 2) the only choice
        decoder.vocab_out.bias.fill_(-10)
        decoder.vocab_out.bias[2] = 10
    tokens, _ = greedy_decode(decoder, torch.randn(3, 5, 8), max_length=7, start_id=1, end_id=2)
    assert tokens.shape == (3, 2) and (tokens[:, 0] != 2).all() and (tokens[:, 1] == 2).all()  # one word
    with torch.no_grad():  # never <end>
        decoder.vocab_out.bias[2] = -10
        decoder.vocab_out.bias[7] = 10
    tokens, attention = greedy_decode(decoder, torch.randn(3, 5, 8), 7, 1, 2)
    assert tokens.shape == (3, 8) and attention.shape == (3, 8, 5)


def _decoder(cell: str = "gru", vocab: int = 15) -> CaptionDecoder:
    torch.manual_seed(0)
    return CaptionDecoder(vocab_size=vocab, feature_dim=8, embed_dim=6, hidden_dim=10,
                          attention_dim=4, cell=cell).eval()


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_beam_of_one_equals_greedy_token_for_token(cell):
    decoder, features = _decoder(cell), torch.randn(6, 5, 8)
    greedy, greedy_attention = greedy_decode(decoder, features, 7, 1, 2)
    beam, beam_attention = beam_search(decoder, features, 7, 1, 2, beam_size=1)
    assert beam.tolist() == greedy.tolist()
    torch.testing.assert_close(beam_attention, greedy_attention)


def test_beam_search_of_a_batch_equals_each_image_alone():
    decoder, features = _decoder(), torch.randn(5, 5, 8)
    tokens, _ = beam_search(decoder, features, 7, 1, 2, beam_size=4)
    for i in range(len(features)):
        alone, _ = beam_search(decoder, features[i:i + 1], 7, 1, 2, beam_size=4)
        width = alone.shape[1]
        assert tokens[i, :width].tolist() == alone[0].tolist()
        assert torch.all(tokens[i, width:] == 0)


def test_beam_search_always_returns_a_caption_even_when_no_beam_ends():
    decoder = _decoder()
    with torch.no_grad():  # <end> (id 2) is never likely
        decoder.vocab_out.bias[2] = -1e4
    tokens, attention = beam_search(decoder, torch.randn(3, 5, 8), max_length=7, start_id=1,
                                    end_id=2, beam_size=3, length_penalty=0.7)
    assert tokens.shape == (3, 8) and attention.shape == (3, 8, 5)
    assert torch.all(tokens != 2) and torch.all(tokens != 0)


def _trigrams(row: list[int]) -> list[tuple[int, ...]]:
    words = [t for t in row if t not in (0, 2)]
    return [tuple(words[i:i + 3]) for i in range(len(words) - 2)]


def test_trigram_blocking_never_repeats_a_trigram():
    decoder, features = _decoder(vocab=6), torch.randn(4, 5, 8)
    search = dict(max_length=12, start_id=1, end_id=2, beam_size=2)
    unblocked, _ = beam_search(decoder, features, **search)
    # the same search unblocked repeats a trigram in every row (this decoder loves word 5)
    assert all(len(set(_trigrams(row))) < len(_trigrams(row)) for row in unblocked.tolist())
    tokens, _ = beam_search(decoder, features, **search, block_trigram_repeats=True)
    for row in tokens.tolist():
        trigrams = _trigrams(row)
        assert len(trigrams) >= 5 and len(trigrams) == len(set(trigrams))  # long enough to repeat one


def _decoder_of_varied_lengths(images: int) -> tuple[CaptionDecoder, torch.Tensor]:
    """A decoder trained on three random captions of 1-4 words (3 and 4) per image, so that
    captions of several lengths compete for the best score."""
    torch.manual_seed(0)
    rng = random.Random(0)
    decoder, features = _decoder(vocab=5).train(), torch.randn(images, 5, 8)
    rows = []
    for _ in range(images):
        for _ in range(3):
            n = rng.randint(1, 4)
            rows.append([1] + [rng.choice([3, 4]) for _ in range(n)] + [2] + [0] * (4 - n))
    tokens = torch.tensor(rows)
    optimiser = torch.optim.Adam(decoder.parameters(), lr=0.03)
    for _ in range(150):
        logits, _ = decoder(features.repeat_interleave(3, 0), tokens)
        loss = masked_caption_loss(logits, tokens[:, 1:], 0)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return decoder.eval(), features


def _best_caption_by_enumeration(decoder: CaptionDecoder, features: torch.Tensor, max_length: int,
                                 length_penalty: float) -> list[int]:
    """Score every caption the search may return (words 3 and 4, `<end>` 2) and keep the best."""
    captions = [list(words) + [2] for n in range(max_length + 1)
                for words in itertools.product([3, 4], repeat=n)]
    captions += [list(words) for words in itertools.product([3, 4], repeat=max_length + 1)]  # cut
    best, best_score = None, float("-inf")
    for caption in captions:
        logits, _ = decoder(features, torch.tensor([[1] + caption + [0]]))  # trailing pad: never read
        log_probs = torch.log_softmax(logits[0, :len(caption)], dim=-1)
        score = log_probs.gather(1, torch.tensor(caption).unsqueeze(1)).sum().item()
        score /= ((5 + len(caption)) / 6) ** length_penalty
        if score > best_score:
            best, best_score = caption, score
    return best


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0, -0.5])
def test_a_beam_that_holds_every_open_caption_finds_the_best_one(length_penalty):
    decoder, features = _decoder_of_varied_lengths(images=30)
    with torch.no_grad():
        tokens, _ = beam_search(decoder, features, max_length=4, start_id=1, end_id=2, beam_size=16,
                                length_penalty=length_penalty)
        best = [_best_caption_by_enumeration(decoder, features[i:i + 1], 4, length_penalty)
                for i in range(len(features))]
    assert len({len(caption) for caption in best}) > 1  # lengths really competed
    assert [[t for t in row if t != 0] for row in tokens.tolist()] == best
