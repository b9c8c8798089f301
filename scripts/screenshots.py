#!/usr/bin/env python3
"""Take the screenshots of the web pages that docs/web.md and the README show.

    .venv/bin/python scripts/screenshots.py [OUT_DIR]    # default: docs/screenshots

Needs Debian's Chromium (scripts/ensure-browser.sh). The pages are served from
a throw-away coordinator with demo secrets and jobs (tests/web_support.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(ROOT))
    from tests.web_support import take_screenshots

    out = Path(argv[0]) if argv else ROOT / "docs" / "screenshots"
    for path in take_screenshots(out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
