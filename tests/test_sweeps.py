"""Sweeps as a user runs them: named sweep files, parallel launcher, shared features, failures,
the comparison report, W&B sweep files and Optuna."""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import subprocess
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from omegaconf import OmegaConf

from tests.conftest import (
    CONF,
    REPO,
    TINY_COMMAND,
    child_processes,
    command,
    python,
    start_train,
    train,
    train_command,
    wait_for,
)

SWEEPS = REPO / "sweeps"
# TINY without its cnn choice, which the smoke sweep varies itself, and with DataLoader workers
# for extraction (as by default), which must start inside the parallel launcher's workers too.
SMALL = [o for o in TINY_COMMAND if o not in ("cnn=vgg16", "cnn.num_workers=0")]


def sweep_dirs(tmp_path: Path, name: str) -> list[Path]:
    return sorted((tmp_path / "outputs" / name).iterdir())


def finite_scores(run_dir: Path) -> dict[str, float]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed", metrics
    assert all(math.isfinite(v) for v in metrics["test"].values()), metrics["test"]
    return metrics


@pytest.mark.slow
def test_the_smoke_sweep_runs_in_parallel_shares_features_and_reports(tmp_path):
    result = command(tmp_path, train_command(tmp_path / "data", "-m", "--config-dir", str(SWEEPS),
                                             "--config-name", "smoke", "hydra/launcher=parallel",
                                             tiny=SMALL), timeout=900)
    (sweep,) = sweep_dirs(tmp_path, "smoke")
    runs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in runs] == ["0", "1", "2", "3"]
    cells = {(m["config"]["cnn"], m["config"]["rnn"]) for m in map(finite_scores, runs)}
    assert cells == {("vgg16", "gru"), ("vgg16", "lstm"), ("resnet101", "gru"), ("resnet101", "lstm")}

    # Two runs per CNN, one features file per CNN, each extracted by exactly one run.
    logs = "".join((run / "train.log").read_text() for run in runs)
    assert logs.count("extracting features") == 2, logs
    assert sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "data" / "features").glob("*.h5")) == [
        "shapes-resnet101", "shapes-vgg16"]  # each name ends in its config's key

    report = (sweep / "report.md").read_text()
    for run in runs:
        assert f"| {run.name} | cnn=" in report
    assert report.count("| completed |") == 4
    assert "### cnn" in report and "### rnn" in report
    for chart in ("effects_cnn.png", "effects_rnn.png", "val_cider.png"):
        assert (sweep / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "sweep: test scores" in result.stdout


@pytest.mark.slow
def test_a_failing_run_does_not_sink_the_sweep(tmp_path, shared_data_root):
    # dropout=2.0 makes the second run fail (its up-front config check), after the sweep has started.
    result = train(tmp_path, "-m", "model.dropout=0.1,2.0", data_root=shared_data_root, check=False)
    assert result.returncode == 1  # the sweep finished, and says that not every run did
    (sweep,) = sweep_dirs(tmp_path, "multirun")
    finite_scores(sweep / "0")
    failed = json.loads((sweep / "1" / "metrics.json").read_text())
    assert failed["status"] == "failed" and "model.dropout=2.0" in failed["error"]
    report = (sweep / "report.md").read_text()
    assert "| 1 | model.dropout=2.0 | failed: ConfigError: model.dropout=2.0" in report
    assert "| 0 | model.dropout=0.1 | completed |" in report
    assert "1 of 2 runs did not complete" in result.stderr + result.stdout


@pytest.mark.slow
def test_a_preempted_sweep_goes_on_with_the_same_command_and_keeps_its_finished_runs(tmp_path,
                                                                                   shared_data_root):
    """Stopped in its second run, the sweep goes on in its folder: the first run is kept as it was,
    the second goes on (or starts again, if it had no checkpoint yet), the third starts. Before,
    `ckpt_path=last` failed every run that had not begun and trained the finished ones again."""
    sweep_arguments = ["-m", "seed=1,2,3", "trainer.max_epochs=2"]
    process = start_train(tmp_path, *sweep_arguments, data_root=shared_data_root, quiet=True)
    try:
        wait_for(lambda: next((tmp_path / "outputs" / "multirun").glob("*/1/metrics.json"), None))
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        process.kill()
    (sweep,) = sweep_dirs(tmp_path, "multirun")
    first = (sweep / "0" / "metrics.json").read_bytes()
    assert json.loads(first)["status"] == "completed"
    assert not (sweep / "2").exists()

    train(tmp_path, *sweep_arguments, "ckpt_path=last", f"hydra.sweep.dir={sweep}",
          data_root=shared_data_root)
    assert (sweep / "0" / "metrics.json").read_bytes() == first  # not trained or tested again
    seeds = [finite_scores(sweep / job)["config"]["seed"] for job in ("0", "1", "2")]
    assert seeds == [1, 2, 3]
    assert (sweep / "report.md").read_text().count("| completed |") == 3


@pytest.mark.slow
def test_a_sweep_that_cannot_resume_a_run_keeps_it_as_it_was_and_says_so(tmp_path, shared_data_root):
    # Hydra writes each job's .hydra/ before any per-job callback: the refused run's folder held
    # the new overrides beside the old scores, and the sweep exited 0 as if it had run it.
    train(tmp_path, "-m", "seed=1", data_root=shared_data_root)
    (sweep,) = sweep_dirs(tmp_path, "multirun")

    def files() -> dict[Path, bytes]:
        return {p.relative_to(sweep): p.read_bytes() for p in (sweep / "0").rglob("*") if p.is_file()}

    before = files()
    result = train(tmp_path, "-m", "seed=1", "rnn=lstm", "ckpt_path=last", f"hydra.sweep.dir={sweep}",
                   data_root=shared_data_root, check=False)
    assert result.returncode == 1, result.stderr[-3000:]
    refusal = (sweep / "0" / "refused.txt").read_text()
    assert "rnn.cell=lstm (the checkpoint has gru)" in refusal
    after = files()
    assert after.pop(Path("0/train.log")).startswith(before[Path("0/train.log")])  # told why, below
    assert {p: b for p, b in after.items() if p.name != "refused.txt"} == \
        {p: b for p, b in before.items() if p.name != "train.log"}  # .hydra/ too
    assert "| refused: ConfigError: " in (sweep / "report.md").read_text()

    train(tmp_path, "-m", "seed=1", "ckpt_path=last", f"hydra.sweep.dir={sweep}", data_root=shared_data_root)
    assert files().keys() == before.keys()  # asked as it ran: kept, and no longer refused
    assert files()[Path("0/metrics.json")] == before[Path("0/metrics.json")]
    assert "| completed |" in (sweep / "report.md").read_text()


def _start_parallel_sweep(tmp_path: Path, data_root: Path, epochs: int) -> subprocess.Popen:
    """Three runs, two at a time (hydra/launcher=parallel), once both have a checkpoint."""
    process = start_train(tmp_path, "-m", "hydra/launcher=parallel", "seed=1,2,3",
                          f"trainer.max_epochs={epochs}", data_root=data_root, quiet=True)

    def both_saved() -> bool:
        assert process.poll() is None
        return len(list((tmp_path / "outputs").glob("multirun/*/*/checkpoints/last.ckpt"))) >= 2

    wait_for(both_saved)
    return process


def _run_processes(launcher_pid: int) -> list[int]:
    """The launcher's children that are runs (not multiprocessing's resource tracker)."""
    return [pid for pid in child_processes(launcher_pid)
            if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR2], ids=["SIGTERM", "SIGUSR2"])
