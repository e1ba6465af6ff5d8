"""Bahdanau (additive) attention over image regions."""

from __future__ import annotations

import torch
from torch import nn


class BahdanauAttention(nn.Module):
    """score_r = v . tanh(W_k x_r + W_q h);  weights = softmax over regions.

    The region keys `W_k x_r` do not change during decoding, so `keys()` computes them once per
    batch and every step reuses them.
    """

    def __init__(self, feature_dim: int, hidden_dim: int, attention_dim: int):
        super().__init__()
        self.key = nn.Linear(feature_dim, attention_dim)
        self.query = nn.Linear(hidden_dim, attention_dim)
        self.score = nn.Linear(attention_dim, 1)

    def keys(self, regions: torch.Tensor) -> torch.Tensor:
        """(B, R, F) -> (B, R, A)."""
        return self.key(regions)

    def forward(self, regions: torch.Tensor, keys: torch.Tensor, hidden: torch.Tensor,
                region_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Context (B, F) and weights (B, R) for decoder state `hidden` (B, H).

        `region_mask` (B, R), True where a region exists, gives absent regions zero weight.
        """
        return self.attend(regions, keys, self.query(hidden), region_mask)

    def attend(self, regions: torch.Tensor, keys: torch.Tensor, query: torch.Tensor,
               region_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward` with the query `W_q h` (B, A) already computed (the decoder computes it in
        the same matrix product as its cell's hidden-state gates)."""
        scores = self.score(torch.tanh(keys + query.unsqueeze(1))).squeeze(-1)
        if region_mask is not None:
            scores = scores.masked_fill(~region_mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        context = torch.bmm(weights.unsqueeze(1), regions).squeeze(1)
        return context, weights
