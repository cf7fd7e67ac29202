"""The project's age streams (AgeEncryptor, AgeDecryptingReader) vs. rage's own whole-stream calls.

backups/core/encryption.py writes the age format itself on `cryptography`'s primitives (X25519, HKDF-SHA256,
ChaCha20-Poly1305), pushed piece by piece by the sink and pulled by a restore; rage (pyrage) offers only
whole-stream calls that would need a thread and pipes around them. This measures ours against rage's,
in one run, on the same file (BENCH_AGE_MIB, default 256 MiB of random bytes, in var/bench-age/):

(a) tool     - pyrage.encrypt_io / pyrage.decrypt_io from one file to another (rage copies until EOF),
               and the `age` command-line tool (the Go implementation) too when it is installed;
(b) project  - AgeEncryptor.update() with 1 MiB pieces, as the backup sink calls it, writing each output
               to a file; AgeDecryptingReader.read(1 MiB) from the encrypted file, writing to a file.

Every variant runs in a fresh Python process (its wall time for the stream alone, its peak RSS, VmHWM),
BENCH_REPEATS (3) times in an order rotated every repetition; each decryptor reads another implementation's
ciphertext and its output is checked against the input. Prints medians (MB/s, wall and CPU seconds), the
ratios (b)/(a) and the peak memory of both. The target is on CPU seconds (all threads), which other
people's jobs on a shared machine disturb far less than wall time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
SIZE = int(os.environ.get("BENCH_AGE_MIB", "256")) << 20
PIECE = 1 << 20
OUT_ROOT = ROOT / "var" / "bench-age"
OUT_DIR = OUT_ROOT / f"run-{os.getpid()}"
MAX_RATIO = 1.5  # target: the project's streams take at most 1.5x the CPU of rage's own copy loop
MAX_RSS_MB = 64
MB = 1_000_000


def _peak_rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def child(variant: str, source: str, target: str, key: str) -> None:
    """Run one variant in this (fresh) process; print {"seconds", "cpu", "rss_kib"} as JSON."""
    sys.path.insert(0, str(ROOT))
    import pyrage

    from backups.core.encryption import AgeDecryptingReader, AgeEncryptor

    secret = Path(key).read_text().strip()
    public = str(pyrage.x25519.Identity.from_str(secret).to_public())
    cpu_started, started = time.process_time(), time.perf_counter()
    with open(source, "rb") as src, open(target, "wb") as dst:
        if variant == "encrypt-project":
            enc = AgeEncryptor([public])
            while data := src.read(PIECE):
                dst.write(enc.update(data))
            dst.write(enc.finish())
        elif variant == "encrypt-pyrage":
            pyrage.encrypt_io(src, dst, [pyrage.x25519.Recipient.from_str(public)])
        elif variant == "decrypt-project":
            reader = AgeDecryptingReader(src, [secret])
            while data := reader.read(PIECE):
                dst.write(data)
        elif variant == "decrypt-pyrage":
            pyrage.decrypt_io(src, dst, [pyrage.x25519.Identity.from_str(secret)])
        else:
            raise SystemExit(f"unknown variant {variant}")
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(json.dumps({"seconds": seconds, "cpu": cpu, "rss_kib": _peak_rss_kib()}))


@dataclass
class Run:
    seconds: float
    cpu: float  # seconds of CPU, all threads
    rss_kib: int  # the process's peak RSS


def _run_child(variant: str, source: Path, target: Path, key: Path) -> Run:
    proc = subprocess.run([PYTHON, str(Path(__file__).resolve()), "--child", variant, str(source), str(target),
                           str(key)], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"bench_age {variant} failed: {proc.stderr.strip()[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return Run(result["seconds"], result["cpu"], result["rss_kib"])


def _run_cli(args: list[str]) -> Run:
    """The `age` CLI's wall time, CPU time and peak RSS, from wait4()."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(args)} exited with status {proc.returncode}")
    return Run(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss)


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(PIECE):
            digest.update(data)
    return digest.hexdigest()


def _line(label: str, run: Run) -> str:
    return (f"  {label:<34} {SIZE / run.seconds / MB:6.0f} MB/s  {run.seconds:6.2f} s  CPU {run.cpu:6.2f} s  "
            f"peak RSS {run.rss_kib / 1024:6.1f} MiB")


