"""Self-critical sequence training (Rennie et al. 2017): the reward, the loss, the training step.

Each image gets `samples` captions drawn from the model; a caption's reward is its CIDEr-D
against the image's train references (document frequencies from all train references, the same
on every DDP rank) minus a baseline: the mean reward of the image's other samples ("mean"), or
the CIDEr-D of the image's greedy caption, decoded in eval mode without gradients ("greedy").
The loss is -(reward - baseline) * (sum of the caption's token log-probabilities), averaged over
captions: raising the probability of samples that beat the baseline, lowering the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from captioner.data.vocabulary import Vocabulary, tokenize
from captioner.errors import ConfigError
from captioner.model import greedy_decode, sample_captions
from captioner.model.losses import mean_of_others, self_critical_loss
from captioner.scoring.cider import CiderD
from captioner.settings.choices import SCST_BASELINES

BASELINES = SCST_BASELINES


class CiderReward:
    """CIDEr-D of token-id captions (as the decoder writes them) against train references.

    References are tokenized like the vocabulary (`vocabulary.tokenize`), in full (not cut at the
    training length); `<unk>` and words no reference has match nothing.
    """

    def __init__(self, references: Mapping[int, Sequence[str]], vocabulary: Vocabulary):
        self.cider = CiderD({index: [tokenize(text) for text in texts]
                             for index, texts in references.items()})
        self.word_ids = self.cider.ids_of_words(vocabulary.words)
        self.end_id, self.pad_id = vocabulary.end_id, vocabulary.pad_id
        largest = max(references)
        self.row_of_image = np.full(largest + 1, -1, dtype=np.int64)
        self.row_of_image[np.array(self.cider.image_keys)] = np.arange(len(self.cider.image_keys))

    def __call__(self, tokens: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor:
        """Rewards (N,) float32 on `tokens`' device for captions (N, L) of images `image_index` (N,)."""
        ids = tokens.detach().cpu().numpy()
        lengths = ((ids != self.pad_id) & (ids != self.end_id)).sum(axis=1)  # words precede <end>
        images = image_index.detach().cpu().numpy()
        rows = self.row_of_image[np.minimum(images, len(self.row_of_image) - 1)]
        if (rows < 0).any() or (images >= len(self.row_of_image)).any():
            raise KeyError("self-critical reward: a batch image has no train references")
        scores = self.cider.score_ids(self.word_ids[ids], lengths, rows)
        return torch.from_numpy(scores).to(tokens.device, torch.float32)


@dataclass
class SelfCritical:
    """The training step of the self-critical stage; `CaptionModule.training_step` hands over to it."""

    reward: CiderReward
    lr: float = 5e-5
    samples: int = 5
    baseline: str = "mean"
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.baseline not in BASELINES:
            raise ConfigError(f"scst.baseline={self.baseline!r}: expected one of {', '.join(BASELINES)}")
        if self.baseline == "mean" and self.samples < 2:
            raise ConfigError(f"scst.baseline=mean needs scst.samples >= 2 (got {self.samples}): "
                             "the baseline is the mean of the other samples; or use scst.baseline=greedy")

    def training_step(self, module: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Batches are images (features, image_index), not captions (self_critical_stage.py)."""
        images = batch["image_index"]
        features = module.regions(batch["features"])  # a trainable CNN top's grid learns from the reward too
        ids = module.caption_length.search_arguments()
        banned = module.test_decoding.banned_ids()  # the policy learned is the one captions are written with
        tokens, log_probs = sample_captions(module.decoder, features, self.samples, *ids,
                                            temperature=self.temperature, banned=banned)
        rewards = self.reward(tokens, images.repeat_interleave(self.samples))
        if self.baseline == "greedy":
            module.decoder.eval()  # the baseline is the test-time caption: no dropout
            greedy, _ = greedy_decode(module.decoder, module.test_time_regions(batch["features"]), *ids,
                                      banned=banned)
            module.decoder.train()
            baseline = self.reward(greedy, images).repeat_interleave(self.samples)
        else:
            baseline = mean_of_others(rewards, self.samples)
        loss = self_critical_loss(log_probs, rewards - baseline)
        words = ((tokens != Vocabulary.pad_id) & (tokens != Vocabulary.end_id)).sum(dim=1).float()
        batch_size = len(images)
        module.log("scst/reward", rewards.mean(), batch_size=batch_size)  # shown by ProgressBar
        module.log("scst/baseline", baseline.mean(), batch_size=batch_size)
        module.log("scst/loss", loss, batch_size=batch_size)
        module.log("scst/sample_length", words.mean(), batch_size=batch_size)
        return loss
