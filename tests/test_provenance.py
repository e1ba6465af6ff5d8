"""A run's code is named by its commit and, from a tree with uncommitted changes, by the patch of
those changes: checking out the commit and applying the patch gives back the code that trained."""

import hashlib
import subprocess
from pathlib import Path

import pytest

from captioner.runs.provenance import code_state


def git(repo: Path, *arguments: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *arguments],
                          capture_output=True, text=True, check=True).stdout


def repository(path: Path) -> Path:
    path.mkdir()
    git(path, "init", "-q")
    (path / "model.py").write_text("hidden = 512\n")
    (path / "notes.md").write_text("notes\n")
    (path / ".gitignore").write_text("outputs/\n")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "start")
    return path


def test_a_clean_tree_is_named_by_its_commit_alone(tmp_path):
    repo = repository(tmp_path / "repo")
    (repo / "outputs").mkdir()
    (repo / "outputs" / "metrics.json").write_text("{}\n")  # ignored files are not code
    code = code_state(repo)
    assert code.commit == git(repo, "rev-parse", "HEAD").strip() and len(code.commit) == 40
    assert code.dirty is False and code.patch == "" and code.changed_files == []
    assert code.as_record() == {"git_commit": code.commit, "git_dirty": False}


def test_uncommitted_changes_are_kept_as_a_patch_that_rebuilds_the_code(tmp_path):
    repo = repository(tmp_path / "repo")
    (repo / "model.py").write_text("hidden = 1024\n")
    (repo / "notes.md").unlink()
    (repo / "attention.py").write_text("a new module, not yet added\n")
    (repo / "frames.bin").write_bytes(b"\0" * (2 << 20))  # too large to keep: named instead
    (repo / "latest").symlink_to(repo / "no-such-run")  # a dangling link is kept as a link
    code = code_state(repo)
    assert code.dirty is True and code.changed_files == ["model.py", "notes.md", "attention.py", "latest"]
    record = code.as_record()
    assert record["git_changed_files"] == code.changed_files
    assert record["git_untracked_left_out"] == ["frames.bin"]
    assert record["git_patch_sha256"] == hashlib.sha256(code.patch.encode()).hexdigest()

    copy = tmp_path / "copy"
    subprocess.run(["git", "clone", "-q", str(repo), str(copy)], check=True)
    git(copy, "checkout", "-q", code.commit)
    (tmp_path / "code.diff").write_text(code.patch)
    git(copy, "apply", str(tmp_path / "code.diff"))
    assert (copy / "model.py").read_text() == "hidden = 1024\n" and not (copy / "notes.md").exists()
    assert (copy / "attention.py").read_text() == "a new module, not yet added\n"
    assert (copy / "latest").readlink() == repo / "no-such-run"


def test_a_package_outside_a_checkout_of_its_own_has_no_commit(tmp_path):
    assert code_state(tmp_path).as_record() == {"git_commit": None, "git_dirty": None}
    repo = repository(tmp_path / "repo")  # a folder inside another project's repository
    (repo / "site-packages").mkdir()
    assert code_state(repo / "site-packages").commit is None


@pytest.mark.slow  # two runs, one of them a resume
def test_a_run_started_from_uncommitted_changes_and_resumed_from_a_clean_tree_keeps_both(
        shared_data_root, tmp_path, monkeypatch):
    """The resume re-records the code of its own process; before, that erased the changes the run
    started with (code.diff deleted, git_dirty false), so a dirty run could pass as a clean one."""
    import json

    import captioner.runs.run as run_module
    from captioner.records.run_summary import RunSummary
    from captioner.runs.provenance import CodeState
    from tests.conftest import compose_config

    patch = "diff --git a/model.py b/model.py\n--- a/model.py\n+++ b/model.py\n@@ -1 +1 @@\n-a\n+b\n"
    dirty, clean = CodeState("c0ffee", patch), CodeState("c0ffee", "")
    run_dir = tmp_path / "run"
    monkeypatch.setattr(run_module, "code_state", lambda: dirty)
    run_module.run(compose_config("trainer.max_epochs=1", data_root=shared_data_root), run_dir)
    first = json.loads((run_dir / "metrics.json").read_text())["provenance"]
    assert first["git_dirty"] is True and (run_dir / "code.diff").read_text() == patch

    monkeypatch.setattr(run_module, "code_state", lambda: clean)
    original_prepare = run_module.prepare

    def failing_prepare(*args, **kwargs):
        raise OSError("the disk is full")

    # a resume that fails before it records its own code: its summary used to forget the earlier code
    monkeypatch.setattr(run_module, "prepare", failing_prepare)
    with pytest.raises(OSError, match="the disk is full"):
        run_module.run(compose_config("trainer.max_epochs=2", "ckpt_path=last", data_root=shared_data_root),
                       run_dir)
    assert RunSummary.read(run_dir / "metrics.json").uncommitted_changes
    monkeypatch.setattr(run_module, "prepare", original_prepare)
    run_module.run(compose_config("trainer.max_epochs=2", "ckpt_path=last", data_root=shared_data_root),
                   run_dir)
    summary = RunSummary.read(run_dir / "metrics.json")
    assert summary.status == "completed" and summary.provenance["git_dirty"] is False
    assert not (run_dir / "code.diff").exists()  # this process's code: clean
    (earlier,) = summary.provenance["code_before_resume"]
    assert earlier["git_dirty"] is True and earlier["git_patch_sha256"] == first["git_patch_sha256"]
    assert (run_dir / f"code.before-resume.{first['git_patch_sha256'][:12]}.diff").read_text() == patch
    assert summary.uncommitted_changes  # what the report and the comparison driver read


def test_the_code_before_a_resume_is_recorded_only_where_it_differs_and_is_never_dropped():
    from captioner.records.run_summary import RunSummary
    from captioner.runs.provenance import code_before_resume

    clean = {"git_commit": "b", "git_dirty": False, "torch": "2.15"}
    dirty = {"git_commit": "a", "git_dirty": True, "git_patch_sha256": "f00", "torch": "2.13"}
    assert code_before_resume(clean, {**clean, "torch": "2.16"}) == []  # the same code: nothing new
    history = code_before_resume(dirty, clean)
    assert history == [{"git_commit": "a", "git_dirty": True, "git_patch_sha256": "f00"}]
    resumed_again = code_before_resume({**clean, "code_before_resume": history}, clean)
    assert resumed_again == history  # a second resume from the same clean tree keeps the first's record
    assert RunSummary(provenance={**clean, "code_before_resume": history}).uncommitted_changes
    assert not RunSummary(provenance=clean).uncommitted_changes
