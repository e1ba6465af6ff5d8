"""Captions sampled from the decoder's distribution, with their log-probabilities (for SCST)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from captioner.model.decoder import CaptionDecoder
from captioner.model.search import never_at


def sample_captions(decoder: CaptionDecoder, features: torch.Tensor, samples: int, max_length: int,
                    start_id: int, end_id: int, pad_id: int = 0,
                    temperature: float = 1.0,
                    banned: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """`samples` captions per image, each word drawn from softmax(logits / temperature).

    Returns token ids (B * samples, L) in the layout of `greedy_decode` (no `<start>`, `<end>`
    kept, `<pad>` after it; row b * samples + j is sample j of image b) and the log-probability
    of each drawn token (B * samples, L), 0 after `<end>`. Gradients flow through the
    log-probabilities (call it outside no_grad); the draws themselves are not differentiated.
    """
    regions, keys, state = decoder.prepare(features)
    # The image work is done once, then shared by its samples.
    regions, keys = regions.repeat_interleave(samples, 0), keys.repeat_interleave(samples, 0)
    state = tuple(s.repeat_interleave(samples, 0) for s in state)
    rows = regions.shape[0]
    tokens = torch.full((rows,), start_id, dtype=torch.long, device=features.device)
    finished = torch.zeros(rows, dtype=torch.bool, device=features.device)
    never = torch.zeros(2, decoder.vocab_out.out_features, dtype=torch.bool, device=features.device)
    never[0, never_at(0, pad_id, start_id, end_id, banned)] = True  # the first word: not <end> either
    never[1, never_at(1, pad_id, start_id, end_id, banned)] = True
    words, log_probs = [], []
    for step in range(max_length + 1):  # max_length words, then room for <end>
        logits, state, _ = decoder.step(tokens, regions, keys, state)
        masked = logits.float().masked_fill(never[min(step, 1)].unsqueeze(0), float("-inf"))
        step_log_probs = torch.log_softmax(masked / temperature, -1)
        with torch.no_grad():
            drawn = torch.multinomial(step_log_probs.exp(), 1).squeeze(1)
        tokens = drawn.masked_fill(finished, pad_id)
        chosen = step_log_probs.gather(1, tokens.unsqueeze(1)).squeeze(1)
        log_probs.append(chosen.masked_fill(finished, 0.0))
        words.append(tokens)
        finished = finished | (tokens == end_id)
        if finished.all():
            break
    return torch.stack(words, dim=1), torch.stack(log_probs, dim=1)
