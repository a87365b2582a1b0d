"""Table 1 of the paper for every IAP, with honest denominators, baselines and per-series accuracy.

Denominators are the number of slices that carry a label for that IAP (the reference code divided
by batches x 64, which is wrong whenever the last batch is short or labels are missing).
Per-series results average the slice softmax probabilities (continuous: slice predictions) over
each series before taking the argmax: the answer a user wants for a whole volume.
"""
from __future__ import annotations

import html as html_lib
import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from mridomain.engine.checkpoint import dump_json
from mridomain.errors import EmptyInputError
from mridomain.report import Section, write_html_report
from mridomain.statistics import wilson_interval
from mridomain.iap.cache import cache_iaps, open_cache, split_indices
from mridomain.iap.calibration import expected_calibration_error, plot_reliability, reliability_table, softmax_t
from mridomain.iap.labels import IGNORE_INDEX, OTHER, LabelEncoder

RELATIVE_TOLERANCE = 0.02   # Fig. 2: TE / TR count as correct within 2 % relative error
SMALL_SPLIT_SERIES = 30     # below this many series a report says its intervals are wide


# ---- metric functions (pure numpy, tested against hand calculations) ---------------------------

def topk_accuracy(probs: np.ndarray, targets: np.ndarray, k: int = 1) -> tuple[float, int]:
    """Fraction of labelled rows whose true class is among the k most probable; and that count.

    Rows with ``targets == IGNORE_INDEX`` (missing label) are left out of both numerator and
    denominator. Returns (nan, 0) when no row is labelled.
    """
    targets = np.asarray(targets)
    mask = targets != IGNORE_INDEX
    n = int(mask.sum())
    if n == 0:
        return float("nan"), 0
    p = np.asarray(probs)[mask]
    t = targets[mask]
    # ties broken towards the lower class index, like argmax
    topk = np.argsort(-p, axis=1, kind="stable")[:, :k]
    return float((topk == t[:, None]).any(axis=1).mean()), n


def regression_metrics(pred: np.ndarray, truth: np.ndarray, tol: float = RELATIVE_TOLERANCE) -> dict[str, float]:
    """MSE, MAE (in the IAP's unit) and fraction within ``tol`` relative error, over finite truths."""
    pred, truth = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    m = np.isfinite(truth)
    n = int(m.sum())
    if n == 0:
        return {"n": 0, "mse": float("nan"), "mae": float("nan"), "within": float("nan")}
    d = pred[m] - truth[m]
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(d) / np.abs(truth[m])
    return {"n": n, "mse": float(np.mean(d ** 2)), "mae": float(np.mean(np.abs(d))),
            "within": float(np.mean(rel < tol))}


