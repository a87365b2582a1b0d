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
from mridomain.iap.cache import cache_iaps, open_cache, split_indices
from mridomain.iap.labels import IGNORE_INDEX, OTHER, LabelEncoder

RELATIVE_TOLERANCE = 0.02   # Fig. 2: TE / TR count as correct within 2 % relative error


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

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, path: str | Path | None = None) -> str:
        return dump_json(self.to_dict(), path)

    def row(self, iap: str) -> dict[str, Any]:
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

        lines = [f"Table 1 ({self.split} split: {self.n_slices} slices, {self.n_series} series)", "",
                 "| # | IAP | classes | N | top-1 % | top-2 % | majority % | series top-1 % (N) |",
                 "|---|---|---|---|---|---|---|---|"]
        cat = [r for r in self.rows if r["kind"] == "categorical"]
        cont = [r for r in self.rows if r["kind"] == "continuous"]
        for i, r in enumerate(cat, 1):
            lines.append(f"| {i} | {r['iap']} | {r['n_classes']} | {r['n']} | {pct(r['top1'])} | "
                         f"{pct(r['top2'])} | {pct(r['baseline_top1'])} | {pct(r['series_top1'])} "
                         f"({r['series_n']}) |")
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
                      "class; series = slice probabilities averaged over each series."]
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
        rows.append({"iap": h.name, "kind": "categorical", "unit": h.unit, "n": n,
                     "n_classes": h.n_seen_classes, "top1": top1, "top2": top2, "baseline_top1": baseline,
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


def plot_confusion_matrices(probs: dict[str, np.ndarray], cat_targets: np.ndarray, encoder: LabelEncoder,
                            path: str | Path) -> None:
    """One grid figure: a row-normalized confusion matrix per categorical IAP (counts written in)."""
    from matplotlib.figure import Figure
    from sklearn.metrics import confusion_matrix

    heads = encoder.categorical
    if not heads:
        return
    ncol = min(3, len(heads))
    nrow = int(np.ceil(len(heads) / ncol))
    fig = Figure(figsize=(5.2 * ncol, 4.8 * nrow))
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for ax, (j, h) in zip(axes.flat, enumerate(heads)):
        t = cat_targets[:, j]
        m = t != IGNORE_INDEX
        pred = probs[h.name].argmax(1)
        # classes that occur in truth or prediction; the others would only add empty rows
        used = np.unique(np.concatenate([t[m], pred[m]])) if m.any() else np.arange(0)
        cm = confusion_matrix(t[m], pred[m], labels=used) if m.any() else np.zeros((0, 0))
        norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        names = [h.classes[i][:14] for i in used]
        ax.set_xticks(range(len(used)), names, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(used)), names, fontsize=7)
        if len(used) <= 12:
            for a in range(len(used)):
                for b in range(len(used)):
                    if cm[a, b]:
                        ax.text(b, a, str(cm[a, b]), ha="center", va="center", fontsize=7,
                                color="white" if norm[a, b] > 0.5 else "black")
        ax.set(title=f"{h.name} (N={int(m.sum())})", xlabel="predicted", ylabel="true")
    for ax in list(axes.flat)[len(heads):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


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
    from mridomain.iap.prediction import IAPPredictor

    run = Path(run)
    predictor = IAPPredictor.load(run, device=device)
    encoder, preprocess = predictor.encoder, predictor.preprocess
    cache = open_cache(cache if cache is not None else preprocess.get("source_cache"))
    cache_path = str(getattr(cache, "path", ""))
    encoder.check_schema(cache_iaps(cache), where=f"{cache_path}/meta.json", mine=f"{run}/labels.json")
    notes = []
    norm = cache.meta.get("normalization")
    if norm and preprocess.get("normalization") and norm != preprocess["normalization"]:
        notes.append(f"the cache's normalization {norm} differs from the run's {preprocess['normalization']}")
        warnings.warn(notes[-1])
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
    plot_confusion_matrices(probs, cat_t, encoder, out / "confusion_matrices.png")
    (out / "report.md").write_text(report.to_markdown() + "\n")
    report.to_json(out / "report.json")
    if html:
        evaluation_report_html(out, out / "report.html")
    return report


def evaluation_report_html(report: str | Path | Mapping[str, Any], out: str | Path,
                           title: str = "IAP evaluation") -> Path:
    """Turn an evaluation output into one self-contained HTML file.

    ``report`` is either the folder ``mridomain evaluate -o`` wrote (every ``*.csv`` becomes a
    table, every ``*.png`` a figure, ``*.md``/``*.json``/``*.txt`` are shown as text) or a dict
    mapping names to DataFrames, matplotlib figures, PNG paths, or scalars (scalars are gathered
    in one summary table).

    Args:
        report: evaluation folder or dict.
        out: HTML file to write, or a folder (then ``<out>/report.html``).
        title: page heading.
    """
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        out = out / "report.html"
    sections: list[Section] = []
    if isinstance(report, (str, Path)):
        folder = Path(report)
        if not folder.is_dir():
            raise EmptyInputError(folder, "evaluation report folder does not exist")
        texts = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".md", ".txt", ".json"))
        for p in texts:
            txt = p.read_text(encoding="utf-8", errors="replace")
            if len(txt) > 20000:
                txt = txt[:20000] + "\n[... truncated]"
            sections.append(Section(p.name, html=f"<pre>{html_lib.escape(txt)}</pre>"))
        for p in sorted(folder.glob("*.csv")):
            df = pd.read_csv(p)
            sections.append(Section(p.name, tables=[df.head(500)]))
        pngs = sorted(folder.glob("*.png"))
        if pngs:
            sections.append(Section("Figures", figures=[(p.name, p) for p in pngs]))
    else:
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
    if not sections:
        raise EmptyInputError(Path(str(report)) if not isinstance(report, Mapping) else Path("<dict>"),
                              "nothing to report (no csv, png, md or json found)")
    return write_html_report(out, title, sections)


