"""Headless Chromium for report tests: find it, and render a page to a screenshot."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np


def chromium() -> str | None:
    """The Chromium (or Chrome) executable on PATH, else None (`apt-get install chromium`)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def screenshot(html: Path, png: Path, width: int = 1280, height: int = 1600, timeout: float = 300) -> np.ndarray:
    """Open ``html`` in headless Chromium (no network, a throw-away profile), save the first
    ``width`` x ``height`` pixels of the page to ``png`` and return them as a grey-level array.
    The timeout is generous: Chromium starts slowly on a loaded machine, and a slow start is no
    rendering failure."""
    from PIL import Image

    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    profile = png.with_name(png.stem + ".profile")
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
           f"--user-data-dir={profile}", f"--screenshot={png}", f"--window-size={width},{height}",
           f"file://{Path(html).resolve()}"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert png.exists(), f"chromium wrote no screenshot of {html}: {proc.stderr[-800:]}"
    return np.asarray(Image.open(png).convert("L"), dtype=float)
