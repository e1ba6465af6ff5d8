"""The CNN's last blocks, trained with the decoder (`cnn.trainable_blocks`).

The features file then holds the activations that enter those blocks (scaled by the file's
`feature_scale`); this module undoes that scale, runs the blocks on the (h, w) grid and hands the
decoder the CNN's final grid as regions, scaled by `output_scale` so it has the unit RMS a frozen
CNN's grid is stored with. Its BatchNorm layers keep their ImageNet statistics (always in eval
mode: batches of one dataset's captions would shift them), while their affine weights train.
"""

from __future__ import annotations

import torch
from torch import nn


class CnnTop(nn.Module):
    def __init__(self, blocks: nn.Module, grid: tuple[int, int], input_scale: float, output_scale: float,
                 dropout: float = 0.0):
        super().__init__()
        self.blocks = blocks
        self.grid = (int(grid[0]), int(grid[1]))
        self.input_scale = float(input_scale)
        self.output_scale = float(output_scale)
        self.dropout = nn.Dropout(dropout)
        # The blocks arrive in eval mode (features/backbones.py), and Lightning 2.6 does not call
        # train() at the start of a fit: set the training mode here, or dropout never trains.
        self.train()

    def forward(self, regions: torch.Tensor) -> torch.Tensor:
        """(B, h*w, C_in) stored activations -> (B, h'*w', C_out) regions for the decoder."""
        batch, count, channels = regions.shape
        if count != self.grid[0] * self.grid[1]:
            raise ValueError(f"the trainable CNN top expects {self.grid[0]}x{self.grid[1]} regions, "
                             f"got {count}")
        grid = (regions / self.input_scale).transpose(1, 2).reshape(batch, channels, *self.grid)
        out = self.blocks(grid.contiguous(memory_format=torch.channels_last))
        return self.dropout(out.flatten(2).transpose(1, 2) * self.output_scale)

    def train(self, mode: bool = True) -> CnnTop:
        super().train(mode)
        for layer in self.modules():
            if isinstance(layer, nn.BatchNorm2d):
                layer.eval()  # frozen statistics; the affine weights still get gradients
        return self
