"""What /proc says about local processes: state and parent, descendants, open files (the chaos tests kill one
process of a tree and look at what it held)."""

from __future__ import annotations

import os
from collections.abc import Iterator


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgid) of a process, None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1]), int(fields[2])


def alive(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def children(parent: int) -> list[int]:
    return [pid for pid in _pids() if (stat := proc_stat(pid)) is not None and stat[1] == parent]


def descendants(root: int) -> set[int]:
    parents = {pid: stat[1] for pid in _pids() if (stat := proc_stat(pid)) is not None}
    found, todo = set(), [root]
    while todo:
        parent = todo.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found.add(pid)
                todo.append(pid)
    return found


def open_files() -> Iterator[tuple[int, str]]:
    """(pid, what one of its descriptors points at: a path, `socket:[inode]`...) for every readable process."""
    for pid in _pids():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                yield pid, os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
