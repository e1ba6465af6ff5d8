"""A run's code is named by its commit and, from a tree with uncommitted changes, by the patch of
those changes: checking out the commit and applying the patch gives back the code that trained."""

import hashlib
import subprocess
from pathlib import Path

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
