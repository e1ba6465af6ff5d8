"""The training recipe: scheduled sampling, the learning-rate schedule, label smoothing, early stopping."""

import csv
import math

import pytest
import torch

from captioner.errors import ConfigError
from captioner.model import CaptionDecoder
from captioner.model.scheduled_sampling import sampling_probability, scheduled_sampling_forward
from captioner.model.tokens import PAD_ID, START_ID, UNK_ID
from captioner.training.lr_schedule import (
    earlier_plateau_state,
    plateau_scheduler,
    warmup_cosine,
    with_lr_schedule,
)
from tests.conftest import compose_config


def test_the_sampling_probability_ramps_from_the_start_epoch_to_its_maximum():
    assert sampling_probability(0.5, 0.25, start_epoch=1, ramp_epochs=2) == 0.0
    assert sampling_probability(2.0, 0.25, start_epoch=1, ramp_epochs=2) == pytest.approx(0.125)
    assert sampling_probability(9.0, 0.25, start_epoch=1, ramp_epochs=2) == 0.25
    assert sampling_probability(1.0, 0.25, start_epoch=1, ramp_epochs=0) == 0.25
    assert sampling_probability(5.0, 0.0, start_epoch=0, ramp_epochs=1) == 0.0


def _decoder_and_batch():
    torch.manual_seed(0)
    decoder = CaptionDecoder(vocab_size=30, feature_dim=12, embed_dim=16, hidden_dim=24,
                             attention_dim=8).eval()  # no dropout: runs compare exactly
    features = torch.randn(4, 5, 12)
    tokens = torch.randint(4, 30, (4, 7))
    tokens[:, 0] = 1  # <start>
    tokens[2, 5:] = 0  # a shorter caption, padded
    return decoder, features, tokens


def test_probability_zero_is_exactly_teacher_forcing():
    decoder, features, tokens = _decoder_and_batch()
    with torch.no_grad():
        expected = decoder(features, tokens)
        found = scheduled_sampling_forward(decoder, features, tokens, 0.0)
    for a, b in zip(found, expected, strict=True):
        torch.testing.assert_close(a, b)


def test_probability_one_feeds_the_model_its_own_words():
    decoder, features, tokens = _decoder_and_batch()
    other = tokens.clone()
    other[:, 1:] = torch.where(tokens[:, 1:] > 0, (tokens[:, 1:] + 7) % 26 + 4, 0)  # other words, same pads
    with torch.no_grad():
        own = [scheduled_sampling_forward(decoder, features, t, 1.0,
                                          generator=torch.Generator().manual_seed(3))
               for t in (tokens, other)]
        forced = [decoder(features, t)[0] for t in (tokens, other)]
    # The reference words past <start> no longer reach the model; with teacher forcing they do.
    torch.testing.assert_close(own[0][0], own[1][0])
    assert not torch.allclose(forced[0], forced[1])
    assert not torch.allclose(own[0][0], forced[0])


def test_the_models_own_words_are_words_a_caption_can_hold():
    # <pad> (a frozen zero embedding), <start> or <unk> mid-caption: inputs test time never gives
    decoder, features, tokens = _decoder_and_batch()
    with torch.no_grad():
        decoder.vocab_out.bias[[PAD_ID, START_ID, UNK_ID]] += 30  # the model all but always predicts them
        fed = []
        hook = decoder.embedding.register_forward_hook(lambda _module, inputs, _out: fed.append(inputs[0]))
        scheduled_sampling_forward(decoder, features, tokens, 1.0, generator=torch.Generator().manual_seed(0))
        hook.remove()
    own = torch.stack(fed[1:], dim=1)[tokens[:, 1:-1] != PAD_ID]  # the words after <start>, not padding
    assert own.numel() > 10
    assert not torch.isin(own, torch.tensor([PAD_ID, START_ID, UNK_ID])).any()


def test_warm_up_then_cosine_decay_to_the_floor():
    factors = [warmup_cosine(step, 4, 20, 0.1) for step in range(20)]  # the 20 steps trained
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a > b for a, b in zip(factors[4:], factors[5:], strict=False))
    assert factors[-1] == pytest.approx(0.1)  # the last step trained is at the floor, not the one after
    assert warmup_cosine(100, 4, None, 0.1) == 1.0


def test_schedule_choices_and_an_open_ended_cosine():
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    assert with_lr_schedule(optimizer, {"name": "constant"}, lambda: 100) is optimizer
    assert with_lr_schedule(optimizer, {"name": "plateau"}, lambda: 100) is optimizer  # the module steps it
    assert plateau_scheduler(optimizer, {"name": "plateau"}).mode == "max"
    assert plateau_scheduler(optimizer, {"name": "cosine"}) is None
    with pytest.raises(ConfigError, match="cosine needs a finite trainer.max_epochs"):
        with_lr_schedule(optimizer, {"name": "cosine"}, lambda: math.inf)
    with pytest.raises(ConfigError, match="model.lr_schedule.name='linear'"):
        with_lr_schedule(optimizer, {"name": "linear"}, lambda: 100)


