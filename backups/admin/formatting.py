"""Numbers as operators read them: sizes in kB/MB/GB, durations in s/min/h (the admin and its dashboard)."""

from __future__ import annotations


def human_bytes(n: int | float | None) -> str:
    """1529651 -> '1.53 MB' (decimal units, three significant digits, as the CLI prints them); None -> '-'."""
    if n is None:
        return "-"
    n = float(n)
    if abs(n) < 1000:
        return f"{n:.0f} B"
    for unit in ("kB", "MB", "GB", "TB"):
        n /= 1000
        if abs(n) < 1000 or unit == "TB":
            break
    digits = 2 if abs(n) < 10 else 1 if abs(n) < 100 else 0
    return f"{n:.{digits}f} {unit}"


def human_duration(seconds: float | None) -> str:
    """0.55 -> '0.55 s', 75 -> '1 min 15 s', 7260 -> '2 h 1 min'; None -> '-'."""
    if seconds is None:
        return "-"
    seconds = max(0.0, float(seconds))
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min {secs} s" if secs else f"{minutes} min"