def test_a_signal_to_a_parallel_sweep_reaches_every_run_in_progress_and_starts_no_other(
        tmp_path, shared_data_root, signum):
    # joblib's workers never got a SIGTERM sent to the sweep's process: they trained on as orphans;
    # SIGUSR2 (submitit's time-limit warning) killed the launcher and left its runs as orphans
    process = _start_parallel_sweep(tmp_path, shared_data_root, epochs=50)
    runs = _run_processes(process.pid)
    process.send_signal(signum)
    assert process.wait(timeout=120) == 128 + signum
    (sweep,) = sweep_dirs(tmp_path, "multirun")
    for job in ("0", "1"):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["status"] == "preempted" and metrics["checkpoint"].endswith("last.ckpt")
    assert not (sweep / "2").exists()  # not started
    assert (sweep / "report.md").is_file()
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in runs), timeout=10)


@pytest.mark.slow
def test_a_run_killed_in_a_parallel_sweep_is_that_run_alone(tmp_path, shared_data_root):
    # joblib ended every worker when one died (the OOM killer): the sweep stopped, the others unsaved
    process = _start_parallel_sweep(tmp_path, shared_data_root, epochs=4)
    first, *_ = _run_processes(process.pid)
    os.kill(first, signal.SIGKILL)
    assert process.wait(timeout=600) == 1  # a run did not complete; not 2, a user error
    (sweep,) = sweep_dirs(tmp_path, "multirun")
    statuses = [json.loads((sweep / job / "metrics.json").read_text())["status"] for job in ("0", "1", "2")]
    assert sorted(statuses) == ["completed", "completed", "running"]  # the killed one said running
    assert "killed: process" in (sweep / "report.md").read_text()