@pytest.mark.parametrize(("patience", "cut_at"), [(0, 1), (1, 2)])
def test_plateau_cuts_the_lr_once_more_than_patience_validations_bring_nothing(patience, cut_at):
    """What the config's comments say: PyTorch's count (patience 0 cuts at the first validation
    without a better CIDEr-D), which the committed plateau runs trained with."""
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    plateau = plateau_scheduler(optimizer, {"name": "plateau", "plateau_patience": patience})
    lrs = []
    for cider in (0.50, 0.49, 0.48):  # the best, then validations that bring nothing better
        plateau.step(cider)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs.index(5e-4) == cut_at


def test_a_run_with_the_whole_recipe_stops_early_and_follows_its_schedule(tmp_path):
    from captioner.runs.run import run

    # lr so small that nothing is learnt: val CIDEr-D never improves, so patience 1 stops at epoch 2.
    cfg = compose_config("trainer.max_epochs=5", "model.lr=1e-9", "model.label_smoothing=0.1",
                         "model.scheduled_sampling.max_prob=0.5", "model.scheduled_sampling.ramp_epochs=1",
                         "model.lr_schedule.name=cosine", "model.lr_schedule.warmup_steps=2",
                         "model.lr_schedule.min_lr_ratio=0.1", "early_stopping.patience=1",
                         "trainer.log_every_n_steps=1",
                         data_root=tmp_path / "data")
    summary = run(cfg, run_dir=tmp_path / "run", base_dir=tmp_path)
    assert summary.status == "completed" and summary.epochs == 2  # of 5
    checkpoint = torch.load(summary.checkpoint, weights_only=True)  # the first epoch's (the best)
    steps = checkpoint["global_step"]
    total = 5 * steps // (checkpoint["epoch"] + 1)  # the schedule spans all max_epochs
    lr = checkpoint["optimizer_states"][0]["param_groups"][0]["lr"]
    assert lr == pytest.approx(1e-9 * warmup_cosine(steps, 2, total, 0.1), rel=1e-6)
    assert checkpoint["hyper_parameters"]["label_smoothing"] == 0.1
    with open(tmp_path / "run" / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    probabilities = [float(row["train/sampling_probability"]) for row in rows
                     if row.get("train/sampling_probability")]
    assert probabilities and max(probabilities) == pytest.approx(0.5)
    # the loggers see the schedule: half the lr in the first warm-up step, all of it after warm-up
    rates = [float(row["lr-Adam"]) for row in rows if row.get("lr-Adam")]
    assert rates[0] == pytest.approx(1e-9 * warmup_cosine(0, 2, total, 0.1), rel=1e-6)
    assert max(rates) == pytest.approx(1e-9, rel=1e-6)


@pytest.mark.slow
def test_the_epoch_end_checkpoint_holds_the_plateau_step_of_its_validation_and_a_resume_goes_on(tmp_path):
    """Lightning stepped the plateau after the epoch-end checkpoint was written, so a resume from
    it (after a kill -9) cut the lr an epoch late; the module now steps it as the validation ends."""
    from captioner.runs.run import run

    # lr so small that nothing is learnt: every validation after the first brings nothing better,
    # so patience 0 halves the lr at each of them (above ReduceLROnPlateau's eps of 1e-8 for a cut)
    plateau = ["model.lr=1e-7", "model.lr_schedule.name=plateau", "model.lr_schedule.plateau_patience=0",
               "early_stopping.patience=10"]
    run(compose_config(*plateau, "trainer.max_epochs=3", data_root=tmp_path / "data"),
        run_dir=tmp_path / "run", base_dir=tmp_path)
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    last = torch.load(path, weights_only=True)
    assert last["epoch"] == 2 and last["plateau"]["last_epoch"] == 3  # all three validations
    assert last["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.25e-7)
    run(compose_config(*plateau, "trainer.max_epochs=4", f"ckpt_path={path}", data_root=tmp_path / "data"),
        run_dir=tmp_path / "resumed", base_dir=tmp_path)
    resumed = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["plateau"]["last_epoch"] == 4 and resumed["plateau"]["best"] == last["plateau"]["best"]
    assert resumed["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.125e-7)


def test_a_checkpoint_from_before_the_module_stepped_the_plateau_keeps_its_state():
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))]), mode="max")
    plateau.step(0.4)
    state = plateau.state_dict()
    assert earlier_plateau_state({"lr_schedulers": [state]}) == state  # Lightning's, in older files
    assert earlier_plateau_state({"plateau": state, "lr_schedulers": []}) == state
    cosine = {"last_epoch": 5, "_step_count": 6, "base_lrs": [1e-3]}
    assert earlier_plateau_state({"lr_schedulers": [cosine]}) is None
