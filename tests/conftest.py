"""Shared fixtures and the one launcher of the project's commands.

Tiny shapes datasets, configs composed from the real conf/ tree, a tiny trained run made once per
test session, and `command` / `train_command`, which every test that runs `train.py` or a
`python -m captioner.<command>` as a user would goes through.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from captioner.settings import CnnSettings, RunSettings, read_settings

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"

os.environ.setdefault("WANDB_MODE", "offline")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Several test processes share the cores: one thread each (and in the commands they start),
    # so no process's OpenMP threads spin while waiting for cores another one holds.
    os.environ["OMP_NUM_THREADS"] = "1"
# The commands tests start get the caller's environment less the switches that change what a user
# error prints (errors.verbose()): tests that want a traceback set them themselves.
VERBOSE_SWITCHES = ("HYDRA_FULL_ERROR", "CAPTIONER_VERBOSE")
ENV = {**{k: v for k, v in os.environ.items() if k not in VERBOSE_SWITCHES}, "WANDB_MODE": "offline"}

# A small, fast configuration: 60 scenes, a 64 px VGG16 grid (4x4x512), a small decoder.
TINY = [
    "dataset.num_images=60",
    "dataset.image_size=64",
    "cnn=vgg16",
    "cnn.input_size=64",
    "cnn.batch_size=16",
    "cnn.num_workers=0",
    "model.embed_dim=32",
    "model.hidden_dim=64",
    "model.attention_dim=32",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "examples=2",
]


# The commands tests start leave METEOR out: its Java process costs ~7 s of CPU in every process
# that scores, and those tests check the command's behaviour; METEOR itself is checked in-process
# (test_metrics, test_evaluate, and every run composed with TINY).
TINY_COMMAND = [*TINY, "meteor=false"]


def compose_config(*overrides: str, data_root: Path | None = None, dataset: str = "shapes") -> DictConfig:
    """The real config with TINY's overrides; a real `dataset` gets a random CNN (no download)."""
    tiny = TINY if dataset == "shapes" else [
        f"dataset={dataset}", "cnn.weights=null",
        *(o for o in TINY if not o.startswith("dataset."))]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*tiny, *overrides])
    if data_root is not None:
        with open_dict(cfg):
            cfg.data_root = str(data_root)
            if dataset == "shapes":
                cfg.dataset.root = str(data_root / cfg.dataset.name)
    return cfg


def settings_of(cfg: DictConfig, base_dir: Path = REPO) -> RunSettings:
    """The typed settings a run reads from `cfg` (relative paths start at `base_dir`)."""
    return read_settings(cfg, base_dir)


def features_file_of(data_root: Path, *overrides: str) -> Path:
    """The default features file under `data_root` of a run with TINY's settings and `overrides`."""
    from captioner.features.cache import default_path

    settings = settings_of(compose_config(*overrides))
    return default_path(data_root, settings.dataset.name, settings.cnn)


def cnn_settings(name: str, **values) -> CnnSettings:
    """CNN `name` as `conf/cnn/<name>.yaml` composes it (no dataset's adjustments), with `values`."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["dataset=coco", f"cnn={name}"])
    if values.get("weights_path") is not None:
        values["weights_path"] = Path(values["weights_path"])
    return dataclasses.replace(settings_of(cfg).cnn, **values)


@pytest.fixture(scope="session")
def shared_data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data root for tests that only read: its shapes images and features are made once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def tiny_cfg(shared_data_root: Path) -> DictConfig:
    return compose_config(data_root=shared_data_root)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run (random VGG16 features, 4 epochs), for tests that load its checkpoint.
    Tests only read it.

    70 scenes: 7 test images, an odd count, so a 2-process distributed sampler pads one rank.
    Made once for the whole session, not once per xdist worker (~18 s each): the first worker to
    ask trains it under a file lock, the others wait for it and read it.
    """
    from filelock import FileLock

    from captioner.records.run_summary import RunSummary
    from captioner.runs.run import run

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # every worker's base folder sits in the session's one
        shared = shared.parent
    root = shared / "trained"
    with FileLock(str(shared / "trained.lock")):
        summary = RunSummary.read(root / "run" / "metrics.json")
        if summary is None or summary.status != "completed":
            shutil.rmtree(root, ignore_errors=True)  # what a worker that failed left behind
            cfg = compose_config("dataset.num_images=70", "trainer.max_epochs=4", data_root=root / "data")
            run(cfg, run_dir=root / "run", base_dir=root)
    return root / "run"


# --- the launcher: commands as a user runs them ---