@pytest.mark.slow
def test_two_runs_started_together_extract_the_features_once(tmp_path):
    data_root = tmp_path / "data"  # nothing there yet: both need the dataset and its features
    processes = [start_train(tmp_path, "dataset.num_images=120", f"hydra.run.dir={tmp_path / name}",
                             data_root=data_root) for name in ("a", "b")]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    first, second = (finite_scores(tmp_path / name) for name in ("a", "b"))
    assert first["features"] == second["features"]
    logs = [(tmp_path / name / "train.log").read_text() for name in ("a", "b")]
    assert sum(log.count("extracting features") for log in logs) == 1, logs
    assert sum(("waiting for another run" in log or "reusing features" in log) for log in logs) == 1


def _compose_sweep_file(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(SWEEPS), version_base="1.3"):
        return compose(config_name=name, overrides=[f"hydra.searchpath=[file://{CONF}]", *overrides],
                       return_hydra_config=True)


@pytest.mark.parametrize("name", sorted(p.stem for p in SWEEPS.glob("*.yaml") if ".wandb" not in p.name))
def test_every_cell_of_a_named_sweep_composes(name):
    params = _compose_sweep_file(name, []).hydra.sweeper.params
    assert params, f"sweeps/{name}.yaml sweeps nothing"
    grid = [[f"{key}={value.strip()}" for value in str(values).split(",")] for key, values in params.items()]
    for cell in itertools.product(*grid):
        cfg = _compose_sweep_file(name, list(cell))
        assert cfg.sweep_name == name
        for override in cell:
            key, value = override.split("=")
            chosen = cfg.hydra.runtime.choices.get(key, OmegaConf.select(cfg, key))
            assert str(chosen) == value, (name, override)


@pytest.mark.parametrize("path", sorted(SWEEPS.glob("*.wandb.yaml")), ids=lambda p: p.name)
def test_wandb_sweep_files_only_use_overrides_train_accepts(path):
    spec = yaml.safe_load(path.read_text())
    assert (REPO / spec["program"]).is_file()
    assert "${args_no_hyphens}" in spec["command"]  # key=value, the form Hydra parses
    choices = [[f"{key}={value}" for value in (p["values"] if "values" in p else [p["value"]])]
               for key, p in spec["parameters"].items()]
    for cell in itertools.product(*choices):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="train", overrides=list(cell), return_hydra_config=True)
        for override in cell:
            key, value = override.split("=")
            chosen = cfg.hydra.runtime.choices.get(key, OmegaConf.select(cfg, key))
            assert str(chosen) == value, (path.name, override)


@pytest.mark.parametrize("path", sorted(SWEEPS.glob("*.wandb.yaml")), ids=lambda p: p.name)
def test_a_wandb_sweep_file_trains_what_its_hydra_twin_trains(path):
    """prior_study_tuning.wandb.yaml said "same grid" but left out trainer.max_epochs (agents trained
    15 epochs, not 20) and the seeds the report's verdicts need."""
    twin = path.name.removesuffix(".wandb.yaml")
    if not (SWEEPS / f"{twin}.yaml").is_file():
        pytest.skip(f"{path.name} has no Hydra sweep file beside it")
    spec = yaml.safe_load(path.read_text())["parameters"]
    hydra_grid = _compose_sweep_file(twin, []).hydra.sweeper.params
    swept = {key: p["values"] for key, p in spec.items() if "values" in p}
    assert {key: [str(v) for v in values] for key, values in swept.items()} == {
        key: [v.strip() for v in str(values).split(",")] for key, values in hydra_grid.items()}
    cell = [f"{key}={values[0]}" for key, values in swept.items()]
    fixed = [f"{key}={p['value']}" for key, p in spec.items() if "value" in p]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        agent = compose(config_name="train", overrides=[*cell, *fixed])
    grid = _compose_sweep_file(twin, cell)
    plain = {name: OmegaConf.to_container(cfg, resolve=False)
             for name, cfg in (("agent", agent), ("grid", grid))}
    for config in plain.values():
        config.pop("hydra", None)
        config.pop("logger", None)  # the agents log to W&B, a logger choice, not a trained setting
    assert plain["agent"] == plain["grid"]


