"""One patient back (restore_objects) vs a verified side restore of the same backup, in one run.

restore_objects loads the backup into a temporary side schema, walks the patient's relations there and inserts
what the live tenant lacks: it should cost no more than restoring aside and copying rows. On the bench database
of bench_pipeline (its bench_small tenant, ~50 MB; BENCH_RESTORE_LARGE=1 adds bench_large, the 500 MB-class
tenant the target is for), from one `sql` backup of the tenant:

(a) tool     - `restore_tenant --into`'s work: `restore_side_copy` (spool + SHA-256 + the load beside the tenant
               + row-count check + commit), in a fresh Python process; the side copy is dropped after the timing;
(b) project  - `restore_objects` of one patient deleted from the live tenant (with its appointments, treatments
               and invoices), in a fresh Python process: the same load into a temporary side schema, the walk,
               the inserts, the foreign-key checks, the side schema dropped, commit;
(c) dry run  - the same with --dry-run (everything, then rolled back).

Prints the median of BENCH_REPEATS (3) runs of each, the ratios (b)/(a) and (c)/(a), and each process's peak RSS
("memory flat": the same whatever the tenant's size).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import bench_pipeline as pipeline  # noqa: E402 - after the path is set

PYTHON = sys.executable
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
MAX_RATIO = 1.2  # target: one patient back within 1.2x of a verified side restore of the same backup
MAX_RSS_MB = 150

CHILD = r"""
import json, sys, time
import django
django.setup()
from backups.models import BackupRecord, SideCopy
record = BackupRecord.objects.get(pk=int(sys.argv[1]))
mode, arg = sys.argv[2], sys.argv[3]
started = time.perf_counter()
if mode == "side":
    from backups.restore.side import restore_side_copy, side_copy_drop
    report = restore_side_copy(schema=record.schema_name, record=record, into=arg)
    seconds = time.perf_counter() - started
    side_copy_drop(side=SideCopy.objects.get(pk=report.side_copy_id))
    SideCopy.objects.filter(pk=report.side_copy_id).delete()
    done = {"rows": sum(found or 0 for _, found in report.row_counts.values())}
