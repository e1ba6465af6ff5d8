"""Every precision trains on every device: the Adam implementation is chosen from (device,
precision, clipping), a fused Adam is never clipped under mixed precision, and a bf16-mixed run
writes all its outputs."""

from __future__ import annotations

import json
import math

import pytest
import pytorch_lightning as pl
import torch

from captioner.errors import ConfigError
from captioner.runs.run import run
from captioner.training.adam_implementation import adam_implementation
from captioner.training.module import CaptionModule
from tests.conftest import compose_config


@pytest.mark.parametrize("setting, device, precision, clip, chosen", [
    ("auto", "cuda", "32-true", 5.0, "fused"),
    ("auto", "cuda", "bf16-mixed", 5.0, "foreach"),  # the combination that crashed on an H200
    ("auto", "cuda", "16-mixed", 5.0, "foreach"),
    ("auto", "cuda", "bf16-mixed", 0.0, "fused"),
    ("auto", "cuda", "bf16-mixed", None, "fused"),
    ("auto", "cpu", "bf16-mixed", 5.0, "loop"),
    ("foreach", "cuda", "bf16-mixed", 5.0, "foreach"),
    ("fused", "cpu", "32-true", 5.0, "fused"),
])
def test_the_adam_implementation_follows_device_precision_and_clipping(setting, device, precision, clip,
                                                                       chosen):
    assert adam_implementation(setting, device, precision, clip) == chosen


def test_a_fused_adam_clipped_under_mixed_precision_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match="model.adam=fused cannot be clipped under trainer.precision=bf16"):
        adam_implementation("fused", "cuda", "bf16-mixed", 5.0)


@pytest.mark.parametrize("precision, clip, adam, fused", [
    ("32-true", 5.0, "fused", True), ("bf16-mixed", 0.0, "fused", True),
    ("bf16-mixed", 5.0, "foreach", False), ("bf16-mixed", 5.0, "auto", False)])
def test_the_module_builds_the_chosen_adam_under_a_real_trainer(precision, clip, adam, fused):
    module = CaptionModule(vocabulary=["<pad>", "<start>", "<end>", "<unk>", "a"], feature_dim=8, embed_dim=8,
                           hidden_dim=8, attention_dim=8, adam=adam)
    module.trainer = pl.Trainer(accelerator="cpu", precision=precision, gradient_clip_val=clip, logger=False,
                                enable_checkpointing=False, enable_progress_bar=False)
    optimizer = module.configure_optimizers()
    assert bool(optimizer.defaults.get("fused")) is fused


def test_a_whole_bf16_mixed_run_writes_its_figures_captions_and_metrics(tmp_path, shared_data_root):
    cfg = compose_config("trainer.precision=bf16-mixed", "meteor=false", data_root=shared_data_root)
    summary = run(cfg, tmp_path / "run", base_dir=tmp_path)
    assert summary.status == "completed" and all(math.isfinite(v) for v in summary.test.values())
    assert len(list((tmp_path / "run" / "plots").glob("attention_*.png"))) == 2  # examples=2
    captions = json.loads((tmp_path / "run" / "captions.json").read_text())
    assert captions and all(isinstance(c["cider"], float) for c in captions)


@pytest.mark.slow  # eight short runs; the quick tier keeps the whole bf16-mixed run above
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
@pytest.mark.parametrize("clip", [5.0, 0.0])
@pytest.mark.parametrize("adam", ["fused", "foreach"])
def test_every_precision_clipping_and_adam_trains_a_few_steps_on_cpu(tmp_path, shared_data_root, precision,
                                                                     clip, adam):
    cfg = compose_config(f"trainer.precision={precision}", f"trainer.gradient_clip_val={clip}",
                         f"model.adam={adam}", "+trainer.limit_train_batches=3",
                         "+trainer.limit_val_batches=1",
                         "meteor=false", "examples=0", data_root=shared_data_root)
    if adam == "fused" and precision == "bf16-mixed" and clip:
        with pytest.raises(ConfigError, match="model.adam=fused cannot be clipped"):
            run(cfg, tmp_path / "run", base_dir=tmp_path)
        assert not (tmp_path / "run" / "checkpoints").exists()  # refused before anything ran
        return
    summary = run(cfg, tmp_path / "run", base_dir=tmp_path)
    assert summary.status == "completed" and summary.history and math.isfinite(summary.history[-1]["cider"])


def test_lightning_refuses_to_clip_a_fused_adam_under_bf16_mixed_the_reason_for_the_rule():
    """The H200 crash, reproduced on a CPU (fused Adam exists there too): if Lightning ever allows
    it, `adam_implementation` may choose fused under clipped mixed precision again."""

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), fused=True)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 4)), batch_size=4)
    trainer = pl.Trainer(accelerator="cpu", precision="bf16-mixed", gradient_clip_val=5.0, max_steps=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    with pytest.raises(RuntimeError, match="does not allow for gradient clipping"):
        trainer.fit(Tiny(), data)