@pytest.mark.slow
def test_optuna_search_runs_its_trials_and_records_the_best(tmp_path, shared_data_root):
    train(tmp_path, "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2", data_root=shared_data_root)
    (sweep,) = sweep_dirs(tmp_path, "optuna")
    tried = [json.loads((run / "metrics.json").read_text()) for run in (sweep / "0", sweep / "1")]
    assert all(t["status"] == "completed" for t in tried)
    assert tried[0]["config"]["lr"] != tried[1]["config"]["lr"]  # the sampler chose them
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(t["best_val_cider"] for t in tried))
    # TINY fixes the sizes on the command line; the search varies the rest.
    assert set(best["best_params"]) == {"model.lr", "model.dropout", "model.attention_regularization"}
    assert tried[0]["config"]["hidden_dim"] == 64


@pytest.mark.slow
def test_a_search_whose_every_trial_fails_still_reports_them_and_exits_1(tmp_path, shared_data_root):
    """Optuna gives up when no trial completed ("No trials are completed yet") before Hydra's
    end of the sweep: no report was written, so nothing said which trials failed and why."""
    result = train(tmp_path, "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=1",
                   "dataset.split_fractions={train: 1.0, val: 0.0, test: 0.0}", data_root=shared_data_root,
                   check=False)
    assert result.returncode == 1, result.stderr[-3000:]
    (sweep,) = sweep_dirs(tmp_path, "optuna")
    report = (sweep / "report.md").read_text()
    (row,) = [line for line in report.splitlines() if line.startswith("| 0 |")]
    assert "| failed: ValueError: " in row and "features" in row, row  # the error, cut to a length
    assert "split 'val' has no images" in json.loads((sweep / "0" / "metrics.json").read_text())["error"]
    assert (sweep / "report.html").is_file()


@pytest.mark.slow
def test_a_prepare_sweep_extracts_each_features_file_once_ahead_of_training(tmp_path):
    python(tmp_path, "-m", "captioner.prepare", "-m", "--config-dir", str(SWEEPS), "--config-name", "smoke",
           *SMALL, f"data_root={tmp_path / 'data'}")
    assert sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "data" / "features").glob("*.h5")) == [
        "shapes-resnet101", "shapes-vgg16"]  # each name ends in its config's key
    (sweep,) = sweep_dirs(tmp_path, "smoke")
    logs = "".join(p.read_text() for p in sweep.glob("*/prepare.log"))
    assert logs.count("extracting features") == 2 and logs.count("reusing features") == 2
    assert not (sweep / "report.md").exists()  # nothing was trained: nothing to report


@pytest.mark.slow
def test_runs_can_go_through_submitit(tmp_path, shared_data_root):
    # The local_gpus launcher without GPUs: each run is a submitit job, a process of its own.
    train(tmp_path, "-m", "hydra/launcher=local_gpus", "hydra.launcher.gpus_per_node=0",
          "hydra.launcher.cpus_per_task=1", "rnn=gru,lstm", data_root=shared_data_root)
    (sweep,) = sweep_dirs(tmp_path, "multirun")
    assert {finite_scores(sweep / job)["config"]["rnn"] for job in ("0", "1")} == {"gru", "lstm"}
    assert list((sweep / ".submitit").iterdir())
    assert (sweep / "report.md").is_file()


