"""Sizes and durations as the admin shows them."""

import pytest

from backups.admin.formatting import human_bytes, human_duration


@pytest.mark.parametrize(("n", "text"), [
    (None, "-"), (0, "0 B"), (999, "999 B"), (1000, "1.00 kB"), (1529651, "1.53 MB"), (25_400_000, "25.4 MB"),
    (693_000_000, "693 MB"), (1_234_567_890, "1.23 GB"), (999_600, "1 MB"), (5 * 10**15, "5.00 PB"),
])
def test_human_bytes(n, text):
    assert human_bytes(n) == text


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "-"), (0.55, "0.55 s"), (12.4, "12 s"), (60, "1 min"), (75, "1 min 15 s"), (3600, "1 h"),
    (7260, "2 h 1 min"), (-1, "0.00 s"),
])
def test_human_duration(seconds, text):
    assert human_duration(seconds) == text
