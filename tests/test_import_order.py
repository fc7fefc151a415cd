"""Every ccwatch module imports on its own, as the first ccwatch import of a process.

A desk adapter imports ``tickets.desk``, which imports ``tickets.adapters.base``; when the
adapters package discovered its modules at import time, ``import ccwatch.tickets.desk``
as the first import failed with a circular import (found by the start-up memory work).
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import ccwatch


def test_each_module_imports_first_in_a_fresh_interpreter() -> None:
    # The packages whose modules import each other (the rest are single modules that the
    # daemon's own start imports in one order); a fresh interpreter per module.
    packages = ("tickets", "incidents", "inbound", "heartbeat", "fleet", "state", "api")
    names = sorted(
        m.name
        for m in pkgutil.walk_packages(ccwatch.__path__, "ccwatch.")
        if m.name.split(".")[1] in packages
    )
    assert "ccwatch.tickets.desk" in names
    script = (
        "import importlib, subprocess, sys\n"
        "failed = []\n"
        f"for name in {names!r}:\n"
        "    done = subprocess.run([sys.executable, '-c', f'import {name}'], capture_output=True, text=True)\n"
        "    if done.returncode:\n"
        "        failed.append((name, done.stderr.strip().splitlines()[-1:]))\n"
        "print(failed)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout
