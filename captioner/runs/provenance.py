"""Where a run's numbers came from: the code (git commit, and any uncommitted changes), the
versions of the libraries that shape the results, and the device it trained on.

A commit alone does not name the code of a run started from a tree with uncommitted changes:
such runs keep their changes as a patch (`code.diff` in the run folder), so that
`git checkout <commit> && git apply code.diff` gives back the code that trained them.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

CHECKOUT = Path(__file__).resolve().parents[2]  # the repository, when the package runs from one


UNTRACKED_LIMIT = 1 << 20  # bytes: a larger untracked file is named, not kept (it is rarely code)


@dataclass(frozen=True)
class CodeState:
    """The checkout's code when a run started. `patch`: `git diff HEAD` of the tracked files plus
    the untracked ones git does not ignore ("" for a clean tree); both None for an installed
    package, which has no commit of ours. `left_out`: untracked files too large to keep."""

    commit: str | None
    patch: str | None
    left_out: tuple[str, ...] = ()

    @property
    def dirty(self) -> bool | None:
        return None if self.patch is None else bool(self.patch or self.left_out)

    @property
    def changed_files(self) -> list[str]:
        """The files the patch changes or adds, as git names them (`diff --git a/<path> b/<path>`)."""
        return [line.split(" b/", 1)[1] for line in (self.patch or "").splitlines()
                if line.startswith("diff --git a/") and " b/" in line]

    @property
    def patch_sha256(self) -> str | None:
        return hashlib.sha256(self.patch.encode()).hexdigest() if self.dirty and self.patch else None

    def as_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"git_commit": self.commit, "git_dirty": self.dirty}
        if self.dirty:  # which files, and the patch's digest: code.diff must be this one
            record.update(git_changed_files=self.changed_files, git_patch_sha256=self.patch_sha256)
        if self.left_out:
            record["git_untracked_left_out"] = list(self.left_out)
        return record


CODE_KEYS = ("git_commit", "git_dirty", "git_changed_files", "git_patch_sha256", "git_untracked_left_out")


def code_before_resume(earlier: dict[str, Any], now: dict[str, Any]) -> list[dict[str, Any]]:
    """The code a resumed run trained with before this process, oldest first, where it is not the
    code of now: `earlier` is the provenance the run had recorded (with its own such list), `now`
    this process's. A run started from uncommitted changes and resumed from a clean tree stays a
    run with uncommitted changes (RunSummary.uncommitted_changes)."""
    history = list(earlier.get("code_before_resume") or [])
    theirs = {key: earlier[key] for key in CODE_KEYS if key in earlier}
    if theirs and theirs != {key: now[key] for key in CODE_KEYS if key in now}:
        history.append(theirs)
    return history


def code_state(checkout: Path = CHECKOUT) -> CodeState:
    """The commit `checkout` is at and its uncommitted changes: tracked files' and new files' (git's
    ignored files, such as outputs/ and data/, are not code)."""
    checkout = Path(checkout).resolve()
    top = _git(checkout, "rev-parse", "--show-toplevel")
    # An installed package's folder may sit inside another project's repository: its commit is not ours.
    if top is None or Path(top).resolve() != checkout:
        return CodeState(None, None)
    commit = _git(checkout, "rev-parse", "HEAD")
    tracked = _git(checkout, "diff", "HEAD", "--binary", strip=False) if commit else None
    if tracked is None:
        return CodeState(commit, None)
    untracked, left_out = _untracked_patch(checkout)
    return CodeState(commit, tracked + untracked, left_out)


def _untracked_patch(checkout: Path) -> tuple[str, tuple[str, ...]]:
    """New files as a patch that creates them (git diff against /dev/null writes no objects into
    the repository, unlike `git add`), and the names of those too large to keep."""
    listed = _git(checkout, "ls-files", "--others", "--exclude-standard", "-z", strip=False) or ""
    parts, left_out = [], []
    for name in filter(None, listed.split("\0")):
        try:  # lstat: a link is kept as its target's name, and a dangling one is no error
            too_large = (checkout / name).lstat().st_size > UNTRACKED_LIMIT
        except OSError:  # gone since git listed it
            continue
        if too_large:
            left_out.append(name)
            continue
        # exit status 1 means "they differ", which a new file always does
        parts.append(_git(checkout, "diff", "--no-index", "--binary", "--", "/dev/null", name,
                          strip=False, differ_ok=True) or "")
    return "".join(parts), tuple(left_out)


def _git(checkout: Path, *arguments: str, strip: bool = True, differ_ok: bool = False) -> str | None:
    try:
        result = subprocess.run(["git", "-C", str(checkout), *arguments], capture_output=True, text=True,
                                errors="replace", timeout=20)
    except (OSError, subprocess.SubprocessError):  # no git
        return None
    if result.returncode != 0 and not (differ_ok and result.returncode == 1):
        return None  # not a checkout (an installed package), no commit yet, ...
    return result.stdout.strip() if strip else result.stdout


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def device_description(device: torch.device, devices: int = 1) -> str:
    """e.g. `cuda:0 NVIDIA H200` or `cpu x86_64 (2 cores)`; `devices`: how many train (DDP)."""
    if device.type == "cuda":
        name = f"{device} {torch.cuda.get_device_name(device)}"
    else:
        name = f"{device.type} {platform.machine()} ({os.cpu_count()} cores)"
    return name if devices == 1 else f"{devices} x {name}"


def provenance(device: torch.device, devices: int, code: CodeState) -> dict[str, Any]:
    """For metrics.json: enough to say which code, libraries and device made a run's scores.
    `code`: the checkout as the run found it when it started."""
    return {**code.as_record(),
            "captioner": _version("captioner"), "torch": torch.__version__,
            "pytorch_lightning": _version("pytorch-lightning"), "python": platform.python_version(),
            "device": device_description(device, devices)}