def aggregate_by_group(values: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values`` rows per group, groups in sorted key order: (group keys, means)."""
    groups = np.asarray(groups)
    keys, inverse = np.unique(groups, return_inverse=True)
    values = np.asarray(values, dtype=np.float64)
    flat = values.reshape(len(values), -1)
    sums = np.zeros((len(keys), flat.shape[1]))
    np.add.at(sums, inverse, flat)
    counts = np.bincount(inverse, minlength=len(keys)).astype(np.float64)
    means = sums / counts[:, None]
    return keys, means.reshape((len(keys),) + values.shape[1:])


def series_targets(targets: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per group: the most frequent labelled class (IGNORE_INDEX when no slice is labelled)."""
    groups = np.asarray(groups)
    keys = np.unique(groups)
    out = np.full(len(keys), IGNORE_INDEX, dtype=np.int64)
    for i, g in enumerate(keys):
        t = targets[(groups == g) & (targets != IGNORE_INDEX)]
        if len(t):
            vals, counts = np.unique(t, return_counts=True)
            out[i] = vals[np.argmax(counts)]
    return keys, out


def series_truth_continuous(truth: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Per group mean of the finite truths (NaN when none)."""
    groups = np.asarray(groups)
    keys = np.unique(groups)
    out = np.full(len(keys), np.nan)
    for i, g in enumerate(keys):
        t = truth[(groups == g) & np.isfinite(truth)]
        if len(t):
            out[i] = t.mean()
    return out


# ---- the report ------------------------------------------------------------------------------

@dataclass
class EvalReport:
    """Table 1 (per IAP) plus per-series results and majority-class baselines."""

    split: str
    n_slices: int
    n_series: int
    rows: list[dict[str, Any]]
    run: str = ""
    cache: str = ""
    out: str | None = None
    notes: list[str] = field(default_factory=list)
    in_domain: float | None = None      # share of the split's slices inside the training domain

    def to_frame(self) -> pd.DataFrame:
        """Table 1 as a DataFrame: one row per IAP."""
        return pd.DataFrame(self.rows)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values (``report.json``)."""
        return asdict(self)

    def to_json(self, path: str | Path | None = None) -> str:
        """The report written as JSON to ``path``."""
        return dump_json(self.to_dict(), path)

    def row(self, iap: str) -> dict[str, Any]:
        """The Table 1 row of one IAP."""
        for r in self.rows:
            if r["iap"] == iap:
                return r
        raise KeyError(iap)

    def to_markdown(self) -> str:
        """Table 1 as markdown: categorical rows, then continuous rows."""
        def pct(v: Any) -> str:
            return "N/A" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.2f}"

        def num(v: Any) -> str:
            return "N/A" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.4g}"

        cat = [r for r in self.rows if r["kind"] == "categorical"]
        cont = [r for r in self.rows if r["kind"] == "continuous"]
        joint = any("joint_top1" in r for r in cat)
        lines = [f"Table 1 ({self.split} split: {self.n_slices} slices, {self.n_series} series)", "",
                 "| # | IAP | classes | N | top-1 % | top-2 % | majority % | series top-1 % (N) |"
                 + (" joint top-1 % |" if joint else ""),
                 "|---|---|---|---|---|---|---|---|" + ("---|" if joint else "")]
        for i, r in enumerate(cat, 1):
            lines.append(f"| {i} | {r['iap']} | {r['n_classes']} | {r['n']} | {pct(r['top1'])} | "
                         f"{pct(r['top2'])} | {pct(r['baseline_top1'])} | {pct(r['series_top1'])} "
                         f"({r['series_n']}) |" + (f" {pct(r.get('joint_top1'))} |" if joint else ""))
        if cont:
            lines += ["", "| # | IAP | unit | N | MSE | MAE | within 2 % | mean-predictor MSE | "
                          "series MSE | series within 2 % (N) |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            for i, r in enumerate(cont, len(cat) + 1):
                unit = r.get("unit") or ""
                lines.append(f"| {i} | {r['iap']} | {unit} | {r['n']} | {num(r['mse'])} | {num(r['mae'])} | "
                             f"{pct(r['within2'])} | {num(r['baseline_mse'])} | {num(r['series_mse'])} | "
                             f"{pct(r['series_within2'])} ({r['series_n']}) |")
        lines += ["", "MSE / MAE in the IAP's unit (squared for MSE). top-2 only where more than 2 classes "
                      "were seen in training. majority = always predicting the most frequent training "
                      "class; series = slice probabilities averaged over each series."
                  + (" joint = the slice's most probable combination of the joint IAPs seen in training "
                     "(combinations.json; `predict` reports it as joint_<iap>)." if joint else "")]
        lines += [f"Note: {n}" for n in self.notes]
        return "\n".join(lines)


def compute_report(probs: dict[str, np.ndarray], table: pd.DataFrame, encoder: LabelEncoder,
                   split: str = "test", series_column: str = "series_uid") -> EvalReport:
    """Metrics from predictions ({categorical iap: probabilities, continuous iap: values}, as
    :class:`~mridomain.iap.predictor.PredictorOutput` holds them) against ``table``'s labels.

    Separate from :func:`evaluate` so it can be checked on a made-up prediction set.
    """
    cat_t, _ = encoder.encode(table)
    truth = encoder.truth_units(table)
    groups = table[series_column].astype(str).to_numpy() if series_column in table else \
        np.arange(len(table)).astype(str)
    rows: list[dict[str, Any]] = []
    for j, h in enumerate(encoder.categorical):
        p, t = probs[h.name], cat_t[:, j]
        top1, n = topk_accuracy(p, t, 1)
        more = h.n_seen_classes > 2
        top2 = topk_accuracy(p, t, 2)[0] if more else float("nan")
        seen = np.array(h.counts[:-1]) if h.counts else np.zeros(0)
        majority = int(np.argmax(seen)) if len(seen) and seen.sum() > 0 else 0
        labelled = t != IGNORE_INDEX
        baseline = float((t[labelled] == majority).mean()) if n else float("nan")
        _, sp = aggregate_by_group(p, groups)
        _, st = series_targets(t, groups)
        s_top1, s_n = topk_accuracy(sp, st, 1)
        unseen = int((t == h.classes.index(OTHER)).sum())
        lo, hi = wilson_interval(int(round(top1 * n)), n) if n else (float("nan"), float("nan"))
        rows.append({"iap": h.name, "kind": "categorical", "unit": h.unit, "n": n,
                     "n_classes": h.n_seen_classes, "top1": top1, "top1_low": lo, "top1_high": hi,
                     "top2": top2, "baseline_top1": baseline,
                     "majority_class": h.classes[majority] if h.n_seen_classes else None,
                     "series_top1": s_top1, "series_n": s_n, "n_unseen_values": unseen})
    for j, h in enumerate(encoder.continuous):
        pred, tr = probs[h.name], truth[:, j]
        m = regression_metrics(pred, tr)
        base = regression_metrics(np.full_like(tr, h.mean), tr)
        _, sp = aggregate_by_group(pred, groups)
        st = series_truth_continuous(tr, groups)
        sm = regression_metrics(sp, st)
        rows.append({"iap": h.name, "kind": "continuous", "unit": h.unit, "n": m["n"], "mse": m["mse"],
                     "mae": m["mae"], "within2": m["within"], "baseline_mse": base["mse"],
                     "series_mse": sm["mse"], "series_within2": sm["within"], "series_n": sm["n"]})
    return EvalReport(split=split, n_slices=len(table), n_series=len(np.unique(groups)), rows=rows)


def joint_top1(joint: pd.DataFrame, cat_targets: np.ndarray, encoder: LabelEncoder) -> dict[str, float]:
    """Top-1 accuracy of the joint answer (the ``joint_<iap>`` columns of
    :func:`~mridomain.iap.decoding.joint_decode`) per categorical IAP it covers, over that IAP's
    labelled slices (``cat_targets``: the encoder's class indices, IGNORE_INDEX where unlabelled).

    >>> enc = LabelEncoder.fit(pd.DataFrame({"flip_angle": ["10", "12", "10"]}), [{"name": "flip_angle"}], split=None)
    >>> truth, _ = enc.encode(pd.DataFrame({"flip_angle": ["10", "12", None]}))
    >>> joint_top1(pd.DataFrame({"joint_flip_angle": ["10", "10", "12"]}), truth, enc)
    {'flip_angle': 0.5}
    """
    accuracy: dict[str, float] = {}
    for j, h in enumerate(encoder.categorical):
        column = f"joint_{h.name}"
        labelled = cat_targets[:, j] != IGNORE_INDEX
        if column not in joint or not labelled.any():
            continue
        index = {c: i for i, c in enumerate(h.classes)}
        answer = np.array([index.get(str(v), -1) for v in joint[column]])
        accuracy[h.name] = float((answer[labelled] == cat_targets[labelled, j]).mean())
    return accuracy


def plot_regression_scatter(pred: dict[str, np.ndarray], truth: np.ndarray, encoder: LabelEncoder,
                            path: str | Path) -> None:
    """Predicted against true value of each continuous IAP (TR, TE), the identity and +-2 % lines."""
    from mridomain.report import figure_grid

    heads = encoder.continuous
    if not heads:
        return
    fig, axes = figure_grid(len(heads), len(heads), 4.2, 4.0)
    for ax, (j, h) in zip(axes, enumerate(heads)):
        t, p = truth[:, j], np.asarray(pred[h.name], float)
        m = np.isfinite(t) & np.isfinite(p)
        ax.scatter(t[m], p[m], s=8, alpha=0.5)
        if m.any():
            lo, hi = float(min(t[m].min(), p[m].min())), float(max(t[m].max(), p[m].max()))
            line = np.array([lo, hi])
            ax.plot(line, line, color="k", linewidth=1, label="identity")
            for f in (1 - RELATIVE_TOLERANCE, 1 + RELATIVE_TOLERANCE):
                ax.plot(line, line * f, color="#999", linewidth=0.8, linestyle="--")
        unit = f" ({h.unit})" if h.unit else ""
        ax.set(xlabel=f"true {h.name}{unit}", ylabel=f"predicted {h.name}{unit}", title=f"{h.name} (N={int(m.sum())})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def confusion_panel_inches(n_classes: int) -> float:
    """Side of one confusion-matrix panel: about a third of an inch per class (a 20 x 20 matrix
    gets 6.8 in, its 9-pt labels and counts readable at the saved 90 dpi) plus room for labels."""
    return 3.2 + 0.34 * n_classes


def plot_confusion_matrices(probs: dict[str, np.ndarray], cat_targets: np.ndarray, encoder: LabelEncoder,
                            path: str | Path, max_width: float = 13.0) -> None:
    """One figure: a row-normalized confusion matrix per categorical IAP, counts written in.

    Each panel is sized by its class count (:func:`confusion_panel_inches`) and panels fill rows
    of at most ``max_width`` inches in head order, so a 2-class head stays small and a 20-class
    one gets the room its labels need; fonts are the same size in every panel. 13 in at 90 dpi is
    the width of a report's column (1,180 px), where the figure is then shown unscaled.
    """
    from matplotlib.figure import Figure
    from sklearn.metrics import confusion_matrix

    from mridomain.report import wrap_label

    heads = encoder.categorical
    if not heads:
        return
    panels = []
    for j, h in enumerate(heads):
        t = cat_targets[:, j]
        m = t != IGNORE_INDEX
        pred = probs[h.name].argmax(1)
        # classes that occur in truth or prediction; the others would only add empty rows
        used = np.unique(np.concatenate([t[m], pred[m]])) if m.any() else np.arange(0)
        cm = confusion_matrix(t[m], pred[m], labels=used) if m.any() else np.zeros((0, 0), int)
        panels.append((h, used, cm, int(m.sum()), confusion_panel_inches(len(used))))
    rows: list[list] = [[]]
    for panel in panels:
        if rows[-1] and sum(p[-1] for p in rows[-1]) + panel[-1] > max_width:
            rows.append([])
        rows[-1].append(panel)
    width = max(sum(p[-1] for p in row) for row in rows)
    heights = [max(p[-1] for p in row) + 0.7 for row in rows]      # + title and axis label
    fig = Figure(figsize=(width, sum(heights)), layout="constrained")
    subfigs = fig.subfigures(len(rows), 1, height_ratios=heights, squeeze=False)[:, 0]
    for subfig, row in zip(subfigs, rows):
        sizes = [p[-1] for p in row]
        spare = width - sum(sizes)
        axes = subfig.subplots(1, len(row) + (spare > 0.1), squeeze=False,
                               gridspec_kw={"width_ratios": sizes + ([spare] if spare > 0.1 else [])})[0]
        if spare > 0.1:
            axes[-1].axis("off")
        for ax, (h, used, cm, n, _) in zip(axes, row):
            norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
            ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
            names = [wrap_label(h.classes[i]) for i in used]
            ax.set_xticks(range(len(used)), names, rotation=60, ha="right", fontsize=9)
            ax.set_yticks(range(len(used)), names, fontsize=9)
            for a in range(len(used)):
                for b in range(len(used)):
                    if cm[a, b]:
                        ax.text(b, a, str(cm[a, b]), ha="center", va="center", fontsize=8,
                                color="white" if norm[a, b] > 0.5 else "black")
            ax.set_title(f"{h.name} (N={n}, {len(used)} classes)", fontsize=11)
            ax.set_xlabel("predicted", fontsize=9)
            ax.set_ylabel("true", fontsize=9)
    fig.savefig(path, dpi=90, bbox_inches="tight", pad_inches=0.15)


def evaluate(run: str | Path, cache: Any = None, split: str = "test", out: str | Path | None = None,
             progress: bool = True, device: str | None = None, batch_size: int | None = None,
             html: bool = True) -> EvalReport:
    """Evaluate a run on a cache split: Table 1, baselines, per-series accuracy, confusion matrices.

    Args:
        run: run folder from :func:`train`.
        cache: cache to evaluate on (default: the cache the run was trained on).
        split: "train" | "val" | "test" | "all".
        out: folder for report.md, report.json, confusion_matrices.png and report.html (default
            ``run/eval_<split>``).
        html: also write the self-contained ``report.html``.
    """
    from mridomain.iap.run import IAPRun

    run = Path(run)
    predictor = IAPRun.load(run, device=device)
    encoder, preprocess = predictor.encoder, predictor.preprocess
    cache = open_cache(cache if cache is not None else preprocess.get("source_cache"))
    cache_path = str(getattr(cache, "path", ""))
    encoder.check_schema(cache_iaps(cache), where=f"{cache_path}/meta.json", mine=f"{run}/labels.json")
    notes = []
    norm = cache.meta.get("normalization")
    if norm and preprocess.get("normalization") and norm != preprocess["normalization"]:
        notes.append(f"the cache's normalization {norm} differs from the run's {preprocess['normalization']}")
        warnings.warn(notes[-1], stacklevel=2)
    idx = split_indices(cache, split)
    if len(idx) == 0:
        raise EmptyInputError(cache_path, f"no slices in split {split!r}")
    output = predictor.forward(cache.images, indices=idx, batch_size=batch_size, progress=progress,
                               desc=f"evaluate {split}")
    probs = {**output.probabilities, **output.continuous}
    table = cache.table.iloc[idx].reset_index(drop=True)
    report = compute_report(probs, table, encoder, split=split)
    report.run, report.cache, report.notes = str(run), cache_path, notes
    out = Path(out) if out is not None else run / f"eval_{split}"
    out.mkdir(parents=True, exist_ok=True)
    report.out = str(out)
    cat_t, _ = encoder.encode(table)
    if predictor.combinations is not None and not predictor.combinations.empty:
        from mridomain.iap.decoding import joint_decode

        # the consistent answer predict reports next to the heads', scored here so a user sees
        # whether it beats the heads on held-out data before relying on it
        for name, accuracy in joint_top1(joint_decode(output, predictor.combinations), cat_t, encoder).items():
            report.row(name)["joint_top1"] = accuracy
    reliability = {}
    for j, h in enumerate(encoder.categorical):
        raw = softmax_t(output.logits[h.name])
        row = report.row(h.name)
        row["temperature"] = predictor.temperatures.get(h.name, 1.0)
        row["ece_raw"] = expected_calibration_error(raw, cat_t[:, j])
        row["ece"] = expected_calibration_error(output.probabilities[h.name], cat_t[:, j])
        reliability[h.name] = (reliability_table(raw, cat_t[:, j]),
                               reliability_table(output.probabilities[h.name], cat_t[:, j]))
    if not predictor.temperatures:
        report.notes.append("the run has no calibration.json (trained with --no-calibrate, or before calibration "
                            "existed): probabilities are the raw softmax; `mridomain calibrate RUN` adds it")
    if output.in_domain is not None:
        report.in_domain = float(np.mean(output.in_domain))
        report.notes.append(f"{100 * report.in_domain:.1f}% of the {split} slices are inside the training "
                            f"domain ({predictor.domain.note})")
    if report.n_series < SMALL_SPLIT_SERIES:
        report.notes.append(f"small {split} split: {report.n_series} series; the 95% intervals are wide")
    plot_confusion_matrices(probs, cat_t, encoder, out / "confusion_matrices.png")
    plot_reliability(reliability, out / "reliability.png", f"Reliability on the {split} split")
    plot_regression_scatter(output.continuous, encoder.truth_units(table), encoder, out / "tr_te_scatter.png")
    (out / "report.md").write_text(report.to_markdown() + "\n")
    report.to_json(out / "report.json")
    if html:
        evaluation_report_html(out, out / "report.html")
    return report


def _pct(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{100 * v:.1f}"


def table1_frames(report: EvalReport) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 1 as two display tables: categorical IAPs (top-1 with its Wilson 95 % interval,
    top-2, majority baseline, per-series top-1, calibration error raw -> calibrated) and
    continuous IAPs (MSE, MAE, within 2 %, mean-predictor MSE, per-series)."""
    cat, cont = [], []
    for r in report.rows:
        if r["kind"] == "categorical":
            ci = (f"{_pct(r.get('top1'))} [{_pct(r.get('top1_low'))}, {_pct(r.get('top1_high'))}]"
                  if r.get("top1_low") is not None else _pct(r.get("top1")))
            ece = (f"{_pct(r['ece_raw'])} -> {_pct(r['ece'])}" if "ece" in r else "")
            cat.append({"IAP": r["iap"], "classes": r["n_classes"], "N": r["n"], "top-1 % [95% CI]": ci,
                        "top-2 %": _pct(r.get("top2")), "majority %": _pct(r.get("baseline_top1")),
                        "series top-1 % (N)": f"{_pct(r.get('series_top1'))} ({r.get('series_n')})",
                        "joint top-1 %": _pct(r.get("joint_top1")),
                        "ECE % raw -> calibrated": ece, "unseen values": r.get("n_unseen_values", 0)})
        else:
            unit = r.get("unit") or ""
            cont.append({"IAP": f"{r['iap']} ({unit})" if unit else r["iap"], "N": r["n"],
                         "MSE": f"{r['mse']:.4g}", "MAE": f"{r['mae']:.4g}", "within 2 %": _pct(r.get("within2")),
                         "mean-predictor MSE": f"{r['baseline_mse']:.4g}",
                         "series within 2 % (N)": f"{_pct(r.get('series_within2'))} ({r.get('series_n')})"})
    return pd.DataFrame(cat), pd.DataFrame(cont)


def evaluation_report_html(report: EvalReport | str | Path | Mapping[str, Any], out: str | Path,
                           title: str = "IAP evaluation") -> Path:
    """One self-contained HTML file for an evaluation.

    ``report`` is an :class:`EvalReport`, or the folder ``mridomain evaluate`` wrote (its
    ``report.json`` becomes Table 1 with Wilson 95 % intervals and calibration errors; the
    confusion matrices, reliability diagrams and TR/TE scatter plots become figures; any other
    ``*.csv`` a table), or a dict mapping names to DataFrames, figures, PNG paths or scalars.

    Args:
        report: evaluation, its folder, or a dict.
        out: HTML file to write, or a folder (then ``<out>/report.html``).
        title: page heading.
    """
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        out = out / "report.html"
    sections: list[Section] = []
    folder = None
    if isinstance(report, (str, Path)):
        folder = Path(report)
        if not folder.is_dir():
            raise EmptyInputError(folder, "evaluation report folder does not exist")
        if (folder / "report.json").exists():
            from mridomain.files import read_json

            data = read_json(folder / "report.json")
            report = EvalReport(**{k: v for k, v in data.items() if k in EvalReport.__dataclass_fields__})
    if isinstance(report, EvalReport):
        cat, cont = table1_frames(report)
        text = (f"{report.split} split: {report.n_slices} slices in {report.n_series} series. Run {report.run}, "
                f"cache {report.cache}. top-1 intervals are Wilson 95% intervals over slices (slices of one "
                "series are not independent, so the true uncertainty is larger); ECE: expected calibration "
                "error (15 bins) of the raw softmax and after the run's temperature scaling.")
        notes = " ".join(report.notes) if report.notes else None
        sections.append(Section("Table 1: categorical IAPs", text=text, tables=[cat], note=notes))
        if len(cont):
            sections.append(Section("Table 1: continuous IAPs", text="MSE in the unit squared; within 2 %: "
                                    "relative error below 2 % (the paper's Fig. 2 criterion).", tables=[cont]))
    elif isinstance(report, Mapping):
        scalars: dict[str, Any] = {}
        for key, val in report.items():
            if isinstance(val, (pd.DataFrame, pd.Series)):
                sections.append(Section(str(key), tables=[val]))
            elif hasattr(val, "savefig") or (isinstance(val, (str, Path)) and str(val).endswith(".png")):
                sections.append(Section(str(key), figures=[val]))
            elif isinstance(val, (dict, list)):
                sections.append(Section(str(key), html=f"<pre>{html_lib.escape(json.dumps(val, indent=1, default=str))}</pre>"))
            else:
                scalars[str(key)] = val
        if scalars:
            sections.insert(0, Section("Summary", tables=[scalars]))
    if folder is not None:
        for p in sorted(folder.glob("*.csv")):
            sections.append(Section(p.name, tables=[pd.read_csv(p).head(500)]))
        captions = {"confusion_matrices.png": "Confusion matrices: rows are the true class, shade the share of it "
                                              "predicted as each column (row-normalized), numbers the counts",
                    "reliability.png": "Reliability: accuracy against confidence, raw and calibrated",
                    "tr_te_scatter.png": "Predicted against true TR / TE (dashed: +-2 %)"}
        pngs = sorted(folder.glob("*.png"))
        if pngs:
            sections.append(Section("Figures", figures=[(captions.get(p.name, p.name), p) for p in pngs]))
    if not sections:
        raise EmptyInputError(Path(str(report)) if not isinstance(report, Mapping) else Path("<dict>"),
                              "nothing to report (no report.json, csv or png found)")
    return write_html_report(out, title, sections)
