"""Run the benchmarks in bench/: `python bench/run.py [name ...]`.

Each benchmark is a module `bench/bench_<name>.py` with a `run() -> None` that prints its own report.
Without names every benchmark runs, in alphabetical order. Exit status: 0 when every benchmark ran
(a missed performance target is printed, not an error), 1 when one raised, 2 for an unknown name.
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent


def available() -> list[str]:
    """Names of the benchmarks found in bench/ (`bench_<name>.py` -> `<name>`)."""
    return sorted(path.stem.removeprefix("bench_") for path in BENCH_DIR.glob("bench_*.py"))


def run_one(name: str) -> bool:
    """Import `bench_<name>` and call its run(); False (with the traceback printed) when it raised."""
    print(f"=== bench {name} ===", flush=True)
    started = time.perf_counter()
    try:
        module = importlib.import_module(f"bench.bench_{name}")
        module.run()
    except Exception:  # noqa: BLE001 - report and go on with the other benchmarks
        traceback.print_exc()
        print(f"=== bench {name}: ERROR after {time.perf_counter() - started:.1f} s ===", flush=True)
        return False
    print(f"=== bench {name}: done in {time.perf_counter() - started:.1f} s ===", flush=True)
    return True


def main(argv: list[str]) -> int:
    """Run the named benchmarks (all when none is named)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    names = argv or available()
    unknown = [name for name in names if name not in available()]
    if unknown:
        print(f"Unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(available())}", file=sys.stderr)
        return 2
    results = [run_one(name) for name in names]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
