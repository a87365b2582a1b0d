"""Applicability check: does a model trained on one dataset apply to a new, unlabeled one?

Predict the acquisition parameters of the new images, compare their predicted distributions with
the predictions on in-domain images (label-free shift, each distance with its noise floor), judge
every image with ``predict``'s one in-domain verdict (the run's domain model, threshold and header
rule), and report further scores that do not decide it:

* max-softmax probability (Hendrycks & Gimpel 2017), averaged over the categorical IAP heads;
* energy, -logsumexp(logits) (Liu et al. 2020), averaged over heads, when the predictor exposes logits;
* a feature-space distance of the penultimate features (``embed``) to the training features:
  Mahalanobis with a Ledoit-Wolf covariance (Lee et al. 2018) and the k-th nearest-neighbour
  distance of L2-normalised features (Sun et al. 2022).

Every score is oriented so that higher means more out of distribution; each gets a threshold at a
95 %-confidence upper bound of the 99th percentile (the run's own quantile) of its values on
in-distribution images the scorers were not fitted on (the val split, else a held-out quarter of
the train sample); a small calibration set widens the bound (``iap.domain.quantile_upper_bound``)
and the summary says so.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from mridomain.iap._analysis_common import MISSING, as_category_strings, open_cache
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
        """Index the reference features (each row scaled to unit length) for nearest-neighbour distances."""
        from sklearn.neighbors import NearestNeighbors

        self.k = max(1, min(self.k, len(feats) - 1))
        self.nn = NearestNeighbors(n_neighbors=self.k + 1).fit(self._norm(feats))
        return self

    @staticmethod
    def _norm(f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, np.float64)
        return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)

    def score(self, feats: np.ndarray, exclude_self: bool = False) -> np.ndarray:
        """Distance of each row to its k-th nearest reference feature (higher: farther from the training domain)."""
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


def _subsample(idx: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    if n is None or len(idx) <= n:
        return idx
    return np.sort(np.random.default_rng(seed).choice(idx, n, replace=False))


def _load_new(new_source: Any, predictor: "Predictor", progress: bool
              ) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame, list[dict[str, Any]]]:
    """(images, identity rows, skipped inputs, header values per image ({} where none))."""
    no_skips = pd.DataFrame(columns=["path", "reason"])
    if isinstance(new_source, np.ndarray):
        imgs = new_source if new_source.ndim == 3 else new_source[None]
        return imgs, pd.DataFrame({"image": np.arange(len(imgs))}), no_skips, [{}] * len(imgs)
    if isinstance(new_source, (list, tuple)) and len(new_source) == 1:
        new_source = new_source[0]
    if isinstance(new_source, (str, Path)) and Path(new_source).is_dir() and (Path(new_source) / "slices.parquet").exists():
        table, images, _ = open_cache(new_source)
        table = table.reset_index(drop=True)
        cols = [c for c in ("patient_id", "series_uid", "series_description", "slice_index", "file") if c in table.columns]
        return (np.asarray(images, np.float32), table[cols], no_skips, cache_headers(table, predictor))
    if hasattr(new_source, "images") and hasattr(new_source, "table"):
        table = new_source.table.reset_index(drop=True)
        cols = [c for c in ("patient_id", "series_uid", "series_description", "slice_index", "file") if c in table.columns]
        return (np.asarray(new_source.images, np.float32), table[cols], no_skips, cache_headers(table, predictor))
    from mridomain.data.inputs import read_inputs

    paths = [new_source] if isinstance(new_source, (str, Path)) else list(new_source)
    inputs = read_inputs(paths, predictor.preprocess, progress=progress)
    truths: list[dict[str, Any]] = [{}] * len(inputs.images)
    if getattr(predictor, "encoder", None) is not None:
        from mridomain.iap.prediction import header_truths

        truths = header_truths(inputs.inputs, predictor.encoder)
    cols = [c for c in ("source", "slice", "file", "patient_id", "series_uid", "series_description")
            if c in inputs.rows]
    return inputs.images, inputs.rows[cols], inputs.skipped, truths


def cache_headers(table: pd.DataFrame, predictor: "Predictor") -> list[dict[str, Any]]:
    """A prepared cache's IAP columns are its header values: per row, those the predictor knows."""
    encoder = getattr(predictor, "encoder", None)
    if encoder is None:
        return [{}] * len(table)
    from mridomain.iap.labels import category_string, is_missing

    heads = [h for h in encoder.heads if h.name in table.columns]
    rows = []
    for rec in table[[h.name for h in heads]].to_dict("records"):
        rows.append({h.name: (category_string(rec[h.name]) if h.kind == "categorical" else float(rec[h.name]))
                     for h in heads if not is_missing(rec[h.name])})
    return rows


