"""LightningModule: teacher-forced training, decoding and coco-caption scoring at val/test."""

from __future__ import annotations

import time
import warnings
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from captioner.data.vocabulary import Vocabulary
from captioner.model import CaptionDecoder
from captioner.model.cnn_top import CnnTop
from captioner.model.compiled import CompiledForward, compile_mode
from captioner.model.decoding import GREEDY, DecodeOptions, decode
from captioner.model.losses import doubly_stochastic_penalty, masked_caption_loss
from captioner.model.packed import packed_teacher_forcing
from captioner.model.scheduled_sampling import sampling_probability, scheduled_sampling_forward
from captioner.model.tokens import CaptionLength
from captioner.scoring.coco_metrics import CaptionScores
from captioner.training.adam_implementation import adam_implementation, adam_options
from captioner.training.lightning_seams import has_trainer
from captioner.training.loss_guard import NonFiniteLossGuard
from captioner.training.lr_schedule import earlier_plateau_state, plateau_scheduler, with_lr_schedule
from captioner.training.self_critical import SelfCritical

# CaptionScores scores each image once, so the images a DistributedSampler repeats to even out the
# ranks do not count twice: Lightning's advice to test on one device does not apply.
warnings.filterwarnings("ignore", message=r"Using `DistributedSampler` with the dataloaders")
# A trainable CNN top keeps its BatchNorm layers in eval mode on purpose (model/cnn_top.py).
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")


def _cnn_top(blocks: nn.Module | None, cnn: dict[str, Any], dropout: float) -> CnnTop | None:
    wanted = int(cnn.get("trainable_blocks", 0) or 0)
    if blocks is None:
        if wanted:
            raise ValueError(f"this model fine-tunes the CNN's last {wanted} blocks ({cnn.get('cnn')}): load "
                             "it with captioner.inference (Captioner.from_checkpoint), which rebuilds them")
        return None
    return CnnTop(blocks, tuple(cnn["grid"]), float(cnn.get("feature_scale", 1.0)),
                  float(cnn.get("top_scale", 1.0)), dropout)


ATTENTION_EXAMPLES = 8  # test images whose attention maps are kept for figures


