"""A run's settings: the composed config read once, checked, typed (reading.py, sections.py)."""

from captioner.settings.reading import read_settings
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