def series_summary(verdicts: pd.DataFrame) -> pd.DataFrame:
    """One row per series (or input file), with its patient ID and description where known:
    slice counts per verdict and the series' verdict, "out" when at least half of its slices are."""
    key = next((c for c in ("series_uid", "source") if c in verdicts.columns and verdicts[c].notna().any()), None)
    if key is None:
        return pd.DataFrame()
    v = verdicts.assign(**{key: verdicts[key].fillna(verdicts.get("source", "")).astype(str)})
    counts = pd.crosstab(v[key], v["verdict"]).reindex(columns=["in", "out"], fill_value=0)
    n = counts.sum(axis=1)
    table = counts.assign(n_slices=n, verdict=np.where(counts["out"] >= n / 2, "out", "in")).reset_index()
    ident = [c for c in ("patient_id", "series_description", "source") if c in v.columns and c != key]
    if ident:
        table = table.merge(v.groupby(key)[ident].first().reset_index(), on=key, how="left")
    if "domain_reason" in v.columns:
        reasons = v.groupby(key)["domain_reason"].agg(lambda r: ", ".join(sorted({x for x in r if x})))
        table = table.merge(reasons.rename("reasons").reset_index(), on=key, how="left")
    front = [key] + [c for c in ("patient_id", "series_description") if c in table.columns]
    table = table[front + [c for c in table.columns if c not in front]]
    return table.sort_values(["verdict", key], key=lambda c: c.map({"out": 0, "in": 1}) if c.name == "verdict" else c)


# ------------------------------------------------------------------- label-free shift measures
def _total_variation(a: pd.Series, b: pd.Series) -> float:
    allv = sorted(set(a.index) | set(b.index), key=str)
    return float(0.5 * np.abs(a.reindex(allv, fill_value=0.0) - b.reindex(allv, fill_value=0.0)).sum())


def _group_draws(groups: np.ndarray, n_new_groups: int, rng: np.random.Generator, draws: int
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pairs of row samples of the in-domain reference, as two in-domain samples of the sizes at
    hand would be drawn: whole patients with replacement (slices of one patient are alike, so
    counting them as independent would set the floor too low), as many as the reference and the
    new set have."""
    groups = np.asarray(groups).astype(str)
    names, inverse = np.unique(groups, return_inverse=True)
    rows_of = [np.flatnonzero(inverse == k) for k in range(len(names))]
    out = []
    for _ in range(draws):
        a = np.concatenate([rows_of[k] for k in rng.integers(len(names), size=len(names))])
        b = np.concatenate([rows_of[k] for k in rng.integers(len(names), size=max(1, n_new_groups))])
        out.append((a, b))
    return out


def _floor(values: np.ndarray, pairs: list[tuple[np.ndarray, np.ndarray]], distance, level: float = 0.95) -> float:
    """The ``level`` quantile of ``distance`` between the sample pairs of :func:`_group_draws`."""
    return float(np.quantile([distance(values[a], values[b]) for a, b in pairs], level))


def _tv_of(a: np.ndarray, b: np.ndarray) -> float:
    return _total_variation(pd.Series(a).value_counts(normalize=True), pd.Series(b).value_counts(normalize=True))


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import ks_2samp

    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    return float(ks_2samp(a, b).statistic) if len(a) and len(b) else float("nan")


def _mmd2(x: np.ndarray, y: np.ndarray, gamma: float) -> float:
    from sklearn.metrics.pairwise import rbf_kernel

    return float(rbf_kernel(x, x, gamma=gamma).mean() + rbf_kernel(y, y, gamma=gamma).mean()
                 - 2 * rbf_kernel(x, y, gamma=gamma).mean())


def feature_shift(reference: np.ndarray, new: np.ndarray, pairs: list[tuple[np.ndarray, np.ndarray]],
                  rng: np.random.Generator, n_max: int = 300) -> tuple[float, float]:
    """(MMD^2 between standardized reference and new image features, RBF kernel with the
    median-distance bandwidth (Gretton et al. 2012), and its noise floor over the reference sample
    pairs ``pairs``). Samples above ``n_max`` rows are subsampled."""
    mu, sd = reference.mean(0), reference.std(0) + 1e-9
    ref, nw = (reference - mu) / sd, (new - mu) / sd
    from sklearn.metrics.pairwise import euclidean_distances

    probe = ref[rng.permutation(len(ref))[:200]]
    d = euclidean_distances(probe, probe)
    gamma = 1.0 / max(2 * np.median(d[d > 0]) ** 2, 1e-12) if (d > 0).any() else 1.0

    def mmd(x: np.ndarray, y: np.ndarray) -> float:
        return _mmd2(x[rng.permutation(len(x))[:n_max]], y[rng.permutation(len(y))[:n_max]], gamma)

    return mmd(ref, nw), float(np.quantile([mmd(ref[a], ref[b]) for a, b in pairs[:100]], 0.95))


# ------------------------------------------------------------------------------------ result
@dataclass
class CompareResult:
    """Result of :func:`compare` (also written under ``out``)."""

    verdicts: pd.DataFrame          # per new image: scores, in-domain verdict and its reason, notes, predicted IAPs
    iap_shift: pd.DataFrame         # per IAP (+ image features): reference vs new predictions, distance, noise floor
    distribution: pd.DataFrame      # per IAP and value: reference (predicted) share vs new (predicted) share
    thresholds: dict[str, float]
    summary: dict[str, Any]
    reference_scores: pd.DataFrame  # calibration images' scores
    series: pd.DataFrame = field(default_factory=pd.DataFrame)   # per series / input: slice verdict counts
    out: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)
    skipped: pd.DataFrame | None = None

    def to_markdown(self) -> str:
        """A Markdown summary (verdict counts by reason, IAPs shifted above their noise floor) and the shift table."""
        s = self.summary
        by = ", ".join(f"{n} {r}" for r, n in s.get("by_reason", {}).items())
        shifted = s.get("shift_above_floor", [])
        head = (f"{s['n_new']} new images: {s['n_in']} in the training domain, {s['n_out']} out (by reason: "
                f"{by}; {s['threshold_note']}). Shift, predictions on new data vs on {s['calibration']} data: "
                + (f"above its noise floor for {', '.join(shifted)}." if shifted else
                   "no IAP and no image-feature distance above its noise floor."))
        if len(self.series):
            v = self.series["verdict"].value_counts()
            head += f" Per series: {int(v.get('in', 0))} in, {int(v.get('out', 0))} out of {len(self.series)}."
        if s.get("engine"):
            head += f" ({s['engine']})"
        return head + "\n\n" + df_to_markdown(self.iap_shift)


# ----------------------------------------------------------------------------------- compare
def compare(train_source: Any, new_source: Any, iap_run: Any, out: str | Path | None = None,
            feature_score: str = "mahalanobis", quantile: float = 0.99, max_reference: int | None = 2000,
            knn_k: int = 5, seed: int = 0, progress: bool = True, rule: Any = None,
            engine: str = "auto") -> CompareResult:
    """Applicability check of an IAP-aware model on a new, unlabeled image set.

    Args:
        train_source: the training slice cache (folder or SliceCache); its ``train`` split is the
            reference of the feature scores, its ``val`` split (else a held-out quarter of train)
            the in-domain data that thresholds and shift distances are measured against.
        new_source: a slice cache folder, an (N,H,W) array, or image files / series folders.
        iap_run: IAP run folder or a :class:`mridomain.iap.Predictor` (one forward pass per image
            set gives the probabilities, logits and features every score needs).
        out: folder for verdicts.csv, iap_shift.csv, series.csv, distribution.csv, scores.csv,
            thresholds.json and report.html; None computes only.
        feature_score: "mahalanobis" or "knn": the feature distance that decides the verdict of a
            predictor without a domain model.
        quantile: threshold quantile of the calibration scores of the other scores, and of the
            verdict's for a predictor without a domain model (0.99, as ``train`` calibrates).
        max_reference: at most this many train (and calibration) slices are scored (seeded sample).
        knn_k: k of the kNN distance.
        seed: sampling seed.
        progress: progress bars while reading paths.
        rule: how header evidence counts (:class:`mridomain.iap.domain.DomainRule`; None: the run's).
        engine: how a run folder's network runs: "auto" | "onnx" | "onnx-int8" | "torch"
            (:mod:`mridomain.iap.runtime`); ``summary["engine"]`` says which ran and why.

    Verdict per image: ``predict``'s, from one function (:meth:`mridomain.iap.domain.DomainModel.judge`)
    with the run's one threshold: "out" when the image evidence is beyond the run's threshold or a
    header value lies outside the training domain (``domain_reason`` says which); a predictor
    without a domain model is judged on its feature distance alone. ``notes`` add what does not
    decide: low head confidence, predicted values never seen in training labels.

    Shift is label-free: the distribution of predictions on the new images against predictions on
    the in-domain calibration images (total variation; TR/TE: Kolmogorov-Smirnov), and the image
    features' MMD^2, each with a noise floor (what two in-domain samples of the same sizes show by
    chance, 95 %; patients resampled whole), so model error is not read as shift.
    """
    if feature_score not in ("mahalanobis", "knn"):
        raise InvalidArgumentError(f"feature_score {feature_score!r}: choose mahalanobis or knn")
    from mridomain.iap.domain import DomainRule, domain_verdict, reason_counts
    from mridomain.iap.run import as_predictor

    predictor = as_predictor(iap_run, engine=engine)
    domain = getattr(predictor, "domain", None)
    rng = np.random.default_rng(seed)
    table, images, meta = open_cache(train_source)
    table = table.reset_index(drop=True)
    split = table["split"].astype(str).to_numpy() if "split" in table.columns else np.array(["train"] * len(table))
    tr_idx = _subsample(np.flatnonzero(split == "train"), max_reference, seed)
    if len(tr_idx) < 3:
        raise EmptyInputError(Path(str(train_source)), "training reference needs at least 3 train slices")
    cal_idx = _subsample(np.flatnonzero(split == "val"), max_reference, seed + 1)
    tr_output = predictor.forward(np.asarray(images[tr_idx], np.float32))
    tr_pred, tr_heads, tr_feats, cont_cols = _parts(tr_output, len(tr_idx))
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

    def scores(output: "PredictorOutput", heads: dict, feats: np.ndarray) -> pd.DataFrame:
        d = {"msp_score": msp_score([h["probs"] for h in heads.values()])}
        if all(h["logits"] is not None for h in heads.values()):
            d["energy_score"] = energy_score([h["logits"] for h in heads.values()])
        d["mahalanobis"] = maha.score(feats)
        d["knn_distance"] = knn.score(feats)
        if output.domain_score is not None:
            d["domain_score"] = np.asarray(output.domain_score, float)
        return pd.DataFrame(d)

    if held_out is not None:
        cal_output = tr_output.subset(held_out)
        cal_name = "held-out train"
    else:
        cal_output = predictor.forward(np.asarray(images[cal_idx], np.float32))
        cal_name = "val"
    cal_pred, cal_heads, cal_feats, _ = _parts(cal_output, len(cal_output))
    cal_scores = scores(cal_output, cal_heads, cal_feats)
    bounds = {c: quantile_upper_bound(cal_scores[c], quantile) for c in cal_scores.columns if c != "domain_score"}
    thresholds = {c: b[0] for c, b in bounds.items()}
    widened = any(b[1] for b in bounds.values())
    feat_col = "mahalanobis" if feature_score == "mahalanobis" else "knn_distance"

    new_images, new_rows, skipped, truths = _load_new(new_source, predictor, progress)
    if len(new_images) == 0:
        raise EmptyInputError(Path(str(new_source)), "no new images to compare")
    new_output = predictor.forward(new_images)
    new_pred, new_heads, new_feats, cont_cols = _parts(new_output, len(new_images))
    new_scores = scores(new_output, new_heads, new_feats)

    # the verdict: predict's, with the run's one threshold and its header rule
    if domain is not None and new_output.domain_score is not None:
        judged = domain.judge(new_output.domain_score, truths, rule)
        thresholds["domain_score"] = float(domain.threshold)
        threshold_note = domain.note
    else:
        judged = domain_verdict(new_scores[feat_col].to_numpy() <= thresholds[feat_col], [None] * len(new_images),
                                rule or DomainRule())
        threshold_note = (f"{feat_col} threshold {thresholds[feat_col]:.4g}: the {100 * quantile:g}th percentile "
                          f"of {len(cal_scores)} {cal_name} slices, bounded with 95% confidence (the predictor "
                          "has no domain model)")

    # Values seen in training: the labels where the cache has them, else the predictions on train.
    cat_iaps = [i for i in new_heads if i in new_pred.columns]
    cont_iaps = list(cont_cols)
    ref_values: dict[str, set] = {}
    for iap in cat_iaps:
        lab = as_category_strings(table[iap].iloc[tr_idx]) if iap in table.columns else None
        has_labels = lab is not None and (lab != MISSING).any()
        ref_values[iap] = set(lab[lab != MISSING]) if has_labels else set(as_category_strings(tr_pred[iap]))
    # TR/TE: the range the model itself predicts on training images, so its regression error on
    # in-distribution images is part of the reference (true labels would flag that error as shift).
    ranges = {}
    for iap in cont_iaps:
        src = pd.to_numeric(tr_pred[cont_cols[iap]], errors="coerce")
        ranges[iap] = (float(src.min()), float(src.max()))

    tr_combo = set(zip(*[as_category_strings(tr_pred[i]) for i in cat_iaps]))
    new_cat = {i: as_category_strings(new_pred[i]) for i in cat_iaps}
    combo_seen = np.array([c in tr_combo for c in zip(*[new_cat[i] for i in cat_iaps])])

    notes = []
    for i in range(len(new_images)):
        note = [f"{c} {new_scores.at[i, c]:.3g} > {thresholds[c]:.3g} (low confidence)"
                for c in ("msp_score", "energy_score") if c in new_scores.columns and new_scores.at[i, c] > thresholds[c]]
        for iap in cat_iaps:
            v = new_cat[iap].iat[i]
            if v == "other" or v not in ref_values[iap]:
                note.append(f"{iap}={v} never seen in training")
        for iap in cont_iaps:
            v = float(pd.to_numeric(new_pred[cont_cols[iap]].iat[i], errors="coerce"))
            lo, hi = ranges[iap]
            if np.isfinite(v) and (v < lo * (1 - _RANGE_TOLERANCE) or v > hi * (1 + _RANGE_TOLERANCE)):
                note.append(f"{iap}={v:.3g} outside the range predicted on training images {lo:.3g}-{hi:.3g}")
        if not combo_seen[i]:
            note.append("predicted IAP combination never predicted on training images")
        notes.append("; ".join(note))
    verdicts = pd.concat([new_rows.reset_index(drop=True),
                          pd.DataFrame({"verdict": np.where(judged["in_domain"], "in", "out"),
                                        "domain_reason": judged["domain_reason"],
                                        "header_unseen": judged["header_unseen"], "notes": notes}),
                          new_scores, pd.Series(combo_seen, name="combination_seen_in_train"),
                          new_pred.add_prefix("pred_")], axis=1)

    # label-free shift: predictions on new images vs predictions on in-domain (calibration) images
    shift_rows, dist_rows = [], []
    n_cal, n_new = len(cal_output), len(new_images)
    cal_table = table.iloc[tr_idx[held_out] if held_out is not None else cal_idx].reset_index(drop=True)
    cal_groups = (cal_table["patient_id"].astype(str).to_numpy() if "patient_id" in cal_table
                  and cal_table["patient_id"].nunique() >= 2 else np.arange(n_cal).astype(str))
    new_key = next((c for c in ("patient_id", "series_uid", "source") if c in new_rows and new_rows[c].notna().all()), None)
    n_new_groups = int(new_rows[new_key].nunique()) if new_key else n_new
    pairs = _group_draws(cal_groups, n_new_groups, rng, draws=200)
    for iap in cat_iaps:
        ref_dist = as_category_strings(cal_pred[iap]).value_counts(normalize=True)
        new_dist = new_cat[iap].value_counts(normalize=True)
        for v in sorted(set(new_dist.index) | set(ref_dist.index), key=str):
            dist_rows.append({"iap": iap, "value": v, "reference_share": float(ref_dist.get(v, 0.0)),
                              "new_share": float(new_dist.get(v, 0.0)), "seen_in_train": v in ref_values[iap]})
        tv = _total_variation(ref_dist, new_dist)
        floor = _floor(as_category_strings(cal_pred[iap]).to_numpy(), pairs, _tv_of)
        shift_rows.append({"iap": iap, "kind": "categorical", "measure": "total variation",
                           "share_new_unseen": float((~new_cat[iap].isin(ref_values[iap]) | (new_cat[iap] == "other")).mean()),
                           "most_common_new": new_dist.index[0], "its_reference_share": float(ref_dist.get(new_dist.index[0], 0.0)),
                           "distance": tv, "noise_floor": floor, "above_floor": bool(tv > floor)})
    for iap in cont_iaps:
        a = pd.to_numeric(cal_pred[cont_cols[iap]], errors="coerce").to_numpy(float)
        b = pd.to_numeric(new_pred[cont_cols[iap]], errors="coerce").to_numpy(float)
        lo, hi = ranges[iap]
        outside = (b < lo * (1 - _RANGE_TOLERANCE)) | (b > hi * (1 + _RANGE_TOLERANCE))
        ks, floor = _ks(a, b), _floor(a, pairs, _ks)
        shift_rows.append({"iap": iap, "kind": "continuous", "measure": "Kolmogorov-Smirnov",
                           "share_new_unseen": float(outside.mean()), "most_common_new": f"median {np.nanmedian(b):.3g}",
                           "its_reference_share": np.nan, "distance": ks, "noise_floor": floor,
                           "above_floor": bool(ks > floor)})
    mmd, floor = feature_shift(cal_feats, new_feats, pairs, rng)
    shift_rows.append({"iap": "image features", "kind": "features", "measure": "MMD^2",
                       "share_new_unseen": float((~judged["in_domain"]).mean()), "most_common_new": "",
                       "its_reference_share": np.nan, "distance": mmd, "noise_floor": floor,
                       "above_floor": bool(mmd > floor)})
    iap_shift = pd.DataFrame(shift_rows)
    distribution = pd.DataFrame(dist_rows)
    summary = {"n_new": int(n_new), "n_in": int((verdicts.verdict == "in").sum()),
               "n_out": int((verdicts.verdict == "out").sum()), "by_reason": reason_counts(judged),
               "threshold_note": threshold_note,
               "shift_above_floor": iap_shift.loc[iap_shift["above_floor"], "iap"].tolist(),
               "share_combination_seen": float(combo_seen.mean()), "n_reference": int(len(tr_idx)),
               "calibration": cal_name, "n_calibration": int(n_cal), "thresholds_widened": widened,
               "feature_score": "domain model" if domain is not None else feature_score,
               "quantile": quantile, "energy_available": "energy_score" in new_scores.columns,
               "n_skipped": int(len(skipped)), "engine": getattr(predictor, "engine_note", "")}
    result = CompareResult(verdicts=verdicts, iap_shift=iap_shift, distribution=distribution,
                           thresholds=thresholds, summary=summary, reference_scores=cal_scores,
                           series=series_summary(verdicts), out=Path(out) if out else None, skipped=skipped)
    if out is not None:
        _write_compare(result, new_scores)
    return result


def _parts(output: "PredictorOutput", n: int) -> tuple[pd.DataFrame, dict, np.ndarray, dict]:
    """Predicted values, head outputs, features and value columns of one forward pass."""
    feats = np.asarray(output.features, np.float64)
    if feats.ndim != 2 or len(feats) != n:
        raise SchemaMismatchError(f"the predictor's features have shape {feats.shape} for {n} images")
    from mridomain.iap.predictor import value_column

    cont_cols = {iap: value_column(iap, output.units.get(iap)) for iap in output.continuous}
    return output.table(1), head_outputs(output), feats, cont_cols


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
        ax.bar(x - 0.2, d.reference_share, width=0.4, label=f"{res.summary['calibration']} (predicted)")
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
            f"\n\nReference of the feature scores: {s['n_reference']} training slices; in-domain data: "
            f"{s['n_calibration']} {s['calibration']} slices. The verdict is predict's ({s['threshold_note']}); "
            f"the other scores' thresholds are the {s['quantile'] * 100:g}th percentile of the {s['calibration']} "
            "scores, bounded with 95% confidence." + ("" if s["energy_available"] else " Energy score unavailable: "
                                                     "the predictor gives no logits.")),
                tables=[("thresholds", res.thresholds)]),
        Section("Per-IAP shift", text="Label-free: predictions on the new images against predictions on the "
                "in-domain calibration images, so the model's own error is on both sides. distance: total variation "
                "(categorical IAPs), Kolmogorov-Smirnov statistic (TR/TE), MMD^2 of the image features; noise_floor: "
                "the 95th percentile of that distance between two in-domain samples of the same sizes (the "
                "calibration images' patients resampled whole, as many as each set has); above_floor: a shift beyond chance. share_new_unseen: share of new "
                "images whose predicted value never occurs in training (TR/TE: more than 2% outside the range "
                "predicted on training images; image features: share out of domain).",
                tables=[res.iap_shift], figures=[("value shares, train vs new", dist_png)]),
        Section("Out-of-distribution scores", figures=[("score histograms with thresholds", score_png)]),
        Section("Verdicts per series", text="A series is out of domain when at least half of its slices are.", tables=[colored_table(res.series, "verdict")] if len(res.series) else []),
        Section("Verdicts (first 300 images)", tables=[colored_table(res.verdicts.drop(
            columns=[c for c in res.verdicts.columns if c.startswith("pred_")]).head(300), "verdict")]),
    ])
