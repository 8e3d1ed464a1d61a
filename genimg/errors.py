"""Errors a user can act on. The CLI prints them as one line and exits 2."""

from __future__ import annotations

# Text past an encoder's window is cut with a warning; text this long is a pasted file, not a
# prompt, and would only cost time and disk (it is kept in every image's record).
MAX_PROMPT_CHARS = 200_000


def first_line(err: BaseException) -> str:
    """An exception's message as one line for the user (its type where it has none)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class UsageError(Exception):
    """Bad input: names the argument, the value and what would be accepted."""

    def __init__(self, arg: str, message: str):
        self.arg = arg
        super().__init__(f"{arg}: {message}" if arg else message)


def check_int(arg: str, value: object, lo: int, hi: int) -> int:
    """Return value as an int in [lo, hi] or raise UsageError naming arg."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UsageError(arg, f"expected an integer in [{lo}, {hi}], got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise UsageError(arg, f"expected an integer in [{lo}, {hi}], got {value!r}") from None
    if number != number or not number.is_integer() or not lo <= number <= hi:
        raise UsageError(arg, f"expected an integer in [{lo}, {hi}], got {value!r}")
    return int(number)


def check_float(arg: str, value: object, lo: float, hi: float) -> float:
    """Return value as a finite float in [lo, hi] or raise UsageError naming arg."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UsageError(arg, f"expected a number in [{lo}, {hi}], got {value!r}") from None
    if number != number or not lo <= number <= hi:
        raise UsageError(arg, f"expected a number in [{lo}, {hi}], got {value!r}")
    return number


def check_size(arg: str, value: object, lo: int = 64, hi: int = 1024) -> int:
    """Image side: a multiple of 8 in [lo, hi]."""
    size = check_int(arg, value, lo, hi)
    if size % 8:
        raise UsageError(arg, f"must be a multiple of 8 in [{lo}, {hi}], got {size}")
    return size
