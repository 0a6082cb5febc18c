"""docs/screenshots: every file is shown by README.md or a docs/ page, and every screenshot a page shows exists."""
from __future__ import annotations

import os

from doc_screenshots import SHOTS_DIR, shown_screenshots


def test_every_screenshot_is_shown_and_every_shown_one_exists():
    files = {f for f in os.listdir(SHOTS_DIR) if f.endswith(".png")}
    shown = shown_screenshots()
    assert not files - set(shown), f"shown by no page (delete them, or show them where they help): {sorted(files - set(shown))}"
    missing = {name: pages for name, pages in shown.items() if name not in files}
    assert not missing, f"pages show screenshots that do not exist: {missing}"
