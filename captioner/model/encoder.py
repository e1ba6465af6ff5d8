"""Projection of the CNN's region features into the decoder's space (the prior study's CNN_Encoder)."""

from __future__ import annotations

import torch
from torch import nn


class RegionEncoder(nn.Module):
    """(B, R, C) CNN regions -> (B, R, D) with one linear layer and a ReLU."""

    def __init__(self, feature_dim: int, out_dim: int, dropout: float = 0.0):
        super().__init__()
        self.project = nn.Linear(feature_dim, out_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, regions: torch.Tensor) -> torch.Tensor:
        return self.dropout(torch.relu(self.project(regions)))