@pytest.mark.slow
def test_a_failed_run_under_submitit_ends_the_sweep_with_exit_1(tmp_path, shared_data_root):
    # Each run is a submitit job in a process of its own, so this process never saw a job start
    # and took the sweep's exit 1 for a command-line error: exit 2.
    result = train(tmp_path, "-m", "hydra/launcher=local_gpus", "hydra.launcher.gpus_per_node=0",
                   "hydra.launcher.cpus_per_task=1", "model.dropout=0.1,2.0", data_root=shared_data_root,
                   check=False)
    assert result.returncode == 1, result.stderr[-3000:]
    (sweep,) = sweep_dirs(tmp_path, "multirun")
    assert "| failed: ConfigError: model.dropout=2.0" in (sweep / "report.md").read_text()


def test_a_bad_value_in_a_sweep_list_is_a_user_error(tmp_path):
    result = command(tmp_path, train_command(tmp_path / "data", "-m", "dataset=shapes,shapez"), check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "shapez" in result.stderr
    # also where the sweep goes on in a folder of earlier runs: none of them is this command's
    earlier = tmp_path / "sweep" / "0" / ".hydra"
    earlier.mkdir(parents=True)
    (earlier / "overrides.yaml").write_text("- dataset=shapes\n")
    result = command(tmp_path, train_command(tmp_path / "data", "-m", "dataset=shapes,shapez",
                                             f"hydra.sweep.dir={tmp_path / 'sweep'}"), check=False)
    assert result.returncode == 2 and not (tmp_path / "sweep" / "report.md").exists(), result.stderr[-2000:]


def test_a_job_the_launcher_lost_is_told_from_a_command_line_error_also_when_hydra_re_raises():
    # HYDRA_FULL_ERROR=1: Hydra re-raises submitit's error itself instead of exiting 1 after it; the
    # sweep cut off by it was then not reported
    from submitit.core.utils import UncompletedJobError

    from captioner.errors import _after_a_job_failed

    lost = UncompletedJobError("job 12_3 has not produced any output (state: OUT_OF_MEMORY)")
    assert _after_a_job_failed(lost)
    exit = SystemExit(1)
    exit.__context__ = lost  # Hydra's own exit after printing it
    assert _after_a_job_failed(exit)
    assert not _after_a_job_failed(SystemExit(1)) and not _after_a_job_failed(ValueError("rnn=lstmm"))


@pytest.mark.parametrize("launcher, target", [("parallel", "ProcessPerRunLauncher"),
                                              ("local_gpus", "LocalLauncher"),
                                              ("slurm", "SlurmLauncher")])
def test_launcher_configs_select_the_hydra_plugins(launcher, target):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)
    found = {plugin.__name__ for plugin in Plugins.instance().discover(Launcher)}
    assert target in found  # Hydra finds the class (plugins must live in hydra_plugins/)
    if launcher != "parallel":
        assert cfg.hydra.launcher.tasks_per_node == 1 and cfg.hydra.launcher.timeout_min >= 60


@pytest.mark.parametrize("cnn, weights, weights_path", [
    ("mobilenet_v2", "IMAGENET1K_V1", "../shared/weights/mobilenet_v2_imagenet.pth"),
    ("efficientnet_lite2", "package", None),
])
def test_the_flickr8k_comparison_gives_each_cnn_its_offline_weights(cnn, weights, weights_path):
    cfg = _compose_sweep_file("flickr8k_cnn_rnn", [f"cnn={cnn}", "rnn=lstm"])
    assert (cfg.cnn.name, cfg.cnn.weights, cfg.cnn.weights_path) == (cnn, weights, weights_path)
    assert cfg.dataset.name == "flickr8k" and cfg.decode.strategy == "beam"  # the experiment's recipe


@pytest.mark.parametrize("cnn, weights, weights_path", [
    ("mobilenet_v2", "IMAGENET1K_V1", "../shared/weights/mobilenet_v2_imagenet.pth"),
    ("efficientnet_lite2", "package", None),
    ("vgg16", "IMAGENET1K_V1", None),  # no offline file: torchvision's weights, as configured
])
def test_the_flickr8k_experiment_takes_each_cnn_with_its_offline_weights(cnn, weights, weights_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=flickr8k_mobilenet", f"cnn={cnn}"])
    assert (cfg.cnn.name, cfg.cnn.weights, cfg.cnn.weights_path) == (cnn, weights, weights_path)
