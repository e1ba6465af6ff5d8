"""Caption search over a trained decoder: greedy, batched over images."""

from __future__ import annotations

import torch

from captioner.model.decoder import CaptionDecoder


@torch.no_grad()
def greedy_decode(decoder: CaptionDecoder, features: torch.Tensor, max_length: int, start_id: int,
                  end_id: int, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Most likely word at each step for every image at once.

    Returns token ids (B, L) without `<start>`, `<end>` included where emitted and `<pad>`
    after it, with L <= max_length + 1, and the attention weights (B, L, R) of each step.
    """
    regions, keys, state = decoder.prepare(features)
    batch = features.shape[0]
    tokens = torch.full((batch,), start_id, dtype=torch.long, device=features.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=features.device)
    words, attention = [], []
    for _ in range(max_length + 1):  # max_length words, then room for <end>
        logits, state, weights = decoder.step(tokens, regions, keys, state)
        tokens = logits.argmax(dim=-1).masked_fill(finished, pad_id)
        words.append(tokens)
        attention.append(weights.masked_fill(finished.unsqueeze(1), 0.0))
        finished |= tokens == end_id
        if finished.all():
            break
    return torch.stack(words, dim=1), torch.stack(attention, dim=1)
