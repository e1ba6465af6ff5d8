"""Attention RNN decoder (Show, Attend and Tell) with a switchable GRU or LSTM cell."""

from __future__ import annotations

import torch
import torch.nn.functional as F
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

    # The cell's input is [word embedding; context], so its input gates split into a word part,
    # known before decoding starts (one matrix product over all steps in `forward`), and a
    # context part, known only once the step has attended. The previous hidden state feeds both
    # the cell's hidden gates and the attention query: one matrix product gives both.
    # The arithmetic is nn.GRUCell's / nn.LSTMCell's, on the same parameters.

    def word_gates(self, embedded: torch.Tensor) -> torch.Tensor:
        """Embedded words (..., E) -> their share of the cell's input gates (..., G), bias included."""
        embed_dim = embedded.shape[-1]
        return F.linear(embedded, self.cell.weight_ih[:, :embed_dim], self.cell.bias_ih)

    def hidden_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """[W_hh; W_query] and its bias: the hidden gates and the attention query in one product."""
        weight = torch.cat([self.cell.weight_hh, self.attention.query.weight])
        bias = torch.cat([self.cell.bias_hh, self.attention.query.bias])
        return weight, bias

    def advance(self, word_gates: torch.Tensor, regions: torch.Tensor, keys: torch.Tensor,
                state: State, hidden_weights: tuple[torch.Tensor, torch.Tensor],
                ) -> tuple[State, torch.Tensor]:
        """One recurrence step from the word's gates (B, G): new state and attention (B, R)."""
        hidden_gates, query = F.linear(state[0], *hidden_weights).split(
            [hidden_weights[0].shape[0] - keys.shape[-1], keys.shape[-1]], dim=-1)
        context, weights = self.attention.attend(regions, keys, query)
        embed_dim = regions.shape[-1]
        input_gates = torch.addmm(word_gates, context, self.cell.weight_ih[:, embed_dim:].t())
        if self.cell_type == "lstm":
            i, f, g, o = (input_gates + hidden_gates).chunk(4, dim=-1)
            cell = torch.sigmoid(f) * state[1] + torch.sigmoid(i) * torch.tanh(g)
            return (torch.sigmoid(o) * torch.tanh(cell), cell), weights
        input_r, input_z, input_n = input_gates.chunk(3, dim=-1)
        hidden_r, hidden_z, hidden_n = hidden_gates.chunk(3, dim=-1)
        reset = torch.sigmoid(input_r + hidden_r)
        update = torch.sigmoid(input_z + hidden_z)
        new = torch.tanh(input_n + reset * hidden_n)
        return (new + update * (state[0] - new),), weights  # (1 - z) * n + z * h

    def recur(self, embedded: torch.Tensor, regions: torch.Tensor, keys: torch.Tensor,
              state: State) -> tuple[State, torch.Tensor]:
        """One recurrence step on an embedded word (B, E): new state and attention (B, R)."""
        return self.advance(self.word_gates(embedded), regions, keys, state, self.hidden_weights())

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
        word_gates = self.word_gates(embedded)                   # every step's word gates at once
        hidden_weights = self.hidden_weights()
        hiddens, attention = [], []
        for t in range(embedded.shape[1]):
            state, weights = self.advance(word_gates[:, t], regions, keys, state, hidden_weights)
            hiddens.append(state[0])
            attention.append(weights)
        # One vocabulary projection over all steps instead of one per step.
        return self.logits(torch.stack(hiddens, dim=1)), torch.stack(attention, dim=1)
