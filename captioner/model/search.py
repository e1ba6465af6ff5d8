"""Caption search over a trained decoder, batched over images: greedy and beam search."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from captioner.model.decoder import CaptionDecoder


def never_at(step: int, pad_id: int, start_id: int, end_id: int, banned: Sequence[int]) -> list[int]:
    """The ids no caption may hold at `step`: <pad>, <start>, `banned`, and <end> first of all (a
    caption has at least one word; an untrained or odd model's likeliest first token can be <end>)."""
    return [pad_id, start_id, *banned, *((end_id,) if step == 0 else ())]


@torch.no_grad()
def greedy_decode(decoder: CaptionDecoder, features: torch.Tensor, max_length: int, start_id: int,
                  end_id: int, pad_id: int = 0,
                  banned: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """Most likely word at each step for every image at once; `banned` ids are never written.

    Returns token ids (B, L) without `<start>`, `<end>` included where emitted and `<pad>`
    after it, with L <= max_length + 1, and the attention weights (B, L, R) of each step. A
    caption that has not ended by then is cut there: max_length + 1 words, no `<end>`.
    """
    regions, keys, state = decoder.prepare(features)
    batch = features.shape[0]
    tokens = torch.full((batch,), start_id, dtype=torch.long, device=features.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=features.device)
    words, attention = [], []
    for step in range(max_length + 1):  # max_length words, then room for <end>
        logits, state, weights = decoder.step(tokens, regions, keys, state)
        logits[:, never_at(step, pad_id, start_id, end_id, banned)] = float("-inf")
        tokens = logits.argmax(dim=-1).masked_fill(finished, pad_id)
        words.append(tokens)
        attention.append(weights.masked_fill(finished.unsqueeze(1), 0.0))
        finished |= tokens == end_id
        if finished.all():
            break
    return torch.stack(words, dim=1), torch.stack(attention, dim=1)


def _length_normaliser(length: float, length_penalty: float) -> float:
    """GNMT's length penalty ((5 + length) / 6) ** alpha."""
    return ((5.0 + length) / 6.0) ** length_penalty


def _block_repeated_trigrams(log_probs: torch.Tensor, history: torch.Tensor) -> None:
    """Forbid every word that would complete a trigram already in the row's history."""
    if history.shape[1] < 3:
        return
    # Where the last two words appeared before, the word that followed them is banned.
    seen = (history[:, :-2] == history[:, -2:-1]) & (history[:, 1:-1] == history[:, -1:])
    rows, positions = seen.nonzero(as_tuple=True)
    log_probs[rows, history[rows, positions + 2]] = float("-inf")


@torch.no_grad()
def beam_search(decoder: CaptionDecoder, features: torch.Tensor, max_length: int, start_id: int,
                end_id: int, pad_id: int = 0, beam_size: int = 3, length_penalty: float = 0.0,
                block_trigram_repeats: bool = False,
                banned: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """The best caption of each image under a beam of `beam_size`, all images at once.

    Same output as `greedy_decode` (which `beam_size=1` is, without a length penalty or trigram
    blocking). Each step keeps `beam_size` unfinished beams per image; a beam that emits `<end>`
    leaves the beam for the image's pool of finished captions, so short captions do not crowd out
    longer ones still being written. Finished captions are ranked by log-probability / ((5 + length) / 6) **
    length_penalty (GNMT; length counts `<end>`). Beams still open after `max_length + 1` tokens
    are finished there, so every image gets a caption. An image stops once no open beam can
    beat its worst pooled caption.
    """
    if beam_size == 1 and length_penalty == 0 and not block_trigram_repeats:
        # Greedy itself: in bf16 words tie often, and argmax and topk break ties differently.
        tokens, attention = greedy_decode(decoder, features, max_length, start_id, end_id, pad_id, banned)
        return tokens, attention.float()
    batch, k = features.shape[0], beam_size
    steps = max_length + 1  # max_length words, then room for <end>
    device = features.device
    regions, keys, state = decoder.prepare(features)
    # Every image's beams side by side: row b * k + j is beam j of image b.
    regions, keys = regions.repeat_interleave(k, 0), keys.repeat_interleave(k, 0)
    state = tuple(s.repeat_interleave(k, 0) for s in state)
    first_row = torch.arange(batch, device=device).unsqueeze(1) * k
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # one open beam at the start, so the first step does not pick k copies
    tokens = torch.full((batch * k,), start_id, dtype=torch.long, device=device)
    history = torch.zeros((batch * k, 0), dtype=torch.long, device=device)
    looked = torch.zeros((batch * k, 0, regions.shape[1]), device=device)
    pool_scores = torch.full((batch, k), float("-inf"), device=device)  # sorted, best first
    pool_tokens = torch.full((batch, k, steps), pad_id, dtype=torch.long, device=device)
    pool_attention = torch.zeros((batch, k, steps, regions.shape[1]), device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    for step in range(steps):
        logits, state, weights = decoder.step(tokens, regions, keys, state)
        weights = weights.float()  # the pool keeps float32 attention, whatever autocast computed
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        log_probs[:, never_at(step, pad_id, start_id, end_id, banned)] = float("-inf")
        if block_trigram_repeats:
            _block_repeated_trigrams(log_probs, history)
        vocab = log_probs.shape[1]
        candidates = (scores.view(-1, 1) + log_probs).view(batch, k * vocab)
        # 2k candidates: even if k of them end here, k remain to carry on.
        top, flat = candidates.topk(min(2 * k, k * vocab), dim=1)
        origin, word = flat // vocab + first_row, flat % vocab
        rank = torch.arange(top.shape[1], device=device)
        ends = word == end_id
        length = step + 1
        # Endings among the k best candidates join the pool; at the last step every such beam does.
        finishing = (ends | (step == steps - 1)) & (rank < k) & top.isfinite()
        finishing &= ~done.unsqueeze(1)
        if finishing.any():
            offered = top.masked_fill(~finishing, float("-inf")) / _length_normaliser(length, length_penalty)
            words = torch.cat([history[origin], word.unsqueeze(-1)], dim=-1)
            seen = torch.cat([looked[origin], weights[origin].unsqueeze(2)], dim=2)
            pool_scores, picked = torch.cat([pool_scores, offered], dim=1).topk(k, dim=1)
            fill = steps - length
            all_tokens = torch.cat([pool_tokens, F.pad(words, (0, fill), value=pad_id)], dim=1)
            all_attention = torch.cat([pool_attention, F.pad(seen, (0, 0, 0, fill))], dim=1)
            pool_tokens = all_tokens.gather(1, picked[..., None].expand(-1, -1, steps))
            pool_attention = all_attention.gather(
                1, picked[..., None, None].expand(-1, -1, steps, all_attention.shape[-1]))
        # The k best candidates that did not end stay open: sort endings after the rest, by rank.
        keep = (ends.long() * top.shape[1] + rank).argsort(dim=1)[:, :k]
        scores = top.gather(1, keep)
        origin, word = origin.gather(1, keep).view(-1), word.gather(1, keep).view(-1)
        state = tuple(s[origin] for s in state)
        history = torch.cat([history[origin], word.unsqueeze(1)], dim=1)
        looked = torch.cat([looked[origin], weights[origin].unsqueeze(1)], dim=1)
        tokens = word
        # Open scores only fall, so the best an open beam can still reach is its score now, divided
        # at the longest length under a positive penalty (which favours length), else at this one.
        reach = _length_normaliser(steps if length_penalty > 0 else length, length_penalty)
        done |= pool_scores[:, -1].isfinite() & (scores.max(dim=1).values / reach <= pool_scores[:, -1])
        if done.all():
            break
    width = int((pool_tokens[:, 0] != pad_id).sum(dim=1).max())
    return pool_tokens[:, 0, :width], pool_attention[:, 0, :width]
