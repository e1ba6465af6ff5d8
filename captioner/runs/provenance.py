"""Where a run's numbers came from: the code (git commit, and whether the tree had uncommitted
changes), the versions of the libraries that shape the results, and the device it trained on."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

CHECKOUT = Path(__file__).resolve().parents[2]  # the repository, when the package runs from one


def _checkout_commit() -> str | None:
    """The commit of the repository the package runs from; None for an installed package (whose
    folder may sit inside another project's repository: its commit is not ours)."""
    top = _git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != CHECKOUT:
        return None
    return _git("rev-parse", "HEAD")


def _git(*arguments: str) -> str | None:
    try:
        result = subprocess.run(["git", "-C", str(CHECKOUT), *arguments], capture_output=True, text=True,
                                timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):  # no git, not a checkout (an installed package)
        return None
    return result.stdout.strip()


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


def provenance(device: torch.device, devices: int = 1) -> dict[str, Any]:
    """For metrics.json: enough to say which code, libraries and device made a run's scores."""
    commit = _checkout_commit()
    changes = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"git_commit": commit, "git_dirty": bool(changes) if commit else None,
            "captioner": _version("captioner"), "torch": torch.__version__,
            "pytorch_lightning": _version("pytorch-lightning"), "python": platform.python_version(),
            "device": device_description(device, devices)}
