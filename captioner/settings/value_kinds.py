"""What counts as a whole number and as a number in settings, for the config reader and for the
values Python code hands the model (plain Python: model/ imports it without a config library)."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import numpy as np


def whole_number(value: Any) -> bool:
    """An integer (numpy's too), not a bool (True is an int to Python)."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def real_number(value: Any) -> bool:
    """A real number (numpy's too), not a bool."""
    return isinstance(value, Real) and not isinstance(value, bool)


def finite_number(value: Any) -> bool:
    """A finite real number, not a bool."""
    return real_number(value) and math.isfinite(value)


def python_value(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (np.int64(3) -> 3, np.bool_ -> bool); anything
    else as it is. OmegaConf and json take only Python's own, and numpy's come from array code."""
    return value.item() if isinstance(value, np.generic) else value