class CaptionModule(pl.LightningModule):
    # None: read every step's loss on one CPU, defer the read on a GPU and under DDP
    # (training/loss_guard.py).
    check_loss_every_step: bool | None = None

    def __init__(self, vocabulary: list[str], feature_dim: int, rnn: str = "gru",
                 embed_dim: int = 256, hidden_dim: int = 512, attention_dim: int = 256,
                 dropout: float = 0.3, lr: float = 1e-3, weight_decay: float = 0.0,
                 attention_regularization: float = 1.0, max_caption_length: int = 20,
                 cnn: dict[str, Any] | None = None, decode: dict[str, Any] | None = None,
                 spice: bool = False, label_smoothing: float = 0.0,
                 scheduled_sampling: dict[str, float] | None = None,
                 lr_schedule: dict[str, Any] | None = None, compile: bool = False, meteor: bool = True,
                 adam: str = "auto", top_lr_multiplier: float = 0.1, top_dropout: float = 0.0,
                 top: nn.Module | None = None):
        super().__init__()
        # Everything needed to rebuild the model from a checkpoint is plain data in hparams:
        # the vocabulary, the sizes, and `cnn`, the record of the CNN that made the features
        # (FeatureFile.cnn_record). `compile` is decided by the run (trainer_setup/fast_path.py), not here.
        # `top`: the CNN's last blocks when they train (cnn.trainable_blocks); a module, not data, so
        # whoever builds or loads the model hands it in (runs/, inference/: they know the CNNs).
        self.save_hyperparameters(ignore=["top"])
        self.top = _cnn_top(top, cnn or {}, top_dropout)
        self.caption_length = CaptionLength(max_caption_length)
        # How test captions are written; evaluate and caption may set other options.
        self.test_decoding = DecodeOptions.from_config(decode)
        self.vocabulary = Vocabulary(vocabulary)
        self.decoder = CaptionDecoder(len(self.vocabulary), feature_dim, embed_dim, hidden_dim,
                                      attention_dim, rnn, dropout, pad_id=Vocabulary.pad_id)
        self.scores: dict[str, CaptionScores] = {}
        self.test_attention: dict[int, torch.Tensor] = {}
        self.last_captions: dict[str, dict[int, str]] = {}
        self.last_per_image: dict[str, dict[int, dict[str, Any]]] = {}
        self.last_scores: dict[str, dict[str, float]] = {}
        self.test_decode_s = 0.0  # seconds spent decoding the last test split (this process)
        # Set for the self-critical stage (self_critical_stage.py): it then owns the training step.
        self.self_critical: SelfCritical | None = None
        self._compiled: CompiledForward | None = None  # model.compile (captioner/model/compiled.py)
        self.loss_guard = NonFiniteLossGuard()
        self.plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None  # lr_schedule.name=plateau
        self._plateau_state: dict[str, Any] | None = None  # a resumed checkpoint's, for the plateau

    def forward(self, features: torch.Tensor,
                options: DecodeOptions | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions (token ids) and attention for a batch of stored features, decoded as `options`
        say (default: `test_decoding`)."""
        return decode(self.decoder, self.regions(features), options or self.test_decoding,
                      self.caption_length)

    def regions(self, features: torch.Tensor) -> torch.Tensor:
        """The decoder's regions: the stored features, through the trainable CNN top if there is one."""
        return features if self.top is None else self.top(features)

    @torch.no_grad()
    def test_time_regions(self, features: torch.Tensor) -> torch.Tensor:
        """`regions` as at test time (no dropout, no gradient), whatever mode the module is in."""
        if self.top is None:
            return features
        training = self.top.training
        self.top.eval()
        regions = self.top(features)
        self.top.train(training)
        return regions

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = (self.self_critical.training_step(self, batch) if self.self_critical is not None
                else self._cross_entropy_step(batch, batch_idx))
        # A NaN/inf loss fails the run rather than finishing as a NaN model: on a CPU at once, on
        # a GPU at the epoch's end or the next checkpoint, whichever comes first (loss_guard.py).
        every_step = self.check_loss_every_step
        if every_step is None:
            every_step = self.device.type != "cuda" and self.trainer.world_size == 1
        self.loss_guard.observe(loss, self.global_step, self.current_epoch, batch_idx, every_step)
        return loss

    def _check_loss(self, where: str) -> None:
        """The loss guard's check; under DDP every rank stops when any rank's loss went bad."""
        across_ranks = None
        if has_trainer(self) and self.trainer.world_size > 1:
            def across_ranks(flag: torch.Tensor) -> torch.Tensor:
                return self.trainer.strategy.reduce(flag.to(self.device), reduce_op="max")
        self.loss_guard.check(where, across_ranks)

    def on_train_epoch_end(self) -> None:
        self._check_loss(f"at the end of epoch {self.current_epoch}")

    def _cross_entropy_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        tokens = batch["tokens"]
        regions = self.regions(batch["features"])
        logits, predicted, attention = self._teacher_forced(regions, tokens, batch_idx)
        loss = masked_caption_loss(logits, predicted, Vocabulary.pad_id,
                                   self.hparams.get("label_smoothing", 0.0))
        targets = tokens[:, 1:]
        # not prog_bar: Lightning would read it on the host every step (trainer_setup/progress_bar.py)
        self.log("train/xent", loss, batch_size=len(tokens))
        if self.hparams.attention_regularization > 0:
            penalty = doubly_stochastic_penalty(attention, (targets != Vocabulary.pad_id).float())
            loss = loss + self.hparams.attention_regularization * penalty
        self.log("train/loss", loss, batch_size=len(tokens))
        return loss

    # --- the training recipe (model.scheduled_sampling, model.lr_schedule; README "Recipe") ---

    def _teacher_forced(self, features: torch.Tensor, tokens: torch.Tensor,
                        batch_idx: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits, the targets they predict and attention (B, T-1, R): from the compiled padded
        pass, scheduled sampling's once its probability is > 0, or else the packed pass, which
        skips padding (captioner/model/packed.py)."""
        probability = self.scheduled_sampling_probability(batch_idx)
        pad_id = Vocabulary.pad_id
        if probability > 0:
            self.log("train/sampling_probability", probability, batch_size=len(tokens))
            logits, attention = scheduled_sampling_forward(self.decoder, features, tokens,
                                                           probability, pad_id)
            return logits, tokens[:, 1:], attention
        if self.hparams.get("compile") is True:
            if self._compiled is None:
                self._compiled = CompiledForward(self.decoder, compile_mode(self.device.type))
            logits, attention = self._compiled(features, tokens)
            return logits, tokens[:, 1:], attention
        return packed_teacher_forcing(self.decoder, features, tokens, pad_id)

    def scheduled_sampling_probability(self, batch_idx: int = 0) -> float:
        settings = self.hparams.get("scheduled_sampling") or {}
        if not settings.get("max_prob"):
            return 0.0
        attached = has_trainer(self)  # scheduled sampling is also asked for outside a fit
        batches = max(1, int(self.trainer.num_training_batches)) if attached else 1
        epoch = (self.current_epoch + batch_idx / batches) if attached else 0.0
        return sampling_probability(epoch, settings["max_prob"], settings.get("start_epoch", 0),
                                    settings.get("ramp_epochs", 0))

    # --- evaluation: decode every image of the split once, score at epoch end ---

    def _metric(self, stage: str) -> CaptionScores:
        if stage not in self.scores:
            datamodule = self.trainer.datamodule
            references = datamodule.references(datamodule.eval_split(stage))
            metric = CaptionScores(references, self.vocabulary, self.caption_length.with_end,
                                   spice=bool(self.hparams.get("spice", False)),
                                   meteor=bool(self.hparams.get("meteor", True)),
                                   per_image=stage == "test")  # the run's captions.json; not per validation
            self.scores[stage] = metric.to(self.device)
        return self.scores[stage]

    def _eval_step(self, stage: str, batch: dict[str, torch.Tensor]) -> None:
        # Validation picks the checkpoint with greedy decoding (fast); test uses `decode`.
        began = time.perf_counter()
        tokens, attention = self(batch["features"], GREEDY if stage == "val" else None)
        if stage == "test":  # decoding speed (captions/s) for the report; .item() waits for the GPU
            tokens.sum().item()
            self.test_decode_s += time.perf_counter() - began
        self._metric(stage).update(tokens, batch["image_index"])
        if stage == "test":  # keep a few attention maps for the run's figures
            for index, weights in zip(batch["image_index"].tolist(), attention.cpu(), strict=True):
                if len(self.test_attention) < ATTENTION_EXAMPLES:
                    self.test_attention[index] = weights

    def _eval_epoch_end(self, stage: str) -> None:
        metric = self._metric(stage)
        scores = {name: float(value) for name, value in metric.compute().items()}  # full precision
        self.last_scores[stage] = scores
        self.last_captions[stage] = dict(metric.captions)
        self.last_per_image[stage] = dict(metric.per_image)
        # Every rank computed the same scores from the gathered captions: the mean changes nothing.
        # (floats: Lightning puts them on this rank's device, which NCCL needs)
        self.log_dict({f"{stage}/{name}": value for name, value in scores.items()}, sync_dist=True)
        metric.reset()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")
        if self.plateau is not None and not self.trainer.sanity_checking:
            # Here, before the epoch-end checkpoint (Lightning stepped it after: a resume missed the
            # step). float32, as Lightning handed it the logged value.
            self.plateau.step(float(torch.tensor(self.last_scores["val"]["cider"], dtype=torch.float32)))

    def on_test_epoch_start(self) -> None:
        self.test_decode_s = 0.0

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def configure_optimizers(self) -> Any:
        lr = self.self_critical.lr if self.self_critical is not None else self.hparams.lr
        implementation = adam_implementation(self.hparams.get("adam", "auto"), self.device.type,
                                             str(self.trainer.precision), self.trainer.gradient_clip_val)
        top = list(self.top.parameters()) if self.top is not None else []
        in_top = {id(p) for p in top}
        rest = [p for p in self.parameters() if id(p) not in in_top]
        groups = [{"params": rest}]
        if top:  # the pretrained CNN blocks move more slowly than the decoder learning from scratch
            groups.append({"params": top, "lr": lr * self.hparams.get("top_lr_multiplier", 0.1)})
        optimizer = torch.optim.Adam(groups, lr=lr, weight_decay=self.hparams.weight_decay,
                                     **adam_options(implementation))
        self.plateau = None
        if self.self_critical is not None:  # the self-critical stage keeps its own constant lr
            return optimizer
        self.plateau = plateau_scheduler(optimizer, self.hparams.get("lr_schedule"))
        if self.plateau is not None and self._plateau_state is not None:
            self.plateau.load_state_dict(self._plateau_state)
        return with_lr_schedule(optimizer, self.hparams.get("lr_schedule"),
                                lambda: self.trainer.estimated_stepping_batches)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._check_loss("before writing a checkpoint")  # none holds weights trained past it
        if self.plateau is not None:
            checkpoint["plateau"] = self.plateau.state_dict()
        # Which stage wrote it: resuming picks the stage up again (captioner/training/self_critical_stage.py).
        checkpoint["training_stage"] = "scst" if self.self_critical is not None else "xe"

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Usually before configure_optimizers makes the plateau (which then takes it), after it
        # for strategies that restore after their setup.
        self._plateau_state = earlier_plateau_state(checkpoint)
        if self.plateau is not None and self._plateau_state is not None:
            self.plateau.load_state_dict(self._plateau_state)
