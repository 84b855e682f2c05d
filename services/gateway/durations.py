"""Durations as people read them: "93 d 8 h", "2 min ago"."""

from __future__ import annotations

UNITS = (("d", 86_400), ("h", 3_600), ("min", 60), ("s", 1))


def human_duration(seconds: int, parts: int = 2) -> str:
    """``seconds`` in its ``parts`` largest non-zero units, largest first ("93 d 8 h", "5 min 3 s"):
    smaller units are dropped, not rounded, so a duration never reads longer than it was."""
    seconds = max(0, int(seconds))
    amounts = []
    for name, size in UNITS:
        amount, seconds = divmod(seconds, size)
        amounts.append((amount, name))
    first = next((i for i, (amount, _) in enumerate(amounts) if amount), len(UNITS) - 1)
    # The units right below the largest one, zeros left out: "3 d 5 min" would overstate precision.
    shown = [f"{amount} {name}" for amount, name in amounts[first : first + parts] if amount]
    return " ".join(shown) or "0 s"


def ago(seconds: int | None) -> str:
    """How long ago something happened ("2 min ago", "just now"); "never" for ``None``."""
    if seconds is None:
        return "never"
    if seconds < 1:
        return "just now"
    return human_duration(seconds, parts=1) + " ago"
