"""Where a CNN's weights came from, as structured data: part of a features file's identity (a
file from other weights is stale), recorded in every checkpoint, and read back to rebuild the CNN.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from captioner.settings import CnnSettings

KINDS = ("random", "file", "package", "torchvision", "timm")


@dataclass(frozen=True)
class WeightsSource:
    """`kind` random (a seeded, calibrated random network), file (`cnn.weights_path`), package
    (a file an installed Python package ships, `cnn.weights=package`), torchvision (a weights
    enum) or timm (a pretrained tag)."""

    kind: str
    name: str | None = None  # file, package: its name; torchvision: <Family>.<NAME>; timm: <model>.<tag>
    seed: int = 0  # random only
    calibration_images: int = 0  # random only
    sha256: str | None = None  # file, package: what the file held (a moved file is found again)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"weights kind {self.kind!r}: expected one of {', '.join(KINDS)}")

    @classmethod
    def of(cls, cnn: CnnSettings, weights_family: str) -> WeightsSource:
        """The source `cnn` asks for; `weights_family` is the architecture's enum class
        (e.g. VGG16_Weights) or "timm"."""
        if cnn.weights_path:
            path = Path(cnn.weights_path).expanduser()
            return cls("file", path.name, sha256=file_sha256(path) if path.is_file() else None)
        if cnn.weights is None:
            return cls("random", seed=int(cnn.seed), calibration_images=int(cnn.calibration_images))
        if weights_family == "timm":
            return cls("timm", f"{cnn.name}.{cnn.weights}")
        return cls("torchvision", f"{weights_family}.{cnn.weights}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> WeightsSource:
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for the features file and the checkpoint; only the fields of this kind."""
        values = asdict(self)
        if self.kind != "random":
            del values["seed"], values["calibration_images"]
        else:
            del values["name"]
        if self.kind not in ("file", "package"):
            del values["sha256"]
        return values

    def label(self) -> str:
        """One short string for logs and summaries, e.g. `file:mobilenet_v2_imagenet.pth`."""
        if self.kind == "random":
            return f"random(seed={self.seed},calibration_images={self.calibration_images})"
        return f"{self.kind}:{self.name}"

    def cnn_options(self) -> dict[str, Any]:
        """The `cnn` config keys that select these weights again (a file's path must be given)."""
        if self.kind == "random":
            return {"weights": None, "weights_path": None, "seed": self.seed,
                    "calibration_images": self.calibration_images}
        if self.kind == "file":
            return {"weights": None, "weights_path": None, "seed": 0, "calibration_images": 0}
        if self.kind == "package":
            return {"weights": "package", "weights_path": None, "seed": 0, "calibration_images": 0}
        return {"weights": str(self.name).rsplit(".", 1)[-1], "weights_path": None, "seed": 0,
                "calibration_images": 0}


def file_sha256(path: Path) -> str:
    """The file's sha256, computed once per (path, size, modification time) in a process."""
    stat = Path(path).stat()
    return _sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
