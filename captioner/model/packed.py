"""Teacher forcing that spends no arithmetic on padding (the eager training path).

A batch is padded to its longest caption, but the loss reads only real target positions: on
Flickr8k about 70% of them. Here the captions are sorted longest first, so at step t the rows
still writing are a prefix of the batch and the recurrence runs on that prefix alone; the hidden
layer and the vocabulary projection (about half of a step's arithmetic) run on the real positions
alone. Same parameters and, without dropout, the same loss and gradients as `CaptionDecoder.forward`
followed by the masked loss (tests/test_fast_step.py). Shapes change with every batch, so the
compiled, graph-captured pass (captioner/model/compiled.py) keeps the padded one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from captioner.model.decoder import CaptionDecoder


def packed_teacher_forcing(decoder: CaptionDecoder, features: torch.Tensor, tokens: torch.Tensor,
                           pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits (N, V) of the N real (non-`pad_id`) positions of tokens[:, 1:], their targets (N,),
    and the attention (B, T-1, R) in the batch's own row order, zero at padded positions.

    Padding must only follow a caption (as the datamodule writes it), never sit inside one.
    """
    padded_steps = tokens.shape[1] - 1
    lengths, order = (tokens[:, 1:] != pad_id).sum(dim=1).sort(descending=True)
    steps = int(lengths[0])
    tokens = tokens.index_select(0, order)[:, :steps + 1]  # sorted, cut to the longest caption
    # Rows still writing at each step: a prefix of the sorted batch, shorter step by step.
    rows = (lengths.unsqueeze(0) > torch.arange(steps, device=lengths.device).unsqueeze(1)).sum(dim=1)
    rows = rows.tolist()

    regions, keys, state = decoder.prepare(features.index_select(0, order))
    word_gates = decoder.word_gates(decoder.dropout(decoder.embedding(tokens[:, :-1])))
    hidden_weights = decoder.hidden_weights()
    hiddens, attention = [], []
    for t, active in enumerate(rows):
        state = tuple(s[:active] for s in state)
        state, weights = decoder.advance(word_gates[:active, t], regions[:active], keys[:active],
                                         state, hidden_weights)
        hiddens.append(state[0])
        attention.append(F.pad(weights, (0, 0, 0, len(order) - active)))
    # Step-major, like the targets below: both list step 0's rows, then step 1's, ...
    logits = decoder.logits(torch.cat(hiddens))
    targets = tokens[:, 1:].t()
    packed_targets = targets[targets != pad_id]

    # Attention back in the batch's order and length, for the doubly stochastic penalty.
    by_step = F.pad(torch.stack(attention, dim=1), (0, 0, 0, padded_steps - steps))
    return logits, packed_targets, by_step.index_select(0, order.argsort())
