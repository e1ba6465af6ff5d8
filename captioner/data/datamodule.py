"""LightningDataModule over a features file: caption batches to train, image batches to score."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from captioner.data.resident_features import ResidentFeatures, fits_on_device, resident_bytes
from captioner.data.training_order import EpochShuffle, ResumableDataLoader
from captioner.data.vocabulary import Vocabulary
from captioner.errors import ConfigError
from captioner.features.feature_file import FeatureFile
from captioner.model.tokens import SPECIAL_TOKENS
from captioner.worker_processes import worker_context


class CaptionBatches(Dataset):
    """Training items are captions: (features of its image, caption ids, length).

    `__getitems__` lets the DataLoader fetch a whole batch with one sorted read of the features.
    """

    def __init__(self, features: FeatureFile | ResidentFeatures, caption_ids: np.ndarray,
                 lengths: np.ndarray, caption_image: np.ndarray, static_length: int | None = None):
        self.features = features
        if static_length is not None and caption_ids.shape[1] < static_length:  # compiled step: one shape
            caption_ids = np.pad(caption_ids, ((0, 0), (0, static_length - caption_ids.shape[1])))
        self.static_length = static_length
        self.caption_ids = caption_ids
        self.lengths = lengths
        self.caption_image = caption_image

    def __len__(self) -> int:
        return len(self.caption_ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        lengths = self.lengths[indices]
        longest = self.static_length or int(lengths.max())
        features = self.features.read(self.caption_image[indices])
        return {
            "features": (torch.from_numpy(features) if isinstance(features, np.ndarray)
                         else features).float(),
            "tokens": torch.from_numpy(self.caption_ids[indices, :longest]),
            "lengths": torch.from_numpy(lengths),
        }


class ImageBatches(Dataset):
    """Evaluation items are images: (features, image index); references stay on the host."""

    def __init__(self, features: FeatureFile, image_indices: np.ndarray, rescale: float = 1.0):
        self.features = features
        self.image_indices = image_indices
        self.rescale = rescale

    def __len__(self) -> int:
        return len(self.image_indices)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        images = self.image_indices[indices]
        features = torch.from_numpy(self.features.read(images)).float()
        return {"features": features if self.rescale == 1.0 else features * self.rescale,
                "image_index": torch.from_numpy(images)}


def _already_batched(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return batch


def batches_done_in_epoch(trainer: pl.Trainer | None) -> int:
    """Batches of the current epoch that `trainer` has finished (Lightning's own count)."""
    return 0 if trainer is None else trainer.fit_loop.epoch_loop.batch_progress.current.processed


def epoch_batches(trainer: pl.Trainer | None) -> float:
    """Batches an epoch of `trainer` has: fewer than its loader's under `limit_train_batches`."""
    return math.inf if trainer is None else trainer.num_training_batches


class CaptionDataModule(pl.LightningDataModule):
    """Reads the features file's metadata, builds (or takes) the vocabulary, serves batches.

    `vocabulary=None` builds it from the train split's captions only.
    """

    def __init__(self, features_path: Path, batch_size: int = 64, eval_batch_size: int = 128,
                 num_workers: int = 0, in_memory: bool = True, max_caption_length: int = 20,
                 max_words: int | None = 5000, min_word_count: int = 1,
                 vocabulary: Vocabulary | None = None, val_split: str = "val",
                 test_split: str = "test", shuffle_seed: int = 0,
                 static_caption_length: int | None = None, resident_device: str | None = None,
                 rescale_eval_features: float = 1.0):
        super().__init__()
        # Evaluation features x this: a model trained on another file's feature_scale (evaluate.py).
        self.rescale_eval_features = rescale_eval_features
        # The compiled training step (model.compile): every batch padded to this many tokens,
        # the last, smaller batch dropped, so the step has one shape.
        self.static_caption_length = static_caption_length
        # Training features on this device once, where they fit in its free memory.
        self.resident_device = resident_device
        self.resident: ResidentFeatures | None = None
        self.shuffle_seed = shuffle_seed  # the training order: a function of (seed, epoch)
        self.features_path = Path(features_path)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.in_memory = in_memory
        self.max_caption_length = max_caption_length
        self.max_words = max_words
        self.min_word_count = min_word_count
        self.vocabulary = vocabulary
        self.split_of_stage = {"val": val_split, "test": test_split}
        self.features: FeatureFile | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.features is not None:
            return
        self.features = FeatureFile(self.features_path)
        for split in ("train", *self.split_of_stage.values()):
            if len(self.features.splits.get(split, ())) == 0:
                raise ValueError(f"{self.features_path}: split {split!r} has no images")
        if self.in_memory:
            self.features.load_into_memory()
        self.train_captions = self.features.split_captions("train")
        if self.vocabulary is None:
            self.vocabulary = Vocabulary.build(
                (self.features.captions[c] for c in self.train_captions),
                max_words=self.max_words, min_count=self.min_word_count)
            if len(self.vocabulary) == len(SPECIAL_TOKENS):
                # a model of only <pad>/<start>/<end>/<unk> writes <pad> (greedy) or fails (sampling)
                raise ConfigError(
                    f"{self.features_path}: no word of the train split's {len(self.train_captions)} "
                    f"captions is seen text.min_word_count={self.min_word_count} times, so the "
                    "vocabulary would hold no word; lower text.min_word_count")
        ids, lengths = self.vocabulary.encode_batch(
            [self.features.captions[c] for c in self.train_captions], self.max_caption_length)
        self.caption_ids, self.caption_lengths = ids.numpy(), lengths.numpy()
        train_images = self.features.splits["train"]
        if self.resident_device and fits_on_device(resident_bytes(self.features, train_images),
                                                   self.resident_device):
            self.resident = ResidentFeatures(self.features, train_images, self.resident_device)

    def references(self, split: str) -> dict[int, list[str]]:
        """Image index -> raw reference captions, for every image of `split`."""
        assert self.features is not None, "call setup() first"
        return self.features.references(split)

    def eval_split(self, stage: str) -> str:
        return self.split_of_stage[stage]

    @property
    def feature_dim(self) -> int:
        assert self.features is not None, "call setup() first"
        return self.features.channels

    def train_dataloader(self) -> DataLoader:
        owners = self.features.caption_image[self.train_captions]
        dataset = CaptionBatches(self.resident or self.features, self.caption_ids, self.caption_lengths,
                                 owners, self.static_caption_length)
        workers = 0 if self.resident is not None else self.num_workers  # batches are indexed on the device
        return self._resumable_loader(dataset, self.batch_size, workers, self.trainer,
                                      drop_last=self.static_caption_length is not None)

    def _resumable_loader(self, dataset: Dataset, batch_size: int, workers: int,
                          trainer: pl.Trainer | None, drop_last: bool = False) -> DataLoader:
        """A training loader for `trainer` whose position checkpoints record (training_order.py):
        a resumed run goes on at the batch it stopped, in the same order; under DDP each rank
        takes its share."""
        rank, replicas = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return ResumableDataLoader(dataset, batch_size=batch_size,
                                   sampler=EpochShuffle(len(dataset), self.shuffle_seed, rank, replicas),
                                   # its own generator: starting an epoch draws no global RNG number
                                   generator=torch.Generator().manual_seed(self.shuffle_seed),
                                   num_workers=workers, collate_fn=_already_batched,
                                   persistent_workers=workers > 0,
                                   multiprocessing_context=worker_context(workers),
                                   drop_last=drop_last, batches_done=lambda: batches_done_in_epoch(trainer),
                                   epoch_batches=lambda: epoch_batches(trainer))

    def train_image_dataloader(self, batch_size: int, trainer: pl.Trainer | None) -> DataLoader:
        """Batches of train images (features, image_index), shuffled: the self-critical stage's,
        whose position is that stage's `trainer`'s."""
        images = self.features.splits["train"]
        return self._resumable_loader(ImageBatches(self.features, images), batch_size, self.num_workers,
                                      trainer)

    def _eval_loader(self, stage: str) -> DataLoader:
        images = self.features.splits[self.split_of_stage[stage]]
        return DataLoader(ImageBatches(self.features, images, self.rescale_eval_features),
                          batch_size=self.eval_batch_size,
                          num_workers=self.num_workers, collate_fn=_already_batched,
                          persistent_workers=self.num_workers > 0,
                          multiprocessing_context=worker_context(self.num_workers))

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
