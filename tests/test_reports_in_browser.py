"""Every kind of HTML report, opened in a real headless browser (Chromium); skipped where none is
installed (`apt-get install chromium`).

Each report is made by the test that checks its content, called here with a folder of its own, and
then rendered: the page must draw (not blank), at the width it was laid out for, and every figure
embedded in it must decode. ``MRIDOMAIN_SCREENSHOTS=docs/figures`` keeps the screenshots there.
"""
from __future__ import annotations

import base64
import io
import os
import re
from pathlib import Path

import pytest

from browser import chromium, screenshot
from shift_fixtures import one_torch_thread  # noqa: F401  (fixture)
from test_iap_train import trained  # noqa: F401  (fixture)
from test_shift_study import manifest  # noqa: F401  (fixture)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(chromium() is None, reason="chromium not on PATH: reports not opened in a "
                                 "browser (apt-get install chromium to run these)")]


def _check(html: Path, name: str, tmp_path: Path) -> None:
    from PIL import Image

    folder = Path(os.environ.get("MRIDOMAIN_SCREENSHOTS") or tmp_path)
    img = screenshot(html, folder / f"report_{name}.png")
    assert img.shape == (1600, 1280)
    assert img.std() > 5, f"{name}: the page rendered blank"
    # the page's own width: nothing wider than the window (a wide table would push a scroll bar)
    assert img[:, -8:].std() < 2.0, f"{name}: content reaches the right edge"
    images = re.findall(r'src="data:image/png;base64,([^"]*)"', html.read_text())
    assert images, f"{name}: no figures"
    for data in images:
        Image.open(io.BytesIO(base64.b64decode(data))).verify()


def test_analysis_report(tmp_path):
    from test_analysis_stats import test_analyze_writes_tables_figures_and_self_contained_html as make

    make(tmp_path)
    _check(tmp_path / "out" / "report.html", "analysis", tmp_path)


def test_evaluation_report(trained, tmp_path):  # noqa: F811
    from mridomain.iap import evaluate

    _, run, _ = trained
    evaluate(run, split="test", out=tmp_path / "eval", progress=False)
    _check(tmp_path / "eval" / "report.html", "evaluation", tmp_path)


def test_routing_report(tmp_path):
    from test_analysis_routing import test_routing_experiment_end_to_end_on_tiny_cache as make

    make(tmp_path)
    _check(tmp_path / "out" / "report.html", "routing", tmp_path)


def test_applicability_report(tmp_path):
    from test_analysis_applicability import test_compare_flags_noise_and_inverted_images as make

    make(tmp_path)
    _check(tmp_path / "out" / "report.html", "compare", tmp_path)


@pytest.mark.usefixtures("one_torch_thread")
def test_shift_report(manifest, tmp_path):  # noqa: F811
    from test_shift_study import test_pool_study_report_and_cli as make

    make(manifest, tmp_path)
    _check(tmp_path / "study" / "report.html", "shift", tmp_path)


def test_synth_toy_report(tmp_path):
    from test_synth_train import test_toy_experiment_runs as make

    make(tmp_path)
    _check(tmp_path / "report.html", "synth_toy", tmp_path)
