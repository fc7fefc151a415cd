"""Write the package's /etc/ccwatch/config.yaml from the repository's config.yaml.

The production config is the repository's sample with one change: the state store lives
in the unit's StateDirectory (/var/lib/ccwatch). Checklists stay `./checklists`, which is
relative to the config file's folder, i.e. /etc/ccwatch/checklists. Any other difference
is refused, so the two files cannot drift: the build fails instead.

Usage: python3 packaging/production_config.py config.yaml OUTPUT
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

STATE_PATH = "/var/lib/ccwatch/state.db"
HEADER = (
    "# Installed by the ccwatch Debian package: the repository's config.yaml with the state\n"
    "# store under /var/lib/ccwatch. dpkg keeps your edits on upgrade (a conffile).\n"
    "# Secrets go in /etc/ccwatch/secrets.env (KEY=value); apply edits: systemctl reload ccwatch\n"
)
STATE_LINE = re.compile(r"^(?P<indent>  )path: \./var/state\.db\b.*$", re.MULTILINE)


def production_text(sample: str) -> str:
    text, count = STATE_LINE.subn(
        lambda m: f"{m['indent'] + 'path: ' + STATE_PATH:<36}# the unit's StateDirectory",
        sample,
    )
    if count != 1:
        raise SystemExit(f"config.yaml: expected one `  path: ./var/state.db` line, got {count}")
    return HEADER + text


def check_only_state_differs(sample: str, production: str) -> None:
    expected: dict[str, Any] = yaml.safe_load(sample)
    expected["state"]["path"] = STATE_PATH
    if yaml.safe_load(production) != expected:
        raise SystemExit("the production config differs from config.yaml beyond state.path")


def main() -> None:
    source, output = (Path(arg) for arg in sys.argv[1:3])
    sample = source.read_text(encoding="utf-8")
    production = production_text(sample)
    check_only_state_differs(sample, production)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(production, encoding="utf-8")


if __name__ == "__main__":
    main()
