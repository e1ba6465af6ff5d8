"""A run's folder: the one place that knows its layout.

Training writes it, a resume finds its checkpoint and its recorded overrides, evaluation finds the
features the run trained on and writes beside it, and the sweep report reads it:

    .hydra/             config.yaml, overrides.yaml, hydra.yaml (Hydra writes them)
    metrics.json        status, test scores, history, ... (written first with status running)
    code.diff           the uncommitted changes the run trained with (only when there were any)
    code.before-resume.<sha>.diff   a resumed run's earlier changes, where they were not these
    vocabulary.json     the train split's words
    captions.json       every test image: id, generated caption, references, CIDEr-D, BLEU counts
    examples.md         a few test captions with their attention figures (plots/)
    checkpoints/        best-*.ckpt and last.ckpt
    evaluations/<split>-<decode>/   captioner.evaluate's scores.json and results.json
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from captioner.paths import absolute, default_features_path, write_atomically
from captioner.records.run_summary import RunSummary


@dataclass(frozen=True)
class RunFolder:
    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def of_checkpoint(cls, checkpoint: Path) -> RunFolder:
        """The run that wrote `checkpoint` (`<run>/checkpoints/<name>.ckpt`)."""
        return cls(Path(checkpoint).resolve().parent.parent)

    @classmethod
    def all_under(cls, root: Path) -> list[RunFolder]:
        """Every run folder below `root`: folders where Hydra recorded the overrides."""
        return [cls(p.parent.parent) for p in Path(root).glob("**/.hydra/overrides.yaml")]

    # --- the layout ---

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def code_patch(self) -> Path:
        return self.path / "code.diff"

    def earlier_code_patch(self, sha256: str) -> Path:
        """Where a resumed run keeps the patch an earlier process of it trained with."""
        return self.path / f"code.before-resume.{sha256[:12]}.diff"

    @property
    def vocabulary(self) -> Path:
        return self.path / "vocabulary.json"

    @property
    def captions(self) -> Path:
        return self.path / "captions.json"

    @property
    def examples(self) -> Path:
        return self.path / "examples.md"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def overrides_file(self) -> Path:
        return self.path / ".hydra" / "overrides.yaml"

    @property
    def config_file(self) -> Path:
        return self.path / ".hydra" / "config.yaml"

    @property
    def hydra_file(self) -> Path:
        return self.path / ".hydra" / "hydra.yaml"

    @property
    def hydra_dir(self) -> Path:
        return self.path / ".hydra"

    @property
    def hydra_backup(self) -> Path:
        """`.hydra/` as it was before this command: Hydra rewrites it before a resume can be checked."""
        return self.path / ".hydra.before-resume"

    def evaluation(self, split: str, decoding: str, features: Path | None = None) -> Path:
        """Where `captioner.evaluate` writes one evaluation: a folder per split, decoding (its
        label: strategy and settings) and, when they are not the run's own, features file."""
        own = self.features_file()
        other = features is not None and (own is None or Path(features).resolve() != own.resolve())
        name = f"{split}-{decoding}" + (f"-{Path(features).stem}" if other else "")
        return self.path / "evaluations" / name

    # --- reading and writing ---

    def summary(self) -> RunSummary | None:
        """metrics.json, or None when the run has not written it; unreadable JSON raises ValueError."""
        return RunSummary.read(self.metrics)

    def back_up_config(self) -> None:
        if self.hydra_dir.is_dir() and self.metrics.is_file():
            shutil.rmtree(self.hydra_backup, ignore_errors=True)
            shutil.copytree(self.hydra_dir, self.hydra_backup)

    def restore_config_backup(self) -> None:
        if self.hydra_backup.is_dir():
            shutil.rmtree(self.hydra_dir, ignore_errors=True)
            self.hydra_backup.rename(self.hydra_dir)

    def drop_config_backup(self) -> None:
        shutil.rmtree(self.hydra_backup, ignore_errors=True)

    @property
    def refusal(self) -> Path:
        """Why a sweep's last command left the earlier run here as it was (say, a resume with a
        changed model): the sweep's end and report count the run as not done as asked."""
        return self.path / "refused.txt"

    def record_refusal(self, reason: str) -> None:
        write_atomically(self.refusal, reason.rstrip() + "\n")

    def clear_refusal(self) -> None:
        self.refusal.unlink(missing_ok=True)

    def refused(self) -> str | None:
        try:
            return self.refusal.read_text().strip() or None
        except FileNotFoundError:
            return None

    def overrides(self) -> list[str]:
        """The command-line overrides Hydra recorded for this run ([] when none were)."""
        if not self.overrides_file.is_file():
            return []
        return list(yaml.safe_load(self.overrides_file.read_text()) or [])

    def _hydra_value(self, key: str) -> Any:
        """`key` of what Hydra recorded of the run (`.hydra/hydra.yaml`; None without it)."""
        return OmegaConf.select(OmegaConf.load(self.hydra_file), key) if self.hydra_file.is_file() else None

    def config_name(self) -> str | None:
        """The primary config the run was composed from (`--config-name`; Hydra records it)."""
        return self._hydra_value("hydra.job.config_name")

    def config(self) -> DictConfig | None:
        return OmegaConf.load(self.config_file) if self.config_file.is_file() else None

    def launch_dir(self) -> Path:
        """Where the run was started: relative paths in its config start there (Hydra records it)."""
        launched = self._hydra_value("hydra.runtime.cwd")
        return Path(launched) if launched else self.path

    def features_file(self) -> Path | None:
        """The features file the run trained on.

        From metrics.json (written as soon as the features are ready, so also for a killed run),
        else from the config recorded in `.hydra/`; None when neither says.
        """
        try:
            found = (self.summary() or RunSummary()).features
        except ValueError:
            found = None
        if found:
            return Path(found)
        config = self.config()
        if config is None:
            return None
        base = self.launch_dir()
        try:
            if config.get("features_path"):
                return absolute(config.features_path, base)
            from captioner.features.cache import default_path  # torch: only where it is needed
            from captioner.settings import read_settings
            settings = read_settings(config, base)
            path = default_path(settings.data_root, settings.dataset.name, settings.cnn)
        except Exception:  # a config this code cannot read, or an interpolation it cannot resolve
            return None
        earlier = default_features_path(settings.data_root, settings.dataset.name, settings.cnn.name,
                                        settings.cnn.trainable_blocks)
        return earlier if earlier.is_file() and not path.is_file() else path

    def recorded_dataset(self) -> tuple[str, Path, dict[str, Any]] | None:
        """(source, root, options) of the dataset the run's recorded config names, its root made
        absolute from where the run started; None when the config is missing or cannot be resolved."""
        config = self.config()
        if config is None:
            return None
        try:
            dataset = OmegaConf.to_container(config, resolve=True)["dataset"]
            return dataset["source"], absolute(dataset["root"], self.launch_dir()), dataset
        except Exception:  # an interpolation that cannot be resolved here (e.g. an unset env variable)
            return None
