"""`.ci/prune_environments`: CI's cached environments (~5 GB each) go once no run uses them."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

PRUNE = Path(__file__).resolve().parents[1] / ".ci" / "prune_environments"
DAY = 24 * 3600


def _folder(cache: Path, name: str, marker_age_days: float | None, folder_age_days: float,
            environment: bool = True) -> Path:
    """A folder in the cache: an environment as .ci/run makes one (pyvenv.cfg), or anything else."""
    folder = cache / name
    (folder / "bin").mkdir(parents=True)
    if environment:
        (folder / "pyvenv.cfg").write_text("home = /usr/bin\n")
    now = time.time()
    if marker_age_days is not None:
        marker = folder / ".last-used"
        marker.touch()
        os.utime(marker, (now - marker_age_days * DAY,) * 2)
    os.utime(folder, (now - folder_age_days * DAY,) * 2)  # after the files: they touched the folder
    return folder


def test_only_environments_unused_for_a_week_are_removed(tmp_path: Path) -> None:
    cache = tmp_path / "venvs"
    current = _folder(cache, "c" * 16, marker_age_days=30, folder_age_days=30)  # this run's own
    recent = _folder(cache, "0123456789abcdef", marker_age_days=2, folder_age_days=40)
    stale = _folder(cache, "1123456789abcdef", marker_age_days=9, folder_age_days=9)
    building = _folder(cache, "2123456789abcdef", marker_age_days=None, folder_age_days=0.1)
    abandoned = _folder(cache, "3123456789abcdef", marker_age_days=None, folder_age_days=3)
    # a cache folder shared with other tools: nothing that is not a CI environment is touched
    others = [_folder(cache, "pip", marker_age_days=None, folder_age_days=60, environment=False),
              _folder(cache, "4123456789abcdef", marker_age_days=None, folder_age_days=60, environment=False),
              _folder(cache, "my-old-venv", marker_age_days=30, folder_age_days=60)]

    done = subprocess.run(["bash", str(PRUNE), str(cache), str(current) + "/"],
                          capture_output=True, text=True, check=True)

    assert all(folder.exists() for folder in [current, recent, building, *others])
    assert not stale.exists() and not abandoned.exists()
    assert done.stdout.count("removing") == 2
    assert str(stale) in done.stdout and str(abandoned) in done.stdout


def test_an_empty_or_missing_cache_is_not_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for cache in (tmp_path / "empty", tmp_path / "missing"):
        done = subprocess.run(["bash", str(PRUNE), str(cache), str(cache / "x")],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert done.stdout == ""
