"""Every use of Lightning's private internals, in one place, checked against the versions it was tested on.

Lightning's public API lacks a few things this project needs (each function says which and why).
Only this module touches a private (underscore) name of Lightning: the others call these functions.
`PRIVATE_NAMES` lists the names; `missing_private_names()` checks that the installed Lightning still
has them all, and tests/test_lightning_seams.py fails when another module of the package names one.
A new Lightning release: run that test file on it, then add it to `TESTED_LIGHTNING_VERSIONS`.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.strategies.launchers import subprocess_script
from pytorch_lightning.utilities import CombinedLoader

log = logging.getLogger(__name__)

SEAM_FILE = Path(__file__)
# The pytorch-lightning releases tests/test_lightning_seams.py, test_scst.py, test_training.py,
# test_loggers.py and the resume tests passed on: every 2.6 release on the index (2.6.2 and 2.6.3 are
# not there); pyproject.toml allows 2.6.*. 2.5 is out for public API this project uses
# (`Trainer.fit(weights_only=...)`), not for these seams: its internals have the same names.
TESTED_LIGHTNING_VERSIONS = ("2.6.0", "2.6.1", "2.6.4", "2.6.5", "2.6.6")

# Lightning's private names used here, and only here.
PRIVATE_NAMES = (
    "_batches_that_stepped",  # TrainingEpochLoop: the loggers' step
    "_last_global_step_saved",  # ModelCheckpoint: the step it last saved at
    "_combined_loader_states_to_load",  # the fit loop: the train loader's position from a checkpoint
    "_combined_loader",  # the fit loop: the train loader Lightning built
    "_data_fetcher",  # the fit loop: what fetches batches from it
    "_load_state_dicts",  # CombinedLoader: loads the saved positions into its loaders
    "_trainer",  # LightningModule: the Trainer, or None (its `trainer` property raises then)
    "_hydra_subprocess_cmd",  # subprocess_script: the command DDP ranks 1..N-1 are started with
    "_SubprocessScriptLauncher",  # ... and the launcher that calls it (checked, not used)
    "_call_children_scripts",
    "_check_log_dir_exists",  # CSV ExperimentWriter: its folder check, called once before any row
    "_fs",  # CSVLogger and ExperimentWriter: their fsspec filesystem
    "_experiment",  # CSVLogger: its writer, made on first use
)


class UntestedLightningError(RuntimeError):
    """The installed pytorch-lightning is not one this module's private uses were tested on."""


def installed_lightning_version() -> str:
    return pl.__version__


def check_lightning_version() -> None:
    """Raise `UntestedLightningError` unless the installed Lightning is in `TESTED_LIGHTNING_VERSIONS`."""
    version = installed_lightning_version()
    if version not in TESTED_LIGHTNING_VERSIONS:
        raise UntestedLightningError(
            f"pytorch-lightning {version} is not a version {SEAM_FILE} was tested on "
            f"({', '.join(TESTED_LIGHTNING_VERSIONS)}); that file uses Lightning's private internals, "
            "which change without notice. Install a tested version, or run tests/test_lightning_seams.py "
            "(and the training tests) on this one and add it to TESTED_LIGHTNING_VERSIONS")


def warn_if_untested_lightning() -> bool:
    """At a run's start: log a warning when Lightning is untested (the run goes on). True: tested."""
    try:
        check_lightning_version()
    except UntestedLightningError as error:
        log.warning("%s", error)
        return False
    return True


# --- the seams ---


def batches_that_stepped(trainer: pl.Trainer) -> int:
    """The step the loggers log at: batches that stepped the optimizer, over all of `trainer`'s fits.

    Lightning has no public getter; `trainer.global_step` is another count (optimizer steps).
    """
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def resumed_logger_step(checkpoint: dict[str, Any]) -> int | None:
    """The loggers' step a run resumed from `checkpoint` logs from (its fit loop's
    `_batches_that_stepped`), or None when it does not say. After a second Trainer's fit (the
    self-critical stage) it differs from the checkpoint's `global_step`, which counts that
    Trainer's optimizer steps from 0. A checkpoint written at a training batch's end (mid-epoch)
    was written before Lightning logged that batch and counted it: the resume counts it then (its
    loop's `reset`), so the logs keep that batch's step."""
    try:
        fit_loop = checkpoint["loops"]["fit_loop"]
        stepped = int(fit_loop["epoch_loop.state_dict"]["_batches_that_stepped"])
    except (KeyError, TypeError, ValueError):
        return None
    try:
        progress = fit_loop["epoch_loop.batch_progress"]["current"]
        at_batch_end = int(progress["processed"]) > int(progress["completed"])
    except (KeyError, TypeError, ValueError):
        at_batch_end = False
    return stepped + 1 if at_batch_end else stepped


def set_batches_that_stepped(trainer: pl.Trainer, batches: int) -> None:
    """Make `trainer`'s loggers go on from step `batches` (a second Trainer after a first one's fit)."""
    trainer.fit_loop.epoch_loop._batches_that_stepped = batches


def forget_last_saved_step(callback: ModelCheckpoint) -> None:
    """Let `callback` save at any step again, also at a step number it already saved at.

    ModelCheckpoint skips a save at the global step it last saved at; a new Trainer counts steps
    from 0 again, so without this the second stage would skip the step the first one saved at.
    """
    callback._last_global_step_saved = -1


def has_trainer(module: pl.LightningModule) -> bool:
    """Whether `module` is attached to a Trainer (`module.trainer` raises when it is not)."""
    return module._trainer is not None