def train_command(data_root: Path, *arguments: str, tiny: Sequence[str] = TINY_COMMAND) -> list[str]:
    """`python train.py [flags] <tiny> data_root=... <overrides>`: Hydra wants flags (-m,
    --config-dir, ...) before the overrides."""
    flags, overrides, expects_value = [], [], False
    for argument in arguments:
        if expects_value or argument.startswith("-"):
            flags.append(argument)
            expects_value = argument in ("--config-dir", "--config-name", "-cd", "-cn")
        else:
            overrides.append(argument)
    return [sys.executable, str(REPO / "train.py"), *flags, *tiny, f"data_root={data_root}", *overrides]


def command(cwd: Path, arguments: Sequence[str], check: bool = True, timeout: int = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a command in `cwd`, output captured; `check`: fail the test with its output's tail."""
    result = subprocess.run(list(arguments), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env={**ENV, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, arguments[:3]))} ... exited {result.returncode}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def python(cwd: Path, *arguments: str, **options) -> subprocess.CompletedProcess:
    """`python <arguments>`, e.g. `python(tmp_path, "-m", "captioner.evaluate", ckpt)`."""
    return command(cwd, [sys.executable, *arguments], **options)


def train(cwd: Path, *arguments: str, data_root: Path, **options) -> subprocess.CompletedProcess:
    """`python train.py` with the tiny settings, as a user runs it."""
    return command(cwd, train_command(data_root, *arguments), **options)


def start_train(cwd: Path, *arguments: str, data_root: Path, quiet: bool = False) -> subprocess.Popen:
    """`python train.py` started in the background (to kill it or signal it), its output piped
    (read it, or a long run blocks on a full pipe) or, `quiet`, discarded."""
    output = subprocess.DEVNULL if quiet else subprocess.PIPE
    return subprocess.Popen(train_command(data_root, *arguments), cwd=cwd, stdout=output,
                            stderr=subprocess.STDOUT, text=True, env=ENV)


def run_folders(root: Path) -> list[Path]:
    """Run folders under `root`/outputs that wrote metrics.json."""
    return sorted(p.parent for p in (root / "outputs").glob("**/metrics.json"))


def record_syncs(monkeypatch, events: list, note=lambda: None) -> None:
    """os.fsync and os.replace as they happen, by path (and what `note()` says at each fsync)."""
    fsync, replace = os.fsync, os.replace

    def recorded_fsync(descriptor: int) -> None:
        noted = note()
        events.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}"),
                       *(() if noted is None else (noted,))))
        fsync(descriptor)

    def recorded_replace(source, target) -> None:
        events.append(("replace", str(source), str(target)))
        replace(source, target)

    monkeypatch.setattr(os, "fsync", recorded_fsync)
    monkeypatch.setattr(os, "replace", recorded_replace)


def wait_for(condition, timeout: float = 300, every: float = 0.02):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(every)
    raise AssertionError("timed out waiting")


def saved_checkpoint(path: Path) -> str | None:
    """A digest of the checkpoint at `path` once it is whole (loads), else None.

    Tests ask "was it saved again?" by its content, not its mtime: some file systems (ext3, CI's)
    keep whole seconds, and a save in the same second as the one before looks like no save."""
    import torch

    try:
        data = path.read_bytes()
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:  # absent, or caught mid-write
        return None
    return hashlib.sha256(data).hexdigest()


def on_two_ranks(target, *args) -> dict[int, object]:
    """`target(rank, address, found, *args)` in two spawned processes, the ranks of a gloo group at
    `address`; each puts (rank, result) into `found`. Returns {rank: result}; both must exit 0."""
    import multiprocessing
    import tempfile

    # A file store, not a probed TCP port: another process could take a port between the probe
    # and the ranks' bind. The file must not exist yet; the folder goes with the test.
    rendezvous = Path(tempfile.mkdtemp(prefix="two-ranks-"))
    address = f"file://{rendezvous / 'store'}"
    context = multiprocessing.get_context("spawn")
    found = context.Queue()
    ranks = [context.Process(target=target, args=(rank, address, found, *args)) for rank in (0, 1)]
    for process in ranks:
        process.start()
    try:
        results = dict(found.get(timeout=120) for _ in ranks)
        for process in ranks:
            process.join(timeout=30)
    finally:  # a rank that died leaves the other waiting in a collective: end both
        for process in ranks:
            if process.is_alive():
                process.kill()
                process.join()
        shutil.rmtree(rendezvous, ignore_errors=True)
    assert [process.exitcode for process in ranks] == [0, 0]
    return results


def child_processes(pid: int) -> list[int]:
    """The live child processes of `pid` (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = (task / "children").read_text().split() if (task / "children").exists() else []
        found += [int(child) for child in children]
    return found

