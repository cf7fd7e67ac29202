"""Tuning runs for the backup pipeline: each variant of bench/variants.py against `pg_dump | zstd -3 -T1`.

    python bench/tune_pipeline.py [--tenant bench_large] [--repeats 3] [variant ...]

Not part of `make bench` (it takes several minutes); run it with var/services.env loaded, after
`make bench` has built the bench tenants. Like the bench, it waits for a quiet machine before each run
and makes a run again when other processes took CPU during it (see bench_pipeline.measured_run).
Every repetition runs the tool and each variant once, in an order rotated by one each repetition; the
table shows medians over the undisturbed runs and the median of the per-repetition ratios variant/tool
over the repetitions where both were undisturbed ("paired": runs made close together).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import bench_pipeline as bp  # noqa: E402
from bench.variants import VARIANTS  # noqa: E402


def tune(schema: str, names: list[str], repeats: int) -> None:
    """Measure the tool and each named variant `repeats` times on `schema` and print the table."""
    kinds = ["tool", *names]
    runs: dict[str, list[bp.Run]] = {kind: [] for kind in kinds}
    ratios: dict[str, list[float]] = {name: [] for name in names}
    for index in range(repeats):
        order = kinds[index % len(kinds):] + kinds[:index % len(kinds)]
        by_kind: dict[str, bp.Run] = {}
        for kind in order:
            label = f"{index + 1}/{repeats} {kind}"
            if kind == "tool":
                run = bp.measured_run(label, bp.run_tool, schema, index)
            else:
                run = bp.measured_run(label, bp.run_pipeline, schema, {"variant": kind})
            by_kind[kind] = run
            runs[kind].append(run)
        for name in names:
            if not (bp.disturbed(by_kind[name]) or bp.disturbed(by_kind["tool"])):
                ratios[name].append(by_kind[name].seconds / by_kind["tool"].seconds)
    tool = bp.timing_median(runs["tool"])[0]
    print(f"\n{schema}: tool `pg_dump | zstd -3 -T1` median {tool:.2f} s "
          f"({', '.join(f'{r.seconds:.2f}' for r in runs['tool'])})")
    print(f"  {'variant':<14}{'median s':>10}{'/tool':>8}{'paired':>8}{'py CPU s':>10}{'py RSS':>10}"
          f"{'out MB':>9}{'chunk KiB':>10}  runs (* disturbed); description")
    for name in names:
        rs = runs[name]
        med = bp.timing_median(rs)[0]
        paired = f"{statistics.median(ratios[name]):.3f}" if ratios[name] else "-"
        print(f"  {name:<14}{med:>10.2f}{med / tool:>8.3f}{paired:>8}"
              f"{statistics.median(r.cpu_seconds for r in rs):>10.2f}"
              f"{statistics.median(r.python_rss_kib for r in rs) / 1024:>9.1f}M"
              f"{statistics.median(r.size for r in rs) / bp.MB:>9.2f}"
              f"{statistics.median(r.mean_chunk_kib for r in rs):>10.0f}  "
              f"{', '.join(f'{r.seconds:.2f}' + ('*' if r.others_cores > bp.DISTURBED_CORES else '') for r in rs)}; "
              f"{VARIANTS[name].description}")


def main(argv: list[str]) -> int:
    """Parse the arguments, reuse (or build) the bench tenants, run the variants, clean up."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*", default=list(VARIANTS), help="variants (default: all)")
    parser.add_argument("--tenant", default="bench_large")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    started = time.perf_counter()
    bp.prepare_database()
    spec = next(t for t in bp.TENANTS if t.schema == args.tenant)
    try:
        with bp.exclusive():
            bp.ensure_tenant(spec)
            bp.dump_size(spec.schema)  # warm-up
            tune(spec.schema, args.variants, args.repeats)
    finally:
        bp.cleanup()
    print(f"\ntuning took {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