else:
    from backups.restore.objects import restore_objects
    report = restore_objects(schema=record.schema_name, record=record, model="clinic.Patient", pks=[int(arg)],
                             dry_run=(mode == "dry"))
    seconds = time.perf_counter() - started
    done = {"inserted": {label: len(pks) for label, pks in report.inserted.items()}}
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "rss_kib": hwm, **done}))
"""


def child(record_id: int, mode: str, arg: str) -> dict:
    """One timed run in a fresh process (Django's start-up excluded): its seconds, peak RSS and what it did, and
    how busy the machine was just before (the run waits for a quiet moment first, as bench_pipeline's do)."""
    busy = pipeline.wait_for_quiet()
    proc = subprocess.run([PYTHON, "-c", CHILD, str(record_id), mode, arg], env=pipeline.child_env(), cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} run failed: {proc.stderr.strip()[-2000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "busy": busy}


def _patient(schema: str) -> tuple[int, dict[str, int]]:
    """A patient with appointments, treatments and an invoice, and its rows per model."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(f"SELECT p.id FROM {schema}.clinic_patient p WHERE EXISTS (SELECT 1 FROM {schema}.clinic_invoice "
                    f"i WHERE i.patient_id = p.id) AND EXISTS (SELECT 1 FROM {schema}.clinic_treatment t WHERE "
                    f"t.patient_id = p.id) ORDER BY p.id LIMIT 1 OFFSET 1000")
        pk = cur.fetchone()[0]
        rows = {"clinic.Patient": 1}
        for label, table in (("clinic.Appointment", "clinic_appointment"), ("clinic.Treatment", "clinic_treatment"),
                             ("clinic.Invoice", "clinic_invoice")):
            cur.execute(f"SELECT count(*) FROM {schema}.{table} WHERE patient_id = %s", [pk])
            rows[label] = cur.fetchone()[0]
    return pk, rows


def _delete_patient(schema: str, pk: int) -> None:
    from django.db import connection

    with connection.cursor() as cur:
        for table in ("clinic_invoice", "clinic_treatment", "clinic_appointment"):
            cur.execute(f"DELETE FROM {schema}.{table} WHERE patient_id = %s", [pk])
        cur.execute(f"DELETE FROM {schema}.clinic_patient WHERE id = %s", [pk])


def main() -> None:
    pipeline.prepare_database()
    from backups.backup.run import backup_run
    from backups.catalog.records import backup_record_create
    from backups.models import BackupEvent, BackupRecord

    specs = pipeline.TENANTS if os.environ.get("BENCH_RESTORE_LARGE") else pipeline.TENANTS[:1]
    with pipeline.exclusive():
        for spec in specs:
            data = pipeline.ensure_tenant(spec)
            record = backup_run(record_id=backup_record_create(schema_name=spec.schema, fmt="sql").pk)
            if record.status != BackupRecord.Status.SUCCEEDED:
                raise RuntimeError(f"backup of {spec.schema} failed: {record.error}")
            pk, rows = _patient(spec.schema)
            runs: dict[str, list[dict]] = {"side": [], "objects": [], "dry": []}
            try:
                for index in range(REPEATS):
                    order = ("side", "objects", "dry") if index % 2 == 0 else ("dry", "objects", "side")
                    for mode in order:
                        if mode == "side":
                            runs[mode].append(child(record.pk, mode, f"bench_side_{os.getpid()}_{index}"))
                            continue
                        _delete_patient(spec.schema, pk)
                        result = child(record.pk, mode, str(pk))
                        if result["inserted"] != rows:
                            raise RuntimeError(f"restore_objects ({mode}) put back {result['inserted']}, not {rows}")
                        if mode == "dry":
                            child(record.pk, "objects", str(pk))  # put it back, untimed
                        runs[mode].append(result)
            finally:
                pipeline.remove_stored(record.storage_key)
                BackupEvent.objects.filter(record=record).delete()
                record.delete()
            side, objects, dry = (statistics.median(r["seconds"] for r in runs[m]) for m in ("side", "objects", "dry"))
            rss = {m: max(r["rss_kib"] for r in runs[m]) / 1024 for m in runs}
            final = spec is pipeline.TENANTS[-1]
            shown = ", ".join(f"{n} {label}" for label, n in rows.items())
            print(f"\n{spec.schema}: {data.relation_bytes / 1e6:.0f} MB in relations, object "
                  f"{record.size / 1e6:.1f} MB, one patient = {sum(rows.values())} rows ({shown})")
            print(f"  (a) verified side restore      {side:7.2f} s   Python peak RSS {rss['side']:6.1f} MiB")
            print(f"  (b) restore_objects            {objects:7.2f} s   Python peak RSS {rss['objects']:6.1f} MiB")
            print(f"  (c) restore_objects --dry-run  {dry:7.2f} s   Python peak RSS {rss['dry']:6.1f} MiB")
            for mode in ("side", "objects", "dry"):
                print(f"      {mode:8} runs: " + ", ".join(f"{r['seconds']:.2f} s (others busy {r['busy']:.0%})"
                                                       for r in runs[mode]))
            for label, value in (("(b)/(a)", objects / side), ("(c)/(a)", dry / side)):
                verdict = ("PASS" if value <= MAX_RATIO else "FAIL") if final else "info"
                print(f"  ratio {label} {value:.2f}  {verdict} (target <= {MAX_RATIO} on "
                      f"{pipeline.TENANTS[-1].schema})")
            worst = max(rss.values())
            print(f"  Python RSS {'PASS' if worst <= MAX_RSS_MB else 'FAIL'} (target <= {MAX_RSS_MB} MiB in every "
                  "run)", flush=True)


def run() -> None:
    """In a child process, so its Django set-up stays out of the runner's interpreter."""
    proc = subprocess.run([PYTHON, str(Path(__file__).resolve())], cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"bench_restore_objects exited with status {proc.returncode}")


if __name__ == "__main__":
    main()
