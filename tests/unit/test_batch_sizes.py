"""How a pass's records are cut into batch messages: every dump slot gets the same share."""

from __future__ import annotations

import pytest

from backups.backup.batch.run import batch_sizes


@pytest.mark.parametrize(("slots", "size", "count", "expected"), [
    (2, 1600, 10_000, 1250),  # 8 batches, 4 a slot; not 6 of 1,600 and one of 400 that leaves a slot idle
    (2, 1600, 3200, 1600),
    (2, 1600, 3201, 801),  # 4 batches, not 3
    (2, 1600, 1000, 500),
    (4, 500, 1000, 250),
    (4, 500, 12, 10),  # never below BACKUPS_BATCH_MIN_SIZE
    (4, 500, 3, 10),
    (1, 500, 1200, 400),
])
def test_every_dump_slot_gets_the_same_number_of_batches(settings, slots, size, count, expected):
    settings.BACKUPS_MAX_CONCURRENT_DUMPS = slots
    settings.BACKUPS_BATCH_SIZE = size
    settings.BACKUPS_BATCH_MIN_SIZE = 10
    assert batch_sizes(count) == expected
