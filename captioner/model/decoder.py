"""Attention RNN decoder (Show, Attend and Tell) with a switchable GRU or LSTM cell."""

from __future__ import annotations

import torch
from torch import nn

from captioner.model.attention import BahdanauAttention
from captioner.model.encoder import RegionEncoder

State = tuple[torch.Tensor, ...]  # (h,) for a GRU, (h, c) for an LSTM

CELLS = {"gru": nn.GRUCell, "lstm": nn.LSTMCell}


class CaptionDecoder(nn.Module):
    """Regions + previous word -> next-word logits, one step at a time.

    Each step attends over the projected regions with the previous hidden state, feeds
    [word embedding; context] to the cell, and (outside the recurrence) maps the hidden state
    through a hidden layer to vocabulary logits.
    """

    def __init__(self, vocab_size: int, feature_dim: int, embed_dim: int = 256,
                 hidden_dim: int = 512, attention_dim: int = 256, cell: str = "gru",
                 dropout: float = 0.3, pad_id: int = 0):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown rnn cell {cell!r}; known: {', '.join(CELLS)}")
        self.cell_type = cell
        self.hidden_dim = hidden_dim
        self.encoder = RegionEncoder(feature_dim, embed_dim)
        self.attention = BahdanauAttention(embed_dim, hidden_dim, attention_dim)
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.cell = CELLS[cell](2 * embed_dim, hidden_dim)
        self.init_state = nn.Linear(embed_dim, hidden_dim * (2 if cell == "lstm" else 1))
        self.dropout = nn.Dropout(dropout)
        self.hidden_out = nn.Linear(hidden_dim, hidden_dim)
        self.vocab_out = nn.Linear(hidden_dim, vocab_size)

    def prepare(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, State]:
        """Per-batch work done once: projected regions, attention keys and the initial state."""
        regions = self.encoder(features)
        keys = self.attention.keys(regions)
        parts = 2 if self.cell_type == "lstm" else 1
        state = torch.tanh(self.init_state(regions.mean(dim=1))).chunk(parts, dim=-1)
        return regions, keys, tuple(s.contiguous() for s in state)

    def recur(self, embedded: torch.Tensor, regions: torch.Tensor, keys: torch.Tensor,
              state: State) -> tuple[State, torch.Tensor]:
        """One recurrence step on an embedded word (B, E): new state and attention (B, R)."""
        context, weights = self.attention(regions, keys, state[0])
        step_input = torch.cat([embedded, context], dim=-1)
        if self.cell_type == "lstm":
            state = self.cell(step_input, state)
        else:
            state = (self.cell(step_input, state[0]),)
        return state, weights

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states (..., H) -> vocabulary logits (..., V)."""
        return self.vocab_out(self.dropout(torch.relu(self.hidden_out(self.dropout(hidden)))))

    def step(self, tokens: torch.Tensor, regions: torch.Tensor, keys: torch.Tensor,
             state: State) -> tuple[torch.Tensor, State, torch.Tensor]:
        """Decode one word for each row: logits (B, V), new state, attention (B, R)."""
        state, weights = self.recur(self.embedding(tokens), regions, keys, state)
        return self.logits(state[0]), state, weights

    def forward(self, features: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing: logits (B, T-1, V) predicting tokens[:, 1:] and attention (B, T-1, R)."""
        regions, keys, state = self.prepare(features)
        embedded = self.dropout(self.embedding(tokens[:, :-1]))  # all input words at once
        hiddens, attention = [], []
        for t in range(embedded.shape[1]):
            state, weights = self.recur(embedded[:, t], regions, keys, state)
            hiddens.append(state[0])
            attention.append(weights)
        # One vocabulary projection over all steps instead of one per step.
        return self.logits(torch.stack(hiddens, dim=1)), torch.stack(attention, dim=1)