def main() -> None:
    sys.path.insert(0, str(ROOT))
    import pyrage

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    try:
        identity = pyrage.x25519.Identity.generate()
        key = OUT_DIR / "key.txt"
        key.write_text(f"{identity}\n")
        plain = OUT_DIR / "plain.bin"
        block = os.urandom(PIECE)
        with open(plain, "wb") as f:
            for _ in range(SIZE // PIECE):
                f.write(block)
        expected = _digest(plain)
        cli = shutil.which("age")
        public = str(identity.to_public())
        ct = {name: OUT_DIR / f"{name}.age" for name in ("project", "pyrage", "cli")}
        out = {"decrypt-project": OUT_DIR / "d1.bin", "decrypt-pyrage": OUT_DIR / "d2.bin",
               "decrypt-age-cli": OUT_DIR / "d3.bin"}
        # each decryptor reads another's ciphertext, so every pair is also checked across implementations
        variants: list[tuple[str, Callable[[], Run]]] = [
            ("encrypt-project", lambda: _run_child("encrypt-project", plain, ct["project"], key)),
            ("encrypt-pyrage", lambda: _run_child("encrypt-pyrage", plain, ct["pyrage"], key)),
            ("decrypt-project", lambda: _run_child("decrypt-project", ct["pyrage"], out["decrypt-project"], key)),
            ("decrypt-pyrage", lambda: _run_child("decrypt-pyrage", ct["project"], out["decrypt-pyrage"], key)),
        ]
        if cli:
            variants += [
                ("encrypt-age-cli", lambda: _run_cli([cli, "-r", public, "-o", str(ct["cli"]), str(plain)])),
                ("decrypt-age-cli", lambda: _run_cli([cli, "-d", "-i", str(key), "-o", str(out["decrypt-age-cli"]),
                                                      str(ct["project"])])),
                ("decrypt-project-of-cli", lambda: _run_child("decrypt-project", ct["cli"], out["decrypt-project"],
                                                              key)),
            ]
        for name, call in variants:  # warm-up, and every ciphertext exists before any decryption
            if name.startswith("encrypt"):
                call()
        runs: dict[str, list[Run]] = {}
        for rep in range(REPEATS):
            shift = rep % len(variants)
            for name, call in variants[shift:] + variants[:shift]:
                runs.setdefault(name, []).append(call())
                if name.startswith("decrypt"):
                    target = out[name if name in out else "decrypt-project"]
                    if _digest(target) != expected:
                        raise RuntimeError(f"{name} did not give back the plaintext")
                    target.unlink()

        def median(name: str) -> Run:
            group = runs[name]
            return Run(statistics.median(r.seconds for r in group), statistics.median(r.cpu for r in group),
                       max(r.rss_kib for r in group))

        print(f"\n{SIZE >> 20} MiB of random bytes, {PIECE >> 20} MiB pieces; median of {REPEATS} runs, a fresh "
              "process each (peak RSS: the whole process, interpreter included)")
        ok = True
        for op in ("encrypt", "decrypt"):
            tool, ours = median(f"{op}-pyrage"), median(f"{op}-project")
            print(_line(f"(a) pyrage.{op}_io", tool))
            if cli:
                print(_line("(a) age CLI (Go)", median(f"{op}-age-cli")))
            print(_line(f"(b) project {'AgeEncryptor' if op == 'encrypt' else 'AgeDecryptingReader'}", ours))
            cpu_ratio = ours.cpu / tool.cpu
            passed = cpu_ratio <= MAX_RATIO and ours.rss_kib / 1024 <= MAX_RSS_MB
            ok = ok and passed
            cli_ratio = f", time (b)/(age CLI) {ours.seconds / median(f'{op}-age-cli').seconds:.2f}" if cli else ""
            print(f"  {op}: time (b)/(a) {ours.seconds / tool.seconds:.2f}, CPU (b)/(a) {cpu_ratio:.2f}{cli_ratio}  "
                  f"{'PASS' if passed else 'FAIL'} (target: CPU <= {MAX_RATIO}x, peak RSS <= {MAX_RSS_MB} MiB)")
        if not cli:
            print("  (the age CLI is not installed: compared with pyrage's whole-stream calls only)")
        print("all targets met" if ok else "some targets missed")
    finally:
        shutil.rmtree(OUT_DIR, ignore_errors=True)
        try:
            OUT_ROOT.rmdir()  # only when no other run's folder is left in it
        except OSError:
            pass


def run() -> None:
    """In child processes, so each variant's peak memory is its own."""
    main()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(*sys.argv[2:6])
    else:
        main()
