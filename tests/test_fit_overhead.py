"""benchmarks/fit_overhead.py: the per-step profile of Trainer.fit and its count of GPU waits (#25)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from fit_overhead import SYNC_WARNING, main, optimizer_update_ms, per_step_host_ms, sync_sites  # noqa: E402


def test_only_actions_run_every_step_are_shown_as_their_mean_over_the_timed_steps():
    recorded = {"run_training_batch": [9.0, 0.002, 0.004],  # the warm-up's compile drops out
                "[Callback]Clock.on_train_epoch_end": [0.5],  # once an epoch: not a step's cost
                "[Strategy]SingleDeviceStrategy.backward": [3.0, 0.001, 0.001]}
    rows = per_step_host_ms(recorded, steps=2)
    assert [action for action, _ in rows] == ["run_training_batch", "[Strategy]SingleDeviceStrategy.backward"]
    assert rows[0][1] == 3.0 and rows[1][1] == 1.0  # ms


def test_the_optimizers_own_update_is_its_step_less_the_closure_it_runs():
    profile = {"run_training_batch": 20.0, "[LightningModule]CaptionModule.optimizer_step": 19.0,
               "[Strategy]SingleDeviceStrategy.optimizer_step": 19.0,  # nests the same time: not added
               "[Strategy]SingleDeviceStrategy.training_step": 6.0,
               "[Strategy]SingleDeviceStrategy.backward": 9.0,
               "[LightningModule]CaptionModule.configure_gradient_clipping": 1.5,
               "[LightningModule]CaptionModule.optimizer_zero_grad": 0.5}
    assert optimizer_update_ms(profile) == 2.0


def test_synchronizing_calls_are_counted_by_the_line_that_made_them():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = str(REPO / "captioner" / "training" / "module.py")
        library = "/venv/lib/python3.12/site-packages/pytorch_lightning/loops/fit_loop.py"
        for filename, lineno in [(module, 131), (module, 131), (library, 40), (module, 99)]:
            warnings.warn_explicit(f"{SYNC_WARNING} (a .item())", UserWarning, filename, lineno)
        warnings.warn_explicit("an unrelated warning", UserWarning, module, 7)
    sites = sync_sites(caught)
    assert sites == {"captioner/training/module.py:131": 2, "pytorch_lightning/loops/fit_loop.py:40": 1,
                     "captioner/training/module.py:99": 1}


def test_the_cpu_dry_run_profiles_a_real_fit(capsys):
    main(["--device", "cpu", "--steps", "2", "--warmup", "1", "--compile", "false"])
    table = dict(line.strip("|").split("|")[:2] for line in capsys.readouterr().out.splitlines()
                 if line.startswith("| ") and line.count("|") >= 3)
    table = {key.strip(): value.strip() for key, value in table.items()}
    # The fit's speed is timed on its own, without the profiler and the read counter that slow it.
    assert table["Trainer.fit step, plain: no profiler, no read counter (its speed)"].endswith(
        "compile=false (clip 5.0, loop Adam)")
    assert "Trainer.fit step, instrumented: profiler, read counter, sync debug (slower)" in table
    # On a CPU the loss is checked every step (one read: captioner/training/loss_guard.py), and the
    # same reads come in every step: a whole number per step, the sum of the rows by line below it.
    reads = float(table["host reads of tensors per step"])
    by_line = {key: float(value.removesuffix(" per step")) for key, value in table.items()
               if key.startswith("read at ")}
    assert reads.is_integer() and reads >= 1 and len(by_line) < 8  # every line shown
    assert sum(by_line.values()) == pytest.approx(reads, abs=0.02)
    guard = [count for key, count in by_line.items()
             if key.startswith("read at captioner/training/loss_guard.py:") and key.endswith(" __bool__")]
    assert guard == [1.0]
    assert float(table["host ms/step: run_training_batch"]) > 0
    step = float(table["host ms/step: [Strategy]SingleDeviceStrategy.training_step"])
    backward = float(table["host ms/step: [Strategy]SingleDeviceStrategy.backward"])
    assert 0 < step + backward <= float(table["host ms/step: run_training_batch"])  # parts of the batch
    assert float(table["host ms/step: the optimizer's own update (step less its closure)"]) > 0
    assert table["synchronizing calls per step"] == "n/a (CUDA only)"
