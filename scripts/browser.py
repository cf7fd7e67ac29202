"""Make sure headless Chromium and its WebDriver are installed (Debian's `chromium` and `chromium-driver`).

    python scripts/browser.py          # install them if missing, then print the two paths

The browser tests call `ensure_browser()` before they start; it installs the packages with apt-get when
they are missing (as root), waits for another apt-get that holds the lock, and otherwise stops with one
sentence saying what to install. Nothing here downloads a browser build of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGES = ("chromium", "chromium-driver")
APT_GET = ("apt-get", "-o", "DPkg::Lock::Timeout=600", "-o", "Acquire::Retries=3")
BROWSER_NAMES = ("chromium", "chromium-browser")
DRIVER_NAMES = ("chromedriver",)
DRIVER_FALLBACKS = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


class BrowserError(Exception):
    """The browser could not be had: one sentence saying what to do."""


def find_browser() -> tuple[str, str] | None:
    """Paths of chromium and chromedriver, or None if either is missing."""
    browser = next((p for p in map(shutil.which, BROWSER_NAMES) if p), None)
    driver = next((p for p in map(shutil.which, DRIVER_NAMES) if p), None)
    driver = driver or next((p for p in DRIVER_FALLBACKS if Path(p).is_file() and os.access(p, os.X_OK)), None)
    return (browser, driver) if browser and driver else None


def _apt(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run([*APT_GET, *args], env=env, capture_output=True, text=True)


def install_browser() -> None:
    """apt-get install the packages; `apt-get update` first if apt does not know them yet."""
    if shutil.which("apt-get") is None:
        raise BrowserError(f"Chromium and ChromeDriver are missing and there is no apt-get here: install "
                           f"{' and '.join(PACKAGES)} (or put chromium and chromedriver on PATH).")
    if os.geteuid() != 0:
        raise BrowserError(f"Chromium and ChromeDriver are missing: run `sudo apt-get install -y "
                           f"{' '.join(PACKAGES)}` (this script installs them itself only as root).")
    print(f"Installing {' '.join(PACKAGES)} with apt-get ...", file=sys.stderr, flush=True)
    result = _apt("install", "-y", "--no-install-recommends", *PACKAGES)
    if result.returncode != 0:
        update = _apt("update")
        if update.returncode != 0:
            raise BrowserError(f"apt-get update failed ({_last_line(update)}), so {' and '.join(PACKAGES)} "
                               "could not be installed.")
        result = _apt("install", "-y", "--no-install-recommends", *PACKAGES)
    if result.returncode != 0:
        raise BrowserError(f"apt-get could not install {' and '.join(PACKAGES)}: {_last_line(result)}")


def _last_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in (result.stderr or result.stdout or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"exit status {result.returncode}"


def ensure_browser() -> tuple[str, str]:
    """(chromium, chromedriver) paths, installing the Debian packages first when they are missing."""
    found = find_browser()
    if found is None:
        install_browser()
        found = find_browser()
    if found is None:
        raise BrowserError(f"{' and '.join(PACKAGES)} were installed but chromium or chromedriver is still "
                           "not on PATH.")
    return found


def main() -> int:
    try:
        browser, driver = ensure_browser()
    except BrowserError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"chromium={browser}\nchromedriver={driver}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
