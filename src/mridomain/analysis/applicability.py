"""Applicability check: does a model trained on one dataset apply to a new, unlabeled one?

Predict the acquisition parameters of the new images, compare their predicted distributions and
IAP combinations with the training set's, and score every image for being out of distribution:

* max-softmax probability (Hendrycks & Gimpel 2017), averaged over the categorical IAP heads;
* energy, -logsumexp(logits) (Liu et al. 2020), averaged over heads, when the predictor exposes logits;
* a feature-space distance of the penultimate features (``embed``) to the training features:
  Mahalanobis with a Ledoit-Wolf covariance (Lee et al. 2018) and the k-th nearest-neighbour
  distance of L2-normalised features (Sun et al. 2022).

Every score is oriented so that higher means more out of distribution; each gets a threshold at a
95 %-confidence upper bound of the 95th percentile of its values on in-distribution images the
scorers were not fitted on (the val split, else a held-out quarter of the train sample), so at most
about 5 % of in-distribution images exceed any one threshold; a small calibration set widens the
bound (``iap.domain.quantile_upper_bound``) and the summary says so.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from mridomain.analysis._common import MISSING, as_category_strings, open_cache
from mridomain.report import Section, colored_table, df_to_markdown, figure_grid, figure_to_png, write_html_report
from mridomain.errors import EmptyInputError, InvalidArgumentError, SchemaMismatchError
from mridomain.iap.domain import MahalanobisScorer, quantile_upper_bound

if TYPE_CHECKING:
    from mridomain.iap.predictor import Predictor, PredictorOutput

__all__ = ["CompareResult", "compare", "head_outputs", "msp_score", "energy_score",
           "MahalanobisScorer", "KNNScorer"]

# TR/TE within 2% relative error count as correct in the paper (Fig. 2); the same tolerance keeps
# a regression head's small overshoot from calling a value "outside the training range".
_RANGE_TOLERANCE = 0.02


# ------------------------------------------------------------------------------- score maths
def msp_score(probs: Sequence[np.ndarray]) -> np.ndarray:
    """1 - mean over heads of the max softmax probability (higher = less confident = more OOD)."""
    return 1.0 - np.mean([np.asarray(p, float).max(axis=1) for p in probs], axis=0)


def energy_score(logits: Sequence[np.ndarray]) -> np.ndarray:
    """Mean over heads of the energy -logsumexp(logits) (higher = more OOD)."""
    from scipy.special import logsumexp

    return np.mean([-logsumexp(np.asarray(lg, float), axis=1) for lg in logits], axis=0)


class KNNScorer:
    """Distance to the k-th nearest training feature after L2 normalisation."""

    def __init__(self, k: int = 5):
        self.k = k

    def fit(self, feats: np.ndarray) -> "KNNScorer":
        from sklearn.neighbors import NearestNeighbors

        self.k = max(1, min(self.k, len(feats) - 1))
        self.nn = NearestNeighbors(n_neighbors=self.k + 1).fit(self._norm(feats))
        return self

    @staticmethod
    def _norm(f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, np.float64)
        return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)

    def score(self, feats: np.ndarray, exclude_self: bool = False) -> np.ndarray:
        dist, _ = self.nn.kneighbors(self._norm(feats), n_neighbors=self.k + 1)
        # On the fitting set itself the nearest neighbour is the point: skip it.
        return dist[:, self.k] if exclude_self else dist[:, self.k - 1]


# ------------------------------------------------------------------------- one forward pass
def head_outputs(output: "PredictorOutput") -> dict[str, dict[str, Any]]:
    """Categorical heads: {iap: {"probs": (N,C), "vocab": [..], "logits": (N,C) or None}}."""
    out = {iap: {"probs": p, "vocab": list(output.classes[iap]), "logits": output.logits.get(iap)}
           for iap, p in output.probabilities.items()}
    if not out:
        raise SchemaMismatchError("IAP predictor returned no categorical probabilities")
    return out


def _predict_all(predictor: "Predictor", images: np.ndarray) -> tuple[pd.DataFrame, dict, np.ndarray, dict]:
    """Predicted values, head outputs, features and value columns from ONE forward pass."""
    output = predictor.forward(images)
    feats = np.asarray(output.features, np.float64)
    if feats.ndim != 2 or len(feats) != len(images):
        raise SchemaMismatchError(f"the predictor's features have shape {feats.shape} for {len(images)} images")
    from mridomain.iap.predictor import value_column

    cont_cols = {iap: value_column(iap, output.units.get(iap)) for iap in output.continuous}
    return output.table(1), head_outputs(output), feats, cont_cols


def _subsample(idx: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    if n is None or len(idx) <= n:
        return idx
    return np.sort(np.random.default_rng(seed).choice(idx, n, replace=False))


def _load_new(new_source: Any, predictor: "Predictor", progress: bool) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    if isinstance(new_source, np.ndarray):
        imgs = new_source if new_source.ndim == 3 else new_source[None]
        return imgs, pd.DataFrame({"image": np.arange(len(imgs))}), pd.DataFrame(columns=["path", "reason"])
    if isinstance(new_source, (list, tuple)) and len(new_source) == 1:
        new_source = new_source[0]
    if isinstance(new_source, (str, Path)) and Path(new_source).is_dir() and (Path(new_source) / "slices.parquet").exists():
        table, images, _ = open_cache(new_source)
        cols = [c for c in ("patient_id", "series_uid", "slice_index", "file") if c in table.columns]
        return np.asarray(images, np.float32), table[cols].reset_index(drop=True), pd.DataFrame(columns=["path", "reason"])
    if hasattr(new_source, "images") and hasattr(new_source, "table"):
        return np.asarray(new_source.images, np.float32), new_source.table.reset_index(drop=True)[[]], pd.DataFrame(columns=["path", "reason"])
    from mridomain.data.inputs import read_inputs

    paths = [new_source] if isinstance(new_source, (str, Path)) else list(new_source)
    inputs = read_inputs(paths, predictor.preprocess, progress=progress)
    return inputs.images, inputs.rows[["source", "slice", "file"]], inputs.skipped


def series_summary(verdicts: pd.DataFrame) -> pd.DataFrame:
    """One row per series (or input file): slice counts per verdict and the series' verdict, the
    most severe one that at least half of its slices have ("out" before "uncertain" before "in")."""
    key = next((c for c in ("series_uid", "source") if c in verdicts.columns), None)
    if key is None:
        return pd.DataFrame()
    counts = pd.crosstab(verdicts[key], verdicts["verdict"]).reindex(columns=["in", "uncertain", "out"], fill_value=0)
    n = counts.sum(axis=1)
    verdict = np.where(counts["out"] >= n / 2, "out",
                       np.where(counts["out"] + counts["uncertain"] >= n / 2, "uncertain", "in"))
    table = counts.assign(n_slices=n, verdict=verdict).reset_index()
    return table[[key, "n_slices", "in", "uncertain", "out", "verdict"]].sort_values(
        ["verdict", key], key=lambda c: c.map({"out": 0, "uncertain": 1, "in": 2}) if c.name == "verdict" else c)


# ------------------------------------------------------------------------------------ result
@dataclass
class CompareResult:
    """Result of :func:`compare` (also written under ``out``)."""

    verdicts: pd.DataFrame          # per new image: scores, flags, verdict, reasons, predicted IAPs
    iap_shift: pd.DataFrame         # per IAP: share of new images with values unseen in training, TV distance
    distribution: pd.DataFrame      # per IAP and value: training share vs new (predicted) share
    thresholds: dict[str, float]
    summary: dict[str, Any]
    reference_scores: pd.DataFrame  # calibration images' scores
    series: pd.DataFrame = field(default_factory=pd.DataFrame)   # per series / input: slice verdict counts
    out: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)
    skipped: pd.DataFrame | None = None

    def to_markdown(self) -> str:
        s = self.summary
        head = (f"{s['n_new']} new images: {s['n_in']} in distribution, {s['n_uncertain']} uncertain, "
                f"{s['n_out']} out of distribution; {s['share_combination_seen'] * 100:.1f}% have a predicted "
                f"IAP combination that also occurs among predictions on training images.")
        if len(self.series):
            v = self.series["verdict"].value_counts()
            head += (f" Per series: {int(v.get('in', 0))} in, {int(v.get('uncertain', 0))} uncertain, "
                     f"{int(v.get('out', 0))} out of {len(self.series)}.")
        return head + "\n\n" + df_to_markdown(self.iap_shift)


# ----------------------------------------------------------------------------------- compare
def compare(train_source: Any, new_source: Any, iap_run: Any, out: str | Path | None = None,
            feature_score: str = "mahalanobis", quantile: float = 0.95, max_reference: int | None = 2000,
            knn_k: int = 5, seed: int = 0, progress: bool = True) -> CompareResult:
    """Applicability check of an IAP-aware model on a new, unlabeled image set.

    Args:
        train_source: the training slice cache (folder or SliceCache); its ``train`` split is the
            reference, its ``val`` split (else train) calibrates the thresholds.
        new_source: a slice cache folder, an (N,H,W) array, or image files / series folders.
        iap_run: IAP run folder or a :class:`mridomain.iap.Predictor` (one forward pass per image
            set gives the probabilities, logits and features every score needs).
        out: folder for verdicts.csv, iap_shift.csv, distribution.csv, scores.csv,
            thresholds.json and report.html; None computes only.
        feature_score: "mahalanobis" or "knn": the feature distance that decides the verdict.
        quantile: threshold quantile of the calibration scores (0.95: ~5% false alarms per score).
        max_reference: at most this many train (and calibration) slices are scored (seeded sample).
        knn_k: k of the kNN distance.
        seed: sampling seed.
        progress: progress bars while reading paths.

    Verdict per image: "out" when the feature distance exceeds its threshold, or when a predicted
    categorical IAP value never occurs in the training labels (or is "other"), or a predicted TR/TE
    lies more than 2% outside the range the model predicts on training images; "uncertain" when
    only a confidence score (max-softmax or energy: they move together, so they count as one)
    exceeds its threshold; "in" otherwise.
    """
    if feature_score not in ("mahalanobis", "knn"):
        raise InvalidArgumentError(f"feature_score {feature_score!r}: choose mahalanobis or knn")
    from mridomain.iap.predictor import as_predictor

    predictor = as_predictor(iap_run)
    table, images, meta = open_cache(train_source)
    table = table.reset_index(drop=True)
    split = table["split"].astype(str).to_numpy() if "split" in table.columns else np.array(["train"] * len(table))
    tr_idx = _subsample(np.flatnonzero(split == "train"), max_reference, seed)
    if len(tr_idx) < 3:
        raise EmptyInputError(Path(str(train_source)), "training reference needs at least 3 train slices")
    cal_idx = _subsample(np.flatnonzero(split == "val"), max_reference, seed + 1)
    tr_images = np.asarray(images[tr_idx], np.float32)
    tr_pred, tr_heads, tr_feats, _ = _predict_all(predictor, tr_images)
    # Scores of the slices a scorer was fitted on are optimistic (in-sample distances are small),
    # so thresholds always come from slices it has not seen: the val split, else a quarter of train.
    fit_rows = np.arange(len(tr_idx))
    held_out = None
    if len(cal_idx) < 20:
        order = np.random.default_rng(seed + 2).permutation(len(tr_idx))
        n_held = max(3, len(tr_idx) // 4)
        held_out, fit_rows = np.sort(order[:n_held]), np.sort(order[n_held:])
    maha = MahalanobisScorer().fit(tr_feats[fit_rows])
    knn = KNNScorer(knn_k).fit(tr_feats[fit_rows])

    def scores(heads: dict, feats: np.ndarray) -> pd.DataFrame:
        d = {"msp_score": msp_score([h["probs"] for h in heads.values()])}
        if all(h["logits"] is not None for h in heads.values()):
            d["energy_score"] = energy_score([h["logits"] for h in heads.values()])
        d["mahalanobis"] = maha.score(feats)
        d["knn_distance"] = knn.score(feats)
        return pd.DataFrame(d)

    if held_out is not None:
        cal_heads = {k: {kk: (vv[held_out] if isinstance(vv, np.ndarray) else vv) for kk, vv in h.items()}
                     for k, h in tr_heads.items()}
        cal_scores = scores(cal_heads, tr_feats[held_out])
        cal_name = "held-out train"
    else:
        _, cal_heads, cal_feats, _ = _predict_all(predictor, np.asarray(images[cal_idx], np.float32))
        cal_scores = scores(cal_heads, cal_feats)
        cal_name = "val"
    # an upper confidence bound of the quantile: a small calibration set widens it, as predict's does
    bounds = {c: quantile_upper_bound(cal_scores[c], quantile) for c in cal_scores.columns}
    thresholds = {c: b[0] for c, b in bounds.items()}
    widened = any(b[1] for b in bounds.values())

    new_images, new_rows, skipped = _load_new(new_source, predictor, progress)
    if len(new_images) == 0:
        raise EmptyInputError(Path(str(new_source)), "no new images to compare")
    new_pred, new_heads, new_feats, cont_cols = _predict_all(predictor, new_images)
    new_scores = scores(new_heads, new_feats)

    # Training reference values: labels where the cache has them, else the predictions on train.
    cat_iaps = [i for i in new_heads if i in new_pred.columns]
    cont_iaps = list(cont_cols)
    ref_values: dict[str, set] = {}
    ref_dist: dict[str, pd.Series] = {}
    ref_source: dict[str, str] = {}
    for iap in cat_iaps:
        lab = as_category_strings(table[iap].iloc[tr_idx]) if iap in table.columns else None
        if lab is not None and (lab != MISSING).any():
            vals, ref_source[iap] = lab[lab != MISSING], "labels"
        else:
            vals, ref_source[iap] = as_category_strings(tr_pred[iap]), "predictions"
        ref_values[iap] = set(vals)
        ref_dist[iap] = vals.value_counts(normalize=True)
    ranges = {}
    # TR/TE: the range the model itself predicts on training images, so its regression error on
    # in-distribution images is part of the reference (true labels would flag that error as shift).
    for iap in cont_iaps:
        src = pd.to_numeric(tr_pred[cont_cols[iap]], errors="coerce")
        ranges[iap] = (float(src.min()), float(src.max()))

    tr_combo = set(zip(*[as_category_strings(tr_pred[i]) for i in cat_iaps]))
    new_cat = {i: as_category_strings(new_pred[i]) for i in cat_iaps}
    new_combo = list(zip(*[new_cat[i] for i in cat_iaps]))
    combo_seen = np.array([c in tr_combo for c in new_combo])

    feat_col = "mahalanobis" if feature_score == "mahalanobis" else "knn_distance"
    verdict_rows = []
    for i in range(len(new_images)):
        reasons, flags = [], []
        for c in new_scores.columns:
            v = float(new_scores.at[i, c])
            if v > thresholds[c]:
                flags.append(c)
                if c in ("msp_score", "energy_score", feat_col):
                    reasons.append(f"{c} {v:.3g} > {thresholds[c]:.3g} ({100 * quantile:g}th pct of {cal_name})")
        unseen = []
        for iap in cat_iaps:
            v = new_cat[iap].iat[i]
            if v == "other":
                unseen.append(f"{iap} predicted as 'other' (outside the training vocabulary)")
            elif v not in ref_values[iap]:
                unseen.append(f"{iap}={v} never seen in training")
        for iap in cont_iaps:
            v = float(pd.to_numeric(new_pred[cont_cols[iap]].iat[i], errors="coerce"))
            lo, hi = ranges[iap]
            if np.isfinite(v) and (v < lo * (1 - _RANGE_TOLERANCE) or v > hi * (1 + _RANGE_TOLERANCE)):
                unseen.append(f"{iap}={v:.3g} outside the range predicted on training images {lo:.3g}-{hi:.3g}")
        reasons += unseen
        # MSP and energy both measure head confidence and move together: one flag between them.
        confidence_flag = any(f in ("msp_score", "energy_score") for f in flags)
        if feat_col in flags or unseen:
            verdict = "out"
        elif confidence_flag:
            verdict = "uncertain"
        else:
            verdict = "in"
        if not combo_seen[i]:
            reasons.append("predicted IAP combination never predicted on training images")
        verdict_rows.append({"verdict": verdict, "reasons": "; ".join(reasons)})
    verdicts = pd.concat([new_rows.reset_index(drop=True), pd.DataFrame(verdict_rows), new_scores,
                          pd.Series(combo_seen, name="combination_seen_in_train"),
                          new_pred.add_prefix("pred_")], axis=1)

    shift_rows, dist_rows = [], []
    for iap in cat_iaps:
        nv = new_cat[iap]
        new_dist = nv.value_counts(normalize=True)
        allv = sorted(set(new_dist.index) | set(ref_dist[iap].index), key=str)
        a = ref_dist[iap].reindex(allv, fill_value=0.0)
        b = new_dist.reindex(allv, fill_value=0.0)
        for v in allv:
            dist_rows.append({"iap": iap, "value": v, "train_share": float(a[v]), "new_share": float(b[v]),
                              "seen_in_train": v in ref_values[iap]})
        shift_rows.append({"iap": iap, "kind": "categorical", "reference": ref_source[iap],
                           "n_train_values": len(ref_values[iap]),
                           "share_new_unseen": float((~nv.isin(ref_values[iap]) | (nv == "other")).mean()),
                           "most_common_new": new_dist.index[0], "its_train_share": float(a[new_dist.index[0]]),
                           "total_variation": float(0.5 * np.abs(a - b).sum())})
    for iap in cont_iaps:
        v = pd.to_numeric(new_pred[cont_cols[iap]], errors="coerce")
        lo, hi = ranges[iap]
        outside = (v < lo * (1 - _RANGE_TOLERANCE)) | (v > hi * (1 + _RANGE_TOLERANCE))
        shift_rows.append({"iap": iap, "kind": "continuous", "reference": "predictions",
                           "n_train_values": np.nan, "share_new_unseen": float(outside.mean()),
                           "most_common_new": f"median {v.median():.3g}", "its_train_share": np.nan,
                           "total_variation": np.nan})
    iap_shift = pd.DataFrame(shift_rows)
    distribution = pd.DataFrame(dist_rows)
    summary = {"n_new": int(len(new_images)), "n_in": int((verdicts.verdict == "in").sum()),
               "n_uncertain": int((verdicts.verdict == "uncertain").sum()),
               "n_out": int((verdicts.verdict == "out").sum()),
               "share_combination_seen": float(combo_seen.mean()), "n_reference": int(len(tr_idx)),
               "calibration": cal_name, "n_calibration": int(len(cal_scores)), "thresholds_widened": widened,
               "feature_score": feature_score,
               "quantile": quantile, "energy_available": "energy_score" in new_scores.columns,
               "n_skipped": int(len(skipped))}
    result = CompareResult(verdicts=verdicts, iap_shift=iap_shift, distribution=distribution,
                           thresholds=thresholds, summary=summary, reference_scores=cal_scores,
                           series=series_summary(verdicts), out=Path(out) if out else None, skipped=skipped)
    if out is not None:
        _write_compare(result, new_scores)
    return result


def _write_compare(res: CompareResult, new_scores: pd.DataFrame) -> None:

    out = res.out
    assert out is not None
    out.mkdir(parents=True, exist_ok=True)
    res.verdicts.to_csv(out / "verdicts.csv", index=False)
    res.iap_shift.to_csv(out / "iap_shift.csv", index=False)
    if len(res.series):
        res.series.to_csv(out / "series.csv", index=False)
    res.distribution.to_csv(out / "distribution.csv", index=False)
    pd.concat([res.reference_scores.assign(set=res.summary["calibration"]), new_scores.assign(set="new")]
              ).to_csv(out / "scores.csv", index=False)
    (out / "thresholds.json").write_text(json.dumps({"thresholds": res.thresholds, **res.summary}, indent=1))
    if res.skipped is not None and len(res.skipped):
        res.skipped.to_csv(out / "skipped.csv", index=False)
    res.files.update(verdicts=out / "verdicts.csv", iap_shift=out / "iap_shift.csv",
                     distribution=out / "distribution.csv", scores=out / "scores.csv",
                     thresholds=out / "thresholds.json")

    cols = list(new_scores.columns)
    fig, axes = figure_grid(len(cols), len(cols), 4, 3.2)
    for ax, c in zip(axes, cols):
        a, b = res.reference_scores[c].to_numpy(), new_scores[c].to_numpy()
        bins = np.histogram_bin_edges(np.concatenate([a, b]), bins=30)
        ax.hist(a, bins=bins, alpha=0.6, density=True, label=f"{res.summary['calibration']} (in-distribution)")
        ax.hist(b, bins=bins, alpha=0.6, density=True, label="new")
        ax.axvline(res.thresholds[c], color="k", ls="--", lw=1, label="threshold")
        ax.set_title(c)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    score_png = figure_to_png(fig)
    (out / "scores.png").write_bytes(score_png)

    iaps = list(res.distribution["iap"].unique())
    fig, axes = figure_grid(len(iaps), 4, 4.2, 3.0)
    for ax, iap in zip(axes, iaps):
        d = res.distribution[res.distribution.iap == iap]
        x = np.arange(len(d))
        ax.bar(x - 0.2, d.train_share, width=0.4, label="train")
        ax.bar(x + 0.2, d.new_share, width=0.4, label="new (predicted)")
        ax.set_xticks(x)
        ax.set_xticklabels([str(v)[:14] for v in d.value], rotation=60, ha="right", fontsize=7)
        ax.set_title(iap, fontsize=9)
    if axes:
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    dist_png = figure_to_png(fig)
    (out / "distribution.png").write_bytes(dist_png)
    s = res.summary
    res.files["report"] = write_html_report(out / "report.html", "Applicability check: new data vs training data", [
        Section("Summary", text=res.to_markdown().split("\n\n")[0] + (
            f"\n\nReference: {s['n_reference']} training slices; thresholds at the {s['quantile'] * 100:.0f}th "
            f"percentile of {s['n_calibration']} {s['calibration']} slices. Verdict uses the {s['feature_score']} "
            f"feature distance." + ("" if s["energy_available"] else " Energy score unavailable: the predictor "
                                    "gives no logits.")),
                tables=[("thresholds", res.thresholds)]),
        Section("Per-IAP shift", text="share_new_unseen: share of new images whose predicted value never occurs "
                "in training (TR/TE: more than 2% outside the range predicted on training images); total_variation: half the L1 "
                "distance between the training and the new (predicted) value distributions.",
                tables=[res.iap_shift], figures=[("value shares, train vs new", dist_png)]),
        Section("Out-of-distribution scores", figures=[("score histograms with thresholds", score_png)]),
        Section("Verdicts per series", text="A series' verdict is the most severe one that at least half "
                "of its slices have.", tables=[colored_table(res.series, "verdict")] if len(res.series) else []),
        Section("Verdicts (first 300 images)", tables=[colored_table(res.verdicts.drop(
            columns=[c for c in res.verdicts.columns if c.startswith("pred_")]).head(300), "verdict")]),
    ])
