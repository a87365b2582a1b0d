"""Dataset IAP statistics and HTML reports: values checked against hand computation."""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from mridomain.iap import analyze, evaluation_report_html
from mridomain.report import Section, write_html_report
from browser import chromium, screenshot
from mridomain.iap.analysis import (association_matrix, combination_keys, combination_overlap, cramers_v,
                                      imbalance_summary, nominal_iaps, spearman_matrix)

KINDS = {"manufacturer": "categorical", "flip_angle": "categorical", "acquisition_matrix": "categorical",
         "tr": "continuous", "te": "continuous"}


def _assert_self_contained(doc: str) -> None:
    srcs = re.findall(r'src="([^"]*)"', doc)
    assert srcs, "report has no images"
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r'(src|href)="(https?:)?//', doc)
    assert "<link" not in doc and "<script" not in doc


def test_spearman_monotone_anti_and_hand_value():
    # acquisition_matrix codes follow natural order 320 < 384 < 448 < 512; tr rises with it, te falls.
    df = pd.DataFrame({"acquisition_matrix": ["448 X 448", "320 X 320", "512 X 512", "384 X 384"],
                       "tr": [5.0, 3.0, 6.0, 4.0], "te": [2.0, 4.0, 1.0, 3.0]})
    c = spearman_matrix(df, ["acquisition_matrix", "tr", "te"], KINDS)
    assert c.loc["acquisition_matrix", "tr"] == pytest.approx(1.0)
    assert c.loc["acquisition_matrix", "te"] == pytest.approx(-1.0)
    # Flip angles must be ranked as numbers (7 < 8 < 10 < 12 < 15), not as text ("10" < "7").
    # Ranks x = 1..5, y = 2,1,4,3,5: sum d^2 = 4, rho = 1 - 6*4 / (5*24) = 0.8.
    df2 = pd.DataFrame({"flip_angle": ["7", "8", "10", "12", "15"], "te": [2.0, 1.0, 4.0, 3.0, 5.0]})
    c2 = spearman_matrix(df2, ["flip_angle", "te"], KINDS)
    assert c2.loc["flip_angle", "te"] == pytest.approx(0.8)


def test_combination_overlap_by_hand():
    df = pd.DataFrame({
        "manufacturer": ["GE", "GE", "SIEMENS", "GE", "SIEMENS", "GE", "SIEMENS", "SIEMENS"],
        "tr": [5.0, 6.0, 4.0, 6.0, 3.0, 5.0, 3.0, 9.0],
        "split": ["train", "train", "train", "val", "val", "test", "test", "test"]})
    keys = combination_keys(df, ["manufacturer", "tr"], KINDS)
    by = {s: set(keys[df.split == s]) for s in ("train", "val", "test")}
    # train {GE5, GE6, S4}; val {GE6, S3}; test {GE5, S3, S9}
    ov = combination_overlap(by).set_index(["split_a", "split_b"])
    assert ov.loc[("train", "val")].tolist() == [2, 1, 1]
    assert ov.loc[("train", "test")].tolist() == [2, 2, 1]
    assert ov.loc[("val", "test")].tolist() == [1, 2, 1]
    res = analyze(df, combination_iaps=["manufacturer", "tr"])
    comb = res.combinations.set_index("split")
    assert comb.loc["test", "n_unique_combinations"] == 3
    assert comb.loc["test", "combinations_seen_in_train"] == 1
    assert comb.loc["test", "share_rows_with_combination_seen_in_train"] == pytest.approx(1 / 3)
    # by default a combination is the categorical IAPs only: TR would make almost every series unique
    default = analyze(df)
    assert default.combination_iaps == ["manufacturer"]
    comb = default.combinations.set_index("split")
    assert comb.loc["test", "n_unique_combinations"] == 2 and comb.loc["test", "combinations_seen_in_train"] == 2


def test_nominal_pairs_get_cramers_v_not_spearman_on_codes():
    # 2 x 2 table [[3, 1], [1, 3]]: chi2 = 8 * (9 - 1)^2 / 4^4 = 2, V = sqrt(2 / (8 * 1)) = 0.5
    a = pd.Series(["GE"] * 4 + ["SIEMENS"] * 4)
    b = pd.Series(["FFP", "FFP", "FFP", "HFP", "FFP", "HFP", "HFP", "HFP"])
    assert cramers_v(a, b) == pytest.approx(0.5)
    kinds = {**KINDS, "patient_position": "categorical"}
    df = pd.DataFrame({"manufacturer": a, "patient_position": b, "flip_angle": ["10"] * 4 + ["12"] * 4,
                       "te": [2.5] * 4 + [1.3] * 4})
    assert nominal_iaps(df, list(df.columns), kinds) == ["manufacturer", "patient_position"]
    m = association_matrix(df, list(df.columns), kinds)
    assert m.loc["manufacturer", "patient_position"] == pytest.approx(0.5)
    # renaming a nominal value changes its code's rank, not its association; Spearman on codes flips
    renamed = df.assign(manufacturer=a.map({"GE": "ZETA", "SIEMENS": "ALPHA"}))
    m2 = association_matrix(renamed, list(df.columns), kinds)
    assert m2.loc["manufacturer", "te"] == m.loc["manufacturer", "te"] == pytest.approx(1.0)
    s1, s2 = (spearman_matrix(d, ["manufacturer", "te"], kinds) for d in (df, renamed))
    assert s1.loc["manufacturer", "te"] == -s2.loc["manufacturer", "te"]
    # ordered pairs keep Spearman's sign: flip angle rises as TE falls
    assert m.loc["flip_angle", "te"] == pytest.approx(-1.0)


