"""No host read of a tensor (a GPU sync) in a training step but the loggers' (issue #25, item 4).

Counted on the CPU, where the same Python reads the same values (captioner/training/host_reads.py),
through the real Trainer with the callbacks, logger and progress bar a run uses.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from pytorch_lightning import Trainer
from pytorch_lightning.loggers import CSVLogger

from captioner.data.datamodule import CaptionDataModule
from captioner.features.cache import ensure_features
from captioner.records.run_folder import RunFolder
from captioner.sources import load_records
from captioner.trainer_setup.callbacks import run_callbacks
from captioner.trainer_setup.progress_bar import ProgressBar
from captioner.training.host_reads import CountHostReadsPerStep, HostReads
from captioner.training.module import CaptionModule
from captioner.training.preemption import PreemptionSignals
from tests.conftest import settings_of


def methods(sites: Counter[str]) -> Counter[str]:
    return Counter({site.split()[-1]: count for site, count in sites.items()})


def test_reads_are_counted_by_the_line_that_made_them_while_a_step_is_set():
    t = torch.arange(3.0)
    with HostReads() as reads:
        t.sum().item()  # not counted: no step yet
        reads.step = 7
        t.sum().item()
        if t.sum() > 0:  # __bool__
            float(t[1])
        t.tolist()
        t.cpu()
        t.to(torch.float64)  # a cast, not a read
        (t * 2 + 1).exp()  # arithmetic is not a read
        reads.step = None
        t.tolist()
    assert list(reads.per_step) == [7]
    sites = reads.per_step[7]
    assert methods(sites) == {"item": 1, "__bool__": 1, "__float__": 1, "tolist": 1, "cpu": 1}
    assert all(site.startswith("tests/test_host_reads.py:") for site in sites)
    assert len(sites) == 5  # one line each


@pytest.mark.parametrize("implementation", [{"foreach": True}, {"foreach": False}])
def test_an_optimizers_step_counts_kept_on_the_host_are_not_reads(implementation):
    weight = torch.nn.Parameter(torch.ones(4))
    optimizer = torch.optim.Adam([weight], lr=0.1, **implementation)
    with HostReads() as reads:
        reads.step = 0
        for _ in range(2):  # torch's Adam reads its host-side step count (`.item()`) in every update
            (weight ** 2).sum().backward()
            optimizer.step()
            optimizer.zero_grad()
    assert not reads.total()
    assert not torch.equal(weight.detach(), torch.ones(4))


@pytest.fixture
def features_path(tiny_cfg, shared_data_root) -> Path:
    records = load_records("shapes", Path(tiny_cfg.dataset.root), tiny_cfg.dataset)
    return ensure_features(settings_of(tiny_cfg), records, shared_data_root)


def test_the_compiled_paths_training_steps_read_nothing_on_the_host_but_when_they_log(
        tiny_cfg, features_path, tmp_path):
    """The step as a GPU run takes it: padded static shapes (the compiled pass; here eager, the same
    function), fused Adam, clipping, the deferred NaN guard, and the run's callbacks, CSV logger
    and terminal progress bar."""
    settings = settings_of(tiny_cfg)
    datamodule = CaptionDataModule(features_path, batch_size=8, max_caption_length=12,
                                   static_caption_length=14)
    datamodule.setup()
    module = CaptionModule(datamodule.vocabulary.words, datamodule.feature_dim, "lstm", 16, 24, 16,
                           compile=True, adam="fused")
    module._compiled = module.decoder  # what CompiledForward compiles, uncompiled (a compile costs ~1 min)
    module.check_loss_every_step = False  # the GPU's guard: no read per step
    callbacks = run_callbacks(settings, RunFolder(tmp_path / "run"), PreemptionSignals(), with_loggers=True)
    bar = ProgressBar(read_every_s=3600)  # reads the loss once, at the first step (not counted)
    reads = HostReads()
    steps, log_every, warmup = 14, 5, 1
    trainer = Trainer(default_root_dir=tmp_path, max_epochs=1, limit_train_batches=steps,
                      limit_val_batches=0, num_sanity_val_steps=0, log_every_n_steps=log_every,
                      gradient_clip_val=5.0, enable_model_summary=False,
                      logger=CSVLogger(tmp_path / "csv"),
                      callbacks=[CountHostReadsPerStep(reads), *callbacks.all, bar])
    with reads:
        trainer.fit(module, datamodule=datamodule)

    assert trainer.global_step == steps
    logging_steps = {step for step in range(steps) if (step + 1) % log_every == 0}
    assert logging_steps == {4, 9}
    for step in range(warmup, steps):
        sites = reads.per_step.get(step, Counter())
        if step in logging_steps:  # the CSV logger turns the logged losses into numbers
            lightning = ("pytorch_lightning/", "lightning_fabric/")
            assert sites and all(site.startswith(lightning) for site in sites)
            assert sum(sites.values()) <= 3, sites
        else:
            assert not sites, f"step {step} read {dict(sites)} on the host"
    shown = bar.get_metrics(trainer, module)
    assert math.isfinite(shown["train/xent"])
