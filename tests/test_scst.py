"""Self-critical training: sampling, reward, loss, and the stage through the real Trainer."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from captioner.data.vocabulary import Vocabulary, tokenize
from captioner.errors import ConfigError, UserError
from captioner.features.feature_file import FeatureFile
from captioner.model import CaptionDecoder, greedy_decode, sample_captions
from captioner.model.decoding import DecodeOptions
from captioner.model.losses import mean_of_others, self_critical_loss
from captioner.model.tokens import CaptionLength
from captioner.runs.run import run
from captioner.scoring.cider import CiderD
from captioner.training.checkpoint_record import read_checkpoint_record
from captioner.training.self_critical import CiderReward, SelfCritical
from tests.conftest import TINY_COMMAND, command, compose_config, train_command

START, END, PAD = Vocabulary.start_id, Vocabulary.end_id, Vocabulary.pad_id


def _decoder(vocab_size: int = 12, seed: int = 0) -> CaptionDecoder:
    torch.manual_seed(seed)
    return CaptionDecoder(vocab_size, feature_dim=8, embed_dim=16, hidden_dim=32, attention_dim=16)


def test_samples_are_masked_after_end_and_their_log_probs_are_the_decoders():
    decoder = _decoder().eval()  # no dropout: teacher forcing must see the same distribution
    features = torch.randn(3, 5, 8)
    torch.manual_seed(1)
    tokens, log_probs = sample_captions(decoder, features, 4, 6, START, END, PAD)
    assert tokens.shape[0] == log_probs.shape[0] == 12 and tokens.shape == log_probs.shape
    assert tokens.shape[1] <= 7
    ended = (tokens == END).cumsum(dim=1)
    after_end = (ended - (tokens == END).long()) > 0
    assert (tokens[after_end] == PAD).all() and (log_probs[after_end] == 0).all()
    assert ((tokens == PAD) == after_end).all() and not (tokens == START).any()
    assert len({tuple(row) for row in tokens.tolist()}) > 1  # draws, not one caption copied
    # Teacher forcing on the drawn words gives the same log-probabilities.
    inputs = torch.cat([torch.full((12, 1), START), tokens], dim=1)
    logits, _ = decoder(features.repeat_interleave(4, 0), inputs)
    logits[..., [PAD, START]] = float("-inf")
    logits[:, 0, END] = float("-inf")  # a caption has at least one word
    forced = F.log_softmax(logits, -1).gather(2, tokens.unsqueeze(2)).squeeze(2)
    assert torch.allclose(forced[~after_end], log_probs[~after_end], atol=1e-5)
    log_probs.sum().backward()  # gradients reach the decoder
    assert decoder.vocab_out.weight.grad.abs().sum() > 0


def test_mean_of_others_and_the_loss_gradient():
    rewards = torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 3.0])
    assert mean_of_others(rewards, 3).tolist() == [4.0, 3.5, 1.5, 1.5, 1.5, 0.0]
    log_probs = torch.zeros(2, 3, requires_grad=True)
    self_critical_loss(log_probs, torch.tensor([2.0, -1.0])).backward()
    # Descending the loss raises the log-probability of the sample above its baseline only.
    assert (log_probs.grad[0] < 0).all() and (log_probs.grad[1] > 0).all()
    assert log_probs.grad[0, 0] == pytest.approx(-1.0)


def _toy_data() -> tuple[Vocabulary, dict[int, list[str]], torch.Tensor]:
    """Eight images, each with its own features and three captions naming its colour and shape."""
    colours, shapes = ["red", "blue", "green", "yellow"], ["circle", "square"]
    references = {i: [f"a {colours[i % 4]} {shapes[i // 4]}", f"the {colours[i % 4]} {shapes[i // 4]}",
                      f"a {colours[i % 4]} {shapes[i // 4]} here"] for i in range(8)}
    vocabulary = Vocabulary.build(text for texts in references.values() for text in texts)
    torch.manual_seed(0)
    return vocabulary, references, torch.randn(8, 4, 8)


def test_reward_is_cider_d_of_the_decoded_text():
    vocabulary, references, _ = _toy_data()
    reward = CiderReward(references, vocabulary)
    texts = ["a red circle", "blue blue blue", "", "the green square here"]
    ids, _ = vocabulary.encode_batch(texts, 10)
    tokens = torch.cat([ids[:, 1:], torch.zeros(4, 2, dtype=torch.long)], dim=1)  # <end>, then <pad>
    tokens[2, 1] = vocabulary.unk_id  # after <end>: ignored
    images = torch.tensor([0, 1, 2, 6])
    expected = CiderD({i: [tokenize(t) for t in texts] for i, texts in references.items()}).score(
        texts, images.tolist())
    assert np.allclose(reward(tokens, images).numpy(), expected, atol=1e-6)
    assert expected[0] > 1 and expected[2] == 0
    unknown = torch.tensor([[vocabulary.unk_id, END]])
    assert reward(unknown, torch.tensor([0])).item() == 0.0


@pytest.mark.parametrize("baseline", ["mean", "greedy"])
def test_self_critical_steps_raise_the_greedy_cider(baseline):
    vocabulary, references, features = _toy_data()
    decoder = _decoder(len(vocabulary))
    step = SelfCritical(CiderReward(references, vocabulary), samples=5, baseline=baseline)
    images = torch.arange(8)

    def greedy_cider() -> float:
        decoder.eval()
        tokens, _ = greedy_decode(decoder, features, 6, START, END, PAD)
        return float(step.reward(tokens, images).mean())

    class Stub(torch.nn.Module):  # what the step needs of the LightningModule: no Trainer here
        def __init__(self):
            super().__init__()
            self.decoder, self.logged = decoder, {}
            self.caption_length, self.test_decoding = CaptionLength(6), DecodeOptions()

        def log(self, name, value, **_):
            self.logged.setdefault(name, []).append(float(value.detach()))

        def regions(self, features):  # no trainable CNN top
            return features

        test_time_regions = regions

    module = Stub()
    before = greedy_cider()
    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-2)
    torch.manual_seed(2)  # seeds 3, 4, 5 too: rewards ~0.6 -> 1.5-2.5, greedy 0.15 -> 2-3.8
    for _ in range(100):
        decoder.train()
        loss = step.training_step(module, {"features": features, "image_index": images})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    rewards = module.logged["scst/reward"]
    assert np.mean(rewards[-20:]) > np.mean(rewards[:20]) + 0.5
    assert greedy_cider() > before + 1.0


def test_bad_settings_are_named():
    vocabulary, references, _ = _toy_data()
    reward = CiderReward(references, vocabulary)
    with pytest.raises(ConfigError, match="scst.baseline='best'"):
        SelfCritical(reward, baseline="best")
    with pytest.raises(ConfigError, match="scst.samples >= 2"):
        SelfCritical(reward, samples=1, baseline="mean")


# --- the stage through the real Trainer ---

def _history(run_dir) -> list[tuple[int, str]]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    return [(e["epoch"], e["stage"]) for e in metrics["history"]]


def _stage_of(path) -> str:
    return torch.load(path, map_location="cpu", weights_only=True)["training_stage"]


def test_stage_follows_cross_entropy(tmp_path, shared_data_root):
    cfg = compose_config("scst.enabled=true", "scst.epochs=1", "scst.batch_size=16",
                         "trainer.log_every_n_steps=1", data_root=shared_data_root)
    summary = run(cfg, run_dir=tmp_path / "run", base_dir=tmp_path)
    assert _history(tmp_path / "run") == [(0, "xe"), (1, "scst")]
    assert summary.stages == {"xe": 1, "scst": 1}
    with open(tmp_path / "run" / "csv" / "metrics.csv") as rows:
        logged = list(csv.DictReader(rows))
    rewards = [row for row in logged if row.get("scst/reward")]
    assert len(rewards) == 3 and all(float(row["scst/reward"]) >= 0 for row in rewards)  # 48 images / 16
    xent_steps = [int(row["step"]) for row in logged if row.get("train/xent")]
    assert min(int(row["step"]) for row in rewards) > max(xent_steps)  # the step goes on counting
    # a resume's logs go on from the loggers' step, not the SCST Trainer's own count from 0
    record = read_checkpoint_record(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert record.stage == "scst" and record.global_step == len(rewards)
    assert record.logger_step > min(int(row["step"]) for row in rewards) > record.global_step


def test_stage_from_an_xe_checkpoint_starts_from_its_weights_and_resumes(trained_run, tmp_path):
    best = json.loads((trained_run / "metrics.json").read_text())
    data = trained_run.parent / "data"
    # lr 0: the stage changes nothing, so its validation equals the checkpoint's own.
    stage = ["dataset.num_images=70", "scst.enabled=true", "scst.lr=0", "scst.baseline=greedy",
             f"scst.from_checkpoint={best['checkpoint']}"]
    summary = run(compose_config(*stage, "scst.epochs=1", data_root=data), run_dir=tmp_path / "first",
                  base_dir=tmp_path)
    assert _history(tmp_path / "first") == [(0, "scst")]
    assert summary.history[0]["cider"] == pytest.approx(best["best_val_cider"], abs=1e-9)
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert _stage_of(last) == "scst"

    # Resumed with one more epoch: the SCST stage goes on at its epoch 1; cross-entropy is not rerun.
    summary = run(compose_config(*stage, "scst.epochs=2", f"ckpt_path={last}", data_root=data),
                  run_dir=tmp_path / "resumed", base_dir=tmp_path)
    assert _history(tmp_path / "resumed") == [(0, "scst"), (1, "scst")]
    assert summary.resumed_from == str(last) and summary.stages == {"scst": 2}


def test_the_cross_entropy_fits_step_limits_do_not_cut_the_stage_short(trained_run, tmp_path):
    best = json.loads((trained_run / "metrics.json").read_text())
    stage = ["dataset.num_images=70", "scst.enabled=true", "scst.epochs=1", "scst.batch_size=16",
             f"scst.from_checkpoint={best['checkpoint']}", "+trainer.max_steps=1", "+trainer.min_epochs=2"]
    summary = run(compose_config(*stage, data_root=trained_run.parent / "data"), run_dir=tmp_path / "run",
                  base_dir=tmp_path)
    assert summary.stages == {"scst": 1}
    record = read_checkpoint_record(tmp_path / "run" / "checkpoints" / "last.ckpt")
    train_images = len(FeatureFile(summary.features).splits["train"])
    assert record.stage == "scst" and record.global_step == math.ceil(train_images / 16) > 1  # a whole epoch


def test_missing_xe_checkpoint_is_named(tmp_path, shared_data_root):
    cfg = compose_config("scst.enabled=true", "scst.from_checkpoint=nowhere/xe.ckpt",
                         data_root=shared_data_root)
    # a user error, found up front (before any extraction or fit): train.py exits 2 with this line
    with pytest.raises(UserError, match=r"scst.from_checkpoint.*no such checkpoint file"):
        run(cfg, run_dir=tmp_path / "run", base_dir=tmp_path)


@pytest.mark.slow
def test_stage_under_two_process_ddp(tmp_path, shared_data_root):
    overrides = [o for o in TINY_COMMAND if not o.startswith("trainer.devices")]
    command(tmp_path, train_command(shared_data_root, "trainer=ddp", "trainer.devices=2", "scst.enabled=true",
                                    "scst.epochs=1", "scst.batch_size=8", f"hydra.run.dir={tmp_path / 'run'}",
                                    tiny=overrides))
    assert _history(tmp_path / "run") == [(0, "xe"), (1, "scst")]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["stages"] == {"xe": 1, "scst": 1}


def test_the_stage_stops_at_its_own_patience(trained_run, tmp_path):
    """scst.epochs is the cap; scst.patience stops the stage after validations without a better dev
    CIDEr-D (lr 0: the score never moves, so patience 1 stops after the second epoch)."""
    best = json.loads((trained_run / "metrics.json").read_text())
    stage = ["dataset.num_images=70", "scst.enabled=true", "scst.lr=0", "scst.baseline=greedy",
             f"scst.from_checkpoint={best['checkpoint']}", "scst.epochs=5", "scst.patience=1"]
    summary = run(compose_config(*stage, data_root=trained_run.parent / "data"), run_dir=tmp_path / "run",
                  base_dir=tmp_path)
    assert _history(tmp_path / "run") == [(0, "scst"), (1, "scst")]
    assert summary.stages == {"scst": 2}
