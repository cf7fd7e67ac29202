"""backups.postgres.pipes: the one helper every PostgreSQL tool runs through."""

from __future__ import annotations

import sys

import pytest

from backups.postgres.pipes import STDERR_TAIL, piped


def test_fed_stdin_comes_back_on_stdout_in_order():
    def feed(write):
        for i in range(200):
            write(b"%05d\n" % i)

    with piped(["cat"], feed=feed) as child:
        out = b"".join(child.chunks(4096))
        assert child.wait() == 0
    assert out == b"".join(b"%05d\n" % i for i in range(200))


def test_the_message_is_the_tail_of_stderr():
    code = "import sys; sys.stderr.write('x' * 100000 + 'THE END'); sys.exit(3)"
    with piped([sys.executable, "-c", code]) as child:
        assert list(child.chunks(4096)) == []
        assert child.wait() == 3
    assert child.message.endswith("THE END") and len(child.message) == STDERR_TAIL


def test_a_silent_failure_says_no_message():
    with piped([sys.executable, "-c", "raise SystemExit(1)"], read_stdout=False) as child:
        assert child.wait() == 1
    assert child.message == "no message"


def test_a_feeder_that_fails_raises_in_the_reader():
    def feed(write):
        write(b"some\n")
        raise ValueError("the archive is damaged")

    with piped(["cat"], feed=feed) as child:
        assert b"".join(child.chunks(4096)) == b"some\n"
        with pytest.raises(ValueError, match="damaged"):
            child.wait()


def test_leaving_early_kills_the_child():
    with piped([sys.executable, "-c", "import time\nwhile True: print('y' * 1000, flush=True)"]) as child:
        next(child.chunks(100))
    assert child.proc.poll() is not None and child.proc.returncode != 0


def test_a_child_that_stops_reading_does_not_hang_the_feeder():
    def feed(write):
        while True:
            write(b"z" * 65536)

    with piped([sys.executable, "-c", "import sys; sys.stdin.read(10)"], feed=feed, read_stdout=False) as child:
        assert child.wait() == 0
