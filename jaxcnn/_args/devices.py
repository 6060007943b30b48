"""Device and process arguments (``jaxcnn train --devices``, the multi-process flags)."""
from __future__ import annotations

from typing import Any

from jaxcnn._shapes import is_int


def device_request(value: Any, name: str = "devices") -> int | str | None:
    """``None`` (the default), ``"all"`` or a positive int; a string of digits (the command
    line's) becomes an int."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if value is None or value == "all" or (is_int(value) and int(value) >= 1):
        return value if not is_int(value) else int(value)
    raise ValueError(f"{name}: expected a positive number of devices or 'all'; got {value!r}")


def optional_index(value: Any, name: str, minimum: int) -> int | None:
    """``None`` or an int ``>= minimum`` (bools refused); a string of digits becomes an int."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if value is None:
        return None
    if not is_int(value) or int(value) < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}; got {value!r}")
    return int(value)


def check_splits_evenly(batch_size: int, count: int, what: str, name: str = "batch_size") -> None:
    """``batch_size`` rows split into ``count`` equal parts (one per device or process)."""
    if batch_size % count:
        flag = "--" + name.replace("_", "-")
        raise ValueError(f"{name} ({flag}): expected a multiple of the {count} {what}, each of which "
                         f"takes an equal slice of the global batch; got {batch_size}")
