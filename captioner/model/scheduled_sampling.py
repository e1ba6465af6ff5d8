"""Scheduled sampling (Bengio et al. 2015): in teacher-forced training, feed the decoder its own
previous prediction instead of the reference word with a probability ramped up over training,
so that it learns to go on from its own mistakes, as it must when it writes captions alone.

A separate loop over the decoder's public steps (`prepare`, `recur`, `logits`): with probability 0
training takes `CaptionDecoder.forward`, whose speed this leaves alone.
"""

from __future__ import annotations

import torch

from captioner.model.decoder import CaptionDecoder
from captioner.model.tokens import START_ID, UNK_ID


def sampling_probability(epoch: float, max_prob: float, start_epoch: float = 0.0,
                         ramp_epochs: float = 0.0) -> float:
    """The probability at (fractional) `epoch`: 0 until `start_epoch`, then rising linearly to
    `max_prob` over `ramp_epochs` (at once if 0) and staying there."""
    if max_prob <= 0 or epoch < start_epoch:
        return 0.0
    if ramp_epochs <= 0:
        return float(max_prob)
    return float(max_prob) * min(1.0, (epoch - start_epoch) / ramp_epochs)


def scheduled_sampling_forward(decoder: CaptionDecoder, features: torch.Tensor, tokens: torch.Tensor,
                               probability: float, pad_id: int = 0,
                               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`decoder(features, tokens)`, except that each input word after `<start>` is, with
    `probability` (drawn per caption and step), a word sampled from the decoder's own prediction at
    the step before. Logits (B, T-1, V) predicting tokens[:, 1:] and attention (B, T-1, R).

    Sampled words carry no gradient (Bengio et al. 2015). Padding stays padding. The model's own
    word is drawn among the words a caption can hold (not <pad>, <start> or <unk>), as at test time.
    """
    regions, keys, state = decoder.prepare(features)
    inputs = tokens[:, :-1]
    never = torch.tensor(sorted({pad_id, START_ID, UNK_ID}), device=tokens.device)
    logits: list[torch.Tensor] = []
    attention = []
    for t in range(inputs.shape[1]):
        words = inputs[:, t]
        if t > 0 and probability > 0:
            with torch.no_grad():
                allowed = logits[-1].float().index_fill(-1, never, float("-inf"))
                own = torch.multinomial(torch.softmax(allowed, dim=-1), 1, generator=generator).squeeze(1)
                use_own = torch.rand(words.shape, device=words.device, generator=generator) < probability
                words = torch.where(use_own & (words != pad_id), own, words)
        state, weights = decoder.recur(decoder.dropout(decoder.embedding(words)), regions, keys, state)
        logits.append(decoder.logits(state[0]))
        attention.append(weights)
    return torch.stack(logits, dim=1), torch.stack(attention, dim=1)
