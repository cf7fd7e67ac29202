"""Numbers as operators read them: sizes in kB/MB/GB (humanize), durations in s/min/h (the admin and its dashboard;
humanize has no compact form of durations)."""

from __future__ import annotations

import humanize


def human_bytes(n: int | float | None) -> str:
    """1529651 -> '1.53 MB' (humanize's decimal units, three significant digits, as the CLI prints them); None -> '-'.

    humanize names units up to yottabytes and says "Bytes"; the admin keeps "B" below a kilobyte."""
    if n is None:
        return "-"
    n = float(n)
    if abs(n) < 1000:
        return f"{n:.0f} B"
    scaled = abs(n)
    while scaled >= 1000:  # the unit humanize picks
        scaled /= 1000
    digits = 2 if scaled < 9.995 else 1 if scaled < 99.95 else 0
    return humanize.naturalsize(n, format=f"%.{digits}f")


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
