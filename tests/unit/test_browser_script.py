"""scripts/browser.py: installs Debian's chromium and chromium-driver when missing, or says in one sentence why not."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "browser.py"
_spec = importlib.util.spec_from_file_location("browser_script", SCRIPT)
browser = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(browser)


@pytest.fixture
def nothing_installed(monkeypatch):
    installed: set[str] = set()
    monkeypatch.setattr(browser.shutil, "which",
                        lambda name: "/usr/bin/apt-get" if name == "apt-get" else
                        (f"/usr/bin/{name}" if name in installed else None))
    monkeypatch.setattr(browser, "DRIVER_FALLBACKS", ())
    return installed


def test_a_missing_browser_without_root_is_one_sentence(nothing_installed, monkeypatch):
    monkeypatch.setattr(browser.os, "geteuid", lambda: 1000)
    with pytest.raises(browser.BrowserError) as exc:
        browser.ensure_browser()
    message = str(exc.value)
    assert "apt-get install -y chromium chromium-driver" in message and "\n" not in message


def test_installs_with_the_lock_timeout_and_updates_when_apt_does_not_know_the_packages(nothing_installed,
                                                                                        monkeypatch):
    monkeypatch.setattr(browser.os, "geteuid", lambda: 0)
    calls = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        if cmd[-1] == "update":
            return subprocess.CompletedProcess(cmd, 0, "", "")
        if len([c for c in calls if c[-1] != "update"]) == 1:  # first install: apt knows no such package yet
            return subprocess.CompletedProcess(cmd, 100, "", "E: Unable to locate package chromium-driver")
        nothing_installed.update({"chromium", "chromedriver"})
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(browser.subprocess, "run", run)
    assert browser.ensure_browser() == ("/usr/bin/chromium", "/usr/bin/chromedriver")
    assert [c[-1] for c in calls] == ["chromium-driver", "update", "chromium-driver"]
    assert all("DPkg::Lock::Timeout=600" in c for c in calls)
    assert "chromium" in calls[0] and "install" in calls[0]


def test_a_failed_install_names_apt_gets_last_words(nothing_installed, monkeypatch):
    monkeypatch.setattr(browser.os, "geteuid", lambda: 0)
    monkeypatch.setattr(browser.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(
        cmd, 0 if cmd[-1] == "update" else 100, "", "Reading package lists...\nE: Unable to locate package chromium"))
    with pytest.raises(browser.BrowserError, match="could not install chromium and chromium-driver: "
                                                   "E: Unable to locate package chromium$"):
        browser.ensure_browser()
