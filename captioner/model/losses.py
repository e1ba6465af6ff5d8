"""The training losses: cross-entropy on real tokens, the attention penalty, and self-critical's
policy gradient with its baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_caption_loss(logits: torch.Tensor, targets: torch.Tensor, pad_id: int = 0,
                        label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over real (non-`<pad>`) target positions only."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=pad_id, label_smoothing=label_smoothing)


def doubly_stochastic_penalty(attention: torch.Tensor, step_mask: torch.Tensor) -> torch.Tensor:
    """Xu et al. (2015): push each region's attention, summed over steps, towards 1.

    Averaged over regions (not summed) so the weight means the same for a 8x8 and a 14x14 grid.
    """
    per_region = (attention * step_mask.unsqueeze(-1)).sum(dim=1)  # (B, R)
    return ((1.0 - per_region) ** 2).mean()


def mean_of_others(rewards: torch.Tensor, samples: int) -> torch.Tensor:
    """Each sample's baseline: the mean reward of the other samples of its image."""
    per_image = rewards.view(-1, samples)
    return ((per_image.sum(dim=1, keepdim=True) - per_image) / (samples - 1)).view(-1)


def self_critical_loss(log_probs: torch.Tensor, advantage: torch.Tensor) -> torch.Tensor:
    """-(advantage * caption log-probability), averaged over captions.

    `log_probs` (N, L) are the drawn tokens' log-probabilities, 0 after `<end>` (sample_captions
    writes them so); `advantage` (N,) is reward - baseline, a constant here.
    """
    return -(advantage.detach() * log_probs.sum(dim=1)).mean()
