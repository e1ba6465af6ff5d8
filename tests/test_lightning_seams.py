"""Lightning's private internals are used in one module only, and that module fits the installed Lightning."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest
import pytorch_lightning as pl

from captioner.training import lightning_seams
from captioner.training.lightning_seams import (
    PRIVATE_NAMES,
    SEAM_FILE,
    TESTED_LIGHTNING_VERSIONS,
    UntestedLightningError,
    check_lightning_version,
    check_private_names,
    missing_private_names,
    warn_if_untested_lightning,
)
from tests.conftest import REPO


def test_the_installed_lightning_is_a_tested_version():
    assert pl.__version__ in TESTED_LIGHTNING_VERSIONS
    check_lightning_version()


def test_every_private_name_the_seams_use_exists_on_real_objects():
    assert missing_private_names() == []
    check_private_names()


def test_a_missing_internal_is_named_in_a_loud_error(monkeypatch):
    monkeypatch.setattr(lightning_seams.subprocess_script, "_hydra_subprocess_cmd", None)
    with pytest.raises(UntestedLightningError, match=r"_hydra_subprocess_cmd") as raised:
        check_private_names()
    assert str(SEAM_FILE) in str(raised.value) and pl.__version__ in str(raised.value)


def test_an_untested_lightning_fails_loudly_naming_the_version_and_the_seam(monkeypatch, caplog):
    monkeypatch.setattr(pl, "__version__", "9.8.7")
    with pytest.raises(UntestedLightningError) as raised:
        check_lightning_version()
    message = str(raised.value)
    assert "pytorch-lightning 9.8.7" in message and str(SEAM_FILE) in message
    assert TESTED_LIGHTNING_VERSIONS[0] in message
    with caplog.at_level(logging.WARNING):
        assert warn_if_untested_lightning() is False  # at run time: a warning, the run goes on
    assert "pytorch-lightning 9.8.7" in caplog.text


def _identifiers(path: Path) -> set[str]:
    """Every name a module could reach a Lightning private with: attributes (`x._name`), imported
    names, methods (an override of a private hook) and string constants (`getattr(x, "_name")`).
    Its own module-level functions and variables are its business."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.alias):
            found.add(node.name.split(".")[-1])
        elif isinstance(node, ast.ClassDef):
            found |= {item.name for item in node.body
                      if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.add(node.value)
    return found


def test_no_module_but_the_seam_uses_a_private_name_of_lightning():
    offenders = []
    for path in sorted((REPO / "captioner").rglob("*.py")):
        if path.resolve() == SEAM_FILE.resolve():
            continue
        used = _identifiers(path) & set(PRIVATE_NAMES)
        if used:
            offenders.append(f"{path.relative_to(REPO)}: {', '.join(sorted(used))}")
    assert not offenders, "use captioner/training/lightning_seams.py instead:\n" + "\n".join(offenders)


def test_the_scan_sees_every_way_of_naming_a_private(tmp_path):
    path = tmp_path / "sample.py"
    path.write_text("from x import _fs\nclass W:\n    def _check_log_dir_exists(self): ...\n"
                    "loop._data_fetcher\ngetattr(module, '_trainer')\n"
                    "def _experiment(): ...\n_combined_loader = 1\n")
    found = _identifiers(path)
    assert {"_fs", "_check_log_dir_exists", "_data_fetcher", "_trainer"} <= found
    assert not {"_experiment", "_combined_loader"} & found  # a module's own functions and variables


def test_the_hydra_command_swap_is_undone(tmp_path):
    original = lightning_seams.subprocess_script._hydra_subprocess_cmd

    def command(local_rank: int) -> tuple[list[str], str]:
        return ["true"], str(tmp_path)

    with pytest.raises(KeyError), lightning_seams.swapped_hydra_subprocess_command(command):
        assert lightning_seams.subprocess_script._hydra_subprocess_cmd is command
        raise KeyError
    assert lightning_seams.subprocess_script._hydra_subprocess_cmd is original


def test_has_trainer_says_whether_a_module_is_attached():
    module = pl.LightningModule()
    assert not lightning_seams.has_trainer(module)
    module.trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False)
    assert lightning_seams.has_trainer(module)
