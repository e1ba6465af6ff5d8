"""The training split's features held on the device once, batches indexed there.

Where the split fits in the device's free memory (COCO InceptionV3: 123k x 64 x 2048 float16 =
32 GB on an 80 GB card), a batch is one gather on the device: no DataLoader workers, no copies
from the host. The same code runs with `device="cpu"` (tests, and a CPU "resident" benchmark row).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from captioner.features.feature_file import FeatureFile

READ_IMAGES = 2048  # images per HDF5 read while filling the device tensor: bounded host memory


def resident_bytes(features: FeatureFile, images: np.ndarray) -> int:
    """Device memory the features of `images` take, float16 as stored."""
    return len(np.unique(images)) * features.regions * features.channels * 2


def fits_on_device(nbytes: int, device: torch.device | str, share: float = 0.5) -> bool:
    """Whether `nbytes` fit in `share` of the device's free memory (the rest is for training)."""
    device = torch.device(device)
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= share * free


class ResidentFeatures:
    """`read(image indices)` like FeatureFile's, answered from one float16 tensor on `device`."""

    def __init__(self, features: FeatureFile, images: np.ndarray, device: torch.device | str):
        self.device = torch.device(device)
        images = np.unique(np.asarray(images, dtype=np.int64))
        row = torch.full((features.num_images,), -1, dtype=torch.long)
        row[torch.from_numpy(images)] = torch.arange(len(images))
        self.resident = (row >= 0).numpy()  # on the host: checked without a sync
        self.row = row.to(self.device)  # image index -> row of `values` (-1: not resident)
        self.values = torch.empty((len(images), features.regions, features.channels),
                                  dtype=torch.float16, device=self.device)
        for start in range(0, len(images), READ_IMAGES):
            chunk = features.read(images[start:start + READ_IMAGES])
            self.values[start:start + len(chunk)] = torch.from_numpy(chunk.astype(np.float16, copy=False))
        features.release()  # the loader's workers, forked next, open their own

    def read(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """Features (B, R, C) float16 on the device, in the given order."""
        indices = np.asarray(indices, dtype=np.int64)
        if not self.resident[indices].all():  # row -1 would read the last resident image's features
            absent = indices[~self.resident[indices]]
            raise IndexError(f"images {absent[:5].tolist()} are not resident on {self.device} (only the "
                             "images it was built with are)")
        index = torch.as_tensor(indices).to(self.device, non_blocking=True)
        rows = self.row[index]
        return self.values[rows]