def test_imbalance_has_no_classes_for_continuous_iaps():
    df = pd.DataFrame({"manufacturer": ["GE", "GE", "SIEMENS"], "tr": [4.1, 4.2, 4.3]})
    assert imbalance_summary(df, ["manufacturer", "tr"], KINDS)["iap"].tolist() == ["manufacturer"]


def test_imbalance_by_hand():
    df = pd.DataFrame({"manufacturer": ["GE", "GE", "GE", "SIEMENS", None]})
    imb = imbalance_summary(df, ["manufacturer"], KINDS).iloc[0]
    assert imb["split"] == "all" and imb["n"] == 4 and imb["n_missing"] == 1 and imb["n_classes"] == 2
    assert imb["majority_value"] == "GE"
    assert imb["majority_share"] == pytest.approx(0.75)
    assert imb["imbalance_ratio"] == pytest.approx(3.0)
    h = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert imb["entropy_bits"] == pytest.approx(h)
    assert imb["normalized_entropy"] == pytest.approx(h / 1.0)


def test_analyze_writes_tables_figures_and_self_contained_html(tmp_path):
    rng = np.random.default_rng(0)
    n = 60
    man = rng.choice(["GE", "SIEMENS"], n)
    df = pd.DataFrame({
        "manufacturer": man,
        "flip_angle": rng.choice(["7", "10", "12"], n),
        "acquisition_matrix": rng.choice(["320 X 320", "448 X 448"], n),
        "tr": np.where(man == "GE", 5.9, 4.4) + rng.normal(0, 0.1, n),
        "te": np.where(man == "GE", 2.5, 1.3),
        "split": rng.choice(["train", "val", "test"], n)})
    p = tmp_path / "index.parquet"
    df.to_parquet(p)
    res = analyze(p, tmp_path / "out")
    assert res.splits == ["train", "val", "test"]
    # TE is set by the manufacturer (two values): Cramér's V = 1 in every split
    for s in res.splits:
        assert res.correlations[s].loc["manufacturer", "te"] == pytest.approx(1.0)
    counts = res.counts[(res.counts.iap == "manufacturer") & (res.counts.split == "train")]
    assert counts["count"].sum() == (df.split == "train").sum()
    for name in ("value_counts.csv", "association_train.csv", "combination_overlap.csv", "imbalance.csv",
                 "combinations.md", "histograms_test.png", "association_val.png", "report.html"):
        assert (tmp_path / "out" / name).exists(), name
    _assert_self_contained((tmp_path / "out" / "report.html").read_text())


def test_no_split_column_is_one_split_all():
    df = pd.DataFrame({"manufacturer": ["GE", "SIEMENS", "GE"], "te": [2.5, 1.3, 2.4]})
    res = analyze(df)
    assert res.splits == ["all"]
    assert list(res.correlations) == ["all"]
    assert res.overlap.empty


def test_evaluation_report_from_folder(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev = tmp_path / "eval"
    ev.mkdir()
    pd.DataFrame({"iap": ["manufacturer"], "top1": [0.99]}).to_csv(ev / "metrics.csv", index=False)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    fig.savefig(ev / "confusion.png")
    plt.close(fig)
    out = evaluation_report_html(ev, tmp_path / "eval.html")
    doc = out.read_text()
    assert "metrics.csv" in doc and "manufacturer" in doc
    _assert_self_contained(doc)


@pytest.mark.skipif(chromium() is None, reason="chromium / chromium-browser not on PATH: "
                    "headless screenshot check skipped (apt-get install chromium to run it)")
def test_report_renders_in_headless_chromium(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.imshow(np.outer(np.arange(32), np.ones(32)), cmap="viridis")
    html = write_html_report(tmp_path / "r.html", "Screenshot check",
                             [Section("A table", tables=[pd.DataFrame({"a": [1, 2], "b": [0.5, 0.25]})],
                                      figures=[("gradient", fig)])])
    img = screenshot(html, tmp_path / "shot.png", width=1200, height=900)
    assert img.shape == (900, 1200)
    assert img.std() > 5, "screenshot is blank"
