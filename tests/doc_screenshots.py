"""The screenshots the docs show: docs/screenshots holds those and no others (tests/test_browser.py keeps only
these when SVD_INBETWEEN_SCREENSHOT_DIR is set; tests/test_docs_screenshots.py checks the folder)."""
from __future__ import annotations

import glob
import os
import re

from host import REPO

SHOTS_DIR = os.path.join(REPO, "docs", "screenshots")
DOC_PAGES = [os.path.join(REPO, "README.md"), *sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))]


def shown_screenshots() -> dict[str, list[str]]:
    """{file name in docs/screenshots: the pages that show it}."""
    shown: dict[str, list[str]] = {}
    for page in DOC_PAGES:
        with open(page) as f:
            for name in re.findall(r"screenshots/([^)\s\"']+\.png)", f.read()):
                shown.setdefault(name, []).append(os.path.relpath(page, REPO))
    return shown
