"""What counts as a whole number and as a number in settings, for the config reader and for the
values Python code hands the model (plain Python: model/ imports it without a config library)."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any


def whole_number(value: Any) -> bool:
    """An integer (numpy's too), not a bool (True is an int to Python)."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def finite_number(value: Any) -> bool:
    """A finite real number, not a bool."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