def reload_pending_loader_state(trainer: pl.Trainer) -> bool:
    """Load the checkpoint's train-loader position into the loader `trainer` already built, and
    restart fetching from it; True if there was one to load.

    Lightning loads that position only into a loader it builds after restoring the checkpoint;
    when the loader was built earlier (`trainer.estimated_stepping_batches` builds it), the saved
    position stays pending and the epoch would start from its first batch.
    """
    fit_loop = trainer.fit_loop
    pending = fit_loop._combined_loader_states_to_load
    if not pending or fit_loop._combined_loader is None or fit_loop._data_fetcher is None:
        return False
    fit_loop._combined_loader._load_state_dicts(pending)
    fit_loop._combined_loader_states_to_load = []
    iter(fit_loop._data_fetcher)  # fetches again, from the restored position
    return True


HydraSubprocessCommand = Callable[[int], tuple[Sequence[str], str]]


@contextmanager
def swapped_hydra_subprocess_command(command: HydraSubprocessCommand) -> Iterator[None]:
    """Inside: Lightning starts DDP ranks 1..N-1 of a Hydra job with `command(local_rank)` ->
    (argv, working directory) instead of its own (which re-runs the whole command line).
    Lightning's own is back afterwards."""
    lightning_command = subprocess_script._hydra_subprocess_cmd
    subprocess_script._hydra_subprocess_cmd = command
    try:
        yield
    finally:
        subprocess_script._hydra_subprocess_cmd = lightning_command


def cached_csv_writer(logger: CSVLogger, build: Callable[[], ExperimentWriter]) -> ExperimentWriter:
    """`logger`'s writer, made with `build()` on first use: what `CSVLogger.experiment` does with
    Lightning's own writer, for a subclass that needs another writer."""
    if logger._experiment is None:
        logger._fs.makedirs(logger.root_dir, exist_ok=True)
        logger._experiment = build()
    return logger._experiment


class CSVWriterWithLogDirHook(ExperimentWriter):
    """Lightning's CSV writer with its folder check as a public hook, `prepare_log_dir`.

    Lightning calls the check once, while the writer is made and before any row is written; its
    own deletes metrics.csv when the folder is not empty. `filesystem`: the writer's fsspec one.
    """

    def _check_log_dir_exists(self) -> None:
        self.prepare_log_dir()

    def prepare_log_dir(self) -> None:
        """Lightning's check: warn, and delete metrics.csv, when the folder is not empty."""
        super()._check_log_dir_exists()

    @property
    def filesystem(self) -> Any:
        return self._fs


# --- the check that the installed Lightning still has what the seams use ---


def _hook_is_called(folder: Path) -> bool:
    called = []

    class Probe(CSVWriterWithLogDirHook):
        def prepare_log_dir(self) -> None:
            called.append(True)

    Probe(str(folder / "probe"))
    return bool(called)


def missing_private_names() -> list[str]:
    """What of Lightning's internals the seams rely on the installed Lightning lacks, checked on real
    objects (a Trainer and its fit loop, a ModelCheckpoint, a LightningModule, a CSVLogger and its
    writer, the DDP launcher); empty when all is there."""
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    fit_loop = trainer.fit_loop
    launcher = getattr(subprocess_script, "_SubprocessScriptLauncher", None)
    launch = getattr(launcher, "_call_children_scripts", None)
    checks: dict[str, Callable[[Path], bool]] = {
        "TrainingEpochLoop._batches_that_stepped (an int)":
            lambda _: isinstance(getattr(fit_loop.epoch_loop, "_batches_that_stepped", None), int),
        "ModelCheckpoint._last_global_step_saved (an int)":
            lambda _: isinstance(getattr(ModelCheckpoint(), "_last_global_step_saved", None), int),
        "fit loop ._combined_loader_states_to_load (a list)":
            lambda _: isinstance(getattr(fit_loop, "_combined_loader_states_to_load", None), list),
        "fit loop ._combined_loader": lambda _: hasattr(fit_loop, "_combined_loader"),
        "fit loop ._data_fetcher": lambda _: hasattr(fit_loop, "_data_fetcher"),
        "CombinedLoader._load_state_dicts": lambda _: callable(getattr(CombinedLoader, "_load_state_dicts",
                                                                       None)),
        "LightningModule._trainer (None when detached)":
            lambda _: hasattr(pl.LightningModule(), "_trainer") and pl.LightningModule()._trainer is None,
        "subprocess_script._hydra_subprocess_cmd": lambda _: callable(getattr(subprocess_script,
                                                                              "_hydra_subprocess_cmd", None)),
        "_SubprocessScriptLauncher._call_children_scripts looks _hydra_subprocess_cmd up in its module":
            lambda _: launch is not None and "_hydra_subprocess_cmd" in launch.__code__.co_names,
        "CSVLogger._experiment and ._fs":
            lambda folder: all(hasattr(CSVLogger(str(folder)), name) for name in ("_experiment", "_fs")),
        "ExperimentWriter._fs": lambda folder: hasattr(ExperimentWriter(str(folder / "writer")), "_fs"),
        "ExperimentWriter.__init__ calls _check_log_dir_exists": _hook_is_called,
    }
    with tempfile.TemporaryDirectory() as folder:
        return [name for name, present in checks.items() if not _safely(present, Path(folder))]


def check_private_names() -> None:
    """Raise `UntestedLightningError` naming what `missing_private_names()` finds missing."""
    missing = missing_private_names()
    if missing:
        raise UntestedLightningError(
            f"pytorch-lightning {installed_lightning_version()} lacks internals {SEAM_FILE} relies on: "
            f"{'; '.join(missing)}. Adapt that file to this Lightning, or install one of "
            f"{', '.join(TESTED_LIGHTNING_VERSIONS)}")


def _safely(check: Callable[[Path], bool], folder: Path) -> bool:
    try:
        return bool(check(folder))
    except Exception:  # an internal that changed shape fails its check, not the whole list
        return False
