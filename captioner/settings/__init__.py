"""A run's settings: the composed config read once, checked, typed (reading.py, sections.py).

Importing this package (or `choices`) loads no config library: model/ and training/ take their
allowed values from here and stay plain PyTorch. `read_settings` imports reading.py on first use.
"""

from pathlib import Path
from typing import Any

from captioner.settings.sections import (
    CnnSettings,
    DatasetSettings,
    DataSettings,
    DecodeSettings,
    LoggerSettings,
    LrSchedule,
    ModelSettings,
    RunSettings,
    ScheduledSampling,
    ScstSettings,
    TextSettings,
    TrainerSettings,
)

__all__ = ["CnnSettings", "DataSettings", "DatasetSettings", "DecodeSettings", "LoggerSettings",
           "LrSchedule", "ModelSettings", "RunSettings", "ScheduledSampling", "ScstSettings",
           "TextSettings", "TrainerSettings", "read_settings"]


def read_settings(cfg: Any, base_dir: Path) -> RunSettings:
    """The run's settings from the composed Hydra config (reading.py's, imported here on first use)."""
    from captioner.settings.reading import read_settings as read

    return read(cfg, base_dir)
