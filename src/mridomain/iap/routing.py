"""Domain routing (paper §5.2, Table 2): send each image to the downstream model of its predicted
acquisition domain, and the end-to-end experiment that reproduces Table 2 on a slice cache.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd

from mridomain.iap._analysis_common import as_category_strings, open_cache
from mridomain.data.kspace import split_view
from mridomain.statistics import wilson_interval
from mridomain.errors import EmptyInputError, InvalidArgumentError, SchemaMismatchError
from mridomain.report import Section, df_to_markdown, figure_to_png, write_html_report

if TYPE_CHECKING:
    from mridomain.iap.predictor import PredictorOutput

__all__ = ["route", "parse_model_specs", "predicted_domains", "evaluate_routing", "RoutingExperiment",
           "run_routing_experiment", "model_outputs"]


# ------------------------------------------------------------------------------ model adapters
def model_outputs(model: Any, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(labels, probabilities or None) of a downstream model.

    Accepts objects with ``predict`` (and optionally ``predict_proba``) or plain callables that
    return labels. A ``predict_proba`` with two columns is read as [P(0), P(1)].
    """
    proba = None
    if hasattr(model, "predict_proba"):
        proba = np.asarray(model.predict_proba(images))
        if proba.ndim == 2 and proba.shape[1] == 2:
            proba = proba[:, 1]
    if hasattr(model, "predict"):
        labels = np.asarray(model.predict(images))
    elif callable(model):
        labels = np.asarray(model(images))
    elif proba is not None:
        labels = (proba >= 0.5).astype(np.int64)
    else:
        raise SchemaMismatchError(f"model of type {type(model).__name__} has neither predict nor __call__")
    if labels.shape[0] != len(images):
        raise SchemaMismatchError(f"model returned {labels.shape[0]} predictions for {len(images)} images")
    return labels, proba


def _load_model(model: Any) -> Any:
    """A model object as is; a folder path loads a saved TumorClassifier."""
    if isinstance(model, (str, Path)):
        from mridomain.iap.tumor_classifier import TumorClassifier

        return TumorClassifier.load(model)
    return model


def _match_key(value: str, keys: Sequence[str]) -> str | None:
    if value in keys:
        return value
    low = {str(k).casefold(): k for k in keys}
    return low.get(str(value).casefold())


def predicted_domains(output: "PredictorOutput", key_iap: str, keys: Sequence[str], unknown: str = "error",
                      default: str | None = None) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Map each slice's predicted ``key_iap`` (from one forward pass) to one of ``keys``.

    Returns (predicted value, chosen key, how: "predicted" | "most_likely" | "default").

    Values with no key go to ``default`` when given; else with ``unknown="most_likely"`` to the
    key the predictor finds most probable (its probabilities restricted to the keys); else a
    one-line :class:`SchemaMismatchError` names the values and the keys.
    """
    if unknown not in ("error", "most_likely"):
        raise InvalidArgumentError(f"unknown={unknown!r}: choose error or most_likely")
    if key_iap not in output.probabilities:
        raise InvalidArgumentError(f"key IAP {key_iap!r}: the IAP predictor has no categorical output of "
                                   f"that name (has: {', '.join(output.categorical_iaps)})")
    values = as_category_strings(pd.Series(output.predicted(key_iap)))
    chosen = values.map(lambda v: _match_key(v, keys))
    how = pd.Series(np.where(chosen.notna(), "predicted", ""), dtype=object)
    missing = chosen.isna().to_numpy()
    if missing.any():
        if default is not None:
            if _match_key(default, keys) is None:
                raise InvalidArgumentError(f"default model {default!r} is not among the models ({', '.join(keys)})")
            chosen[missing] = _match_key(default, keys)
            how[missing] = "default"
        elif unknown == "most_likely":
            probs, vocab = output.probabilities[key_iap][missing], list(output.classes[key_iap])
            cols = [(k, vocab.index(m)) for k in keys for m in [_match_key(k, vocab)] if m is not None]
            if not cols:
                raise InvalidArgumentError(f"none of the models ({', '.join(keys)}) is a value the predictor knows for {key_iap}")
            best = np.argmax(probs[:, [c for _, c in cols]], axis=1)
            chosen[missing] = [cols[b][0] for b in best]
            how[missing] = "most_likely"
        else:
            bad = sorted(set(values[missing]))
            raise SchemaMismatchError(
                f"predicted {key_iap} value(s) {', '.join(map(repr, bad))} for {int(missing.sum())} image(s) have "
                f"no model (models for: {', '.join(map(str, keys))}); pass default= or unknown='most_likely'")
    return values, chosen.astype(object), how


# ------------------------------------------------------------------------------------ route
def parse_model_specs(specs: Sequence[str]) -> dict[str, str]:
    """``["GE=models/ge", "SIEMENS=models/siemens"]`` -> ``{"GE": "models/ge", ...}``."""
    bad = [m for m in specs if "=" not in m or not m.split("=", 1)[0] or not m.split("=", 1)[1]]
    if bad or not specs:
        raise InvalidArgumentError(f"models take VALUE=FOLDER, got {list(specs)}")
    return dict(m.split("=", 1) for m in specs)


def route(images_or_paths: np.ndarray | Sequence[str | Path], iap_predictor: Any,
          models: Mapping[str, Any], key_iap: str = "manufacturer", default: str | None = None,
          unknown: str = "error", progress: bool = True, out: str | Path | None = None,
          abstain: bool = False, rule: Any = None, engine: str = "auto") -> pd.DataFrame:
    """Send each image to the downstream model keyed by its predicted IAP value.

    Args:
        images_or_paths: (N,H,W) array preprocessed like the IAP model's training cache, or image
            files / series folders (read and preprocessed like the predictor; unreadable ones are
            skipped and listed in ``result.attrs["skipped"]``).
        iap_predictor: ``IAPPredictor`` or its run folder.
        models: IAP value -> model (``predict``/``predict_proba`` object, callable, or the folder of
            a saved :class:`TumorClassifier`), e.g. ``{"GE": ge_model, "SIEMENS": "runs/siemens"}``;
            keys match case-insensitively.
        key_iap: IAP that decides the domain.
        default: model key for images whose predicted value has no model.
        unknown: without ``default``: "error" (raise) or "most_likely" (the most probable value
            among those that have a model).
        progress: show a progress bar while reading paths.
        out: also write the table there as CSV (and the skipped inputs beside it).
        abstain: images outside the IAP run's training domain go to no model (``routed_by`` =
            "out_of_domain"): their predicted domain is not to be trusted.
        rule: how header evidence counts (:class:`mridomain.iap.domain.DomainRule`; None: the
            run's). The verdict is predict's: :meth:`mridomain.iap.domain.DomainModel.judge`.
        engine: how a run folder's network runs: "auto" | "onnx" | "onnx-int8" | "torch"
            (:mod:`mridomain.iap.runtime`); ``result.attrs["engine"]`` says which ran and why.

    Returns:
        One row per image (per slice for volumes): ``predicted_<key_iap>``, ``model``, ``routed_by``,
        ``prediction`` and ``probability`` (NaN where the model gives none); ``source``/``slice``
        columns when paths were given; ``domain_score``, ``in_domain``, ``domain_reason`` and
        ``header_unseen`` where the IAP run has a domain model.
    """
    if not models:
        raise EmptyInputError(Path("<models>"), "no downstream models given")
    from mridomain.data.inputs import read_inputs
    from mridomain.iap.run import as_predictor

    models = {k: _load_model(m) for k, m in models.items()}
    predictor = as_predictor(iap_predictor, engine=engine)
    truths: list[dict[str, Any]] | None = None
    if isinstance(images_or_paths, np.ndarray):
        images = images_or_paths if images_or_paths.ndim == 3 else images_or_paths[None]
        rows = pd.DataFrame({"image": np.arange(len(images))})
        skipped = pd.DataFrame(columns=["path", "reason"])
    else:
        inputs = read_inputs(list(images_or_paths), predictor.preprocess, progress=progress)
        images, rows, skipped = inputs.images, inputs.rows[["source", "slice"]], inputs.skipped
        if getattr(predictor, "encoder", None) is not None:
            from mridomain.iap.prediction import header_truths

            truths = header_truths(inputs.inputs, predictor.encoder)
    if len(images) == 0:
        raise EmptyInputError(Path("<images>"), "no images to route")
    keys = [str(k) for k in models]
    output = predictor.forward(images)
    domain = getattr(predictor, "domain", None)
    verdict = None
    if domain is not None and output.domain_score is not None:
        verdict = domain.judge(output.domain_score, truths or [{}] * len(images), rule)
        inside = verdict["in_domain"].to_numpy()
    else:
        inside = output.in_domain
    values, chosen, how = predicted_domains(output, key_iap, keys, unknown=unknown, default=default)
    if abstain and inside is not None:
        chosen[~inside] = None
        how[~inside] = "out_of_domain"
    prediction = np.full(len(images), np.nan)
    probability = np.full(len(images), np.nan)
    for k in keys:
        idx = np.flatnonzero((chosen == k).to_numpy())
        if len(idx) == 0:
            continue
        # the tumor models read the image only, not a k-space view stored below it
        lab, proba = model_outputs(models[k], split_view(images, predictor.preprocess.get("kspace_view"))[0][idx])
        prediction[idx] = lab
        if proba is not None:
            probability[idx] = proba
    result = rows.reset_index(drop=True).assign(**{f"predicted_{key_iap}": values.to_numpy(),
                                                   "model": chosen.to_numpy(), "routed_by": how.to_numpy(),
                                                   "prediction": prediction, "probability": probability})
    if inside is not None:
        result["domain_score"] = output.domain_score
        result["in_domain"] = inside
    if verdict is not None:
        result["domain_reason"] = verdict["domain_reason"].to_numpy()
        result["header_unseen"] = verdict["header_unseen"].to_numpy()
    result.attrs["skipped"] = skipped
    result.attrs["engine"] = getattr(predictor, "engine_note", "")
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        result.to_csv(out, index=False)
        if len(skipped):
            skipped.to_csv(out.with_name(out.stem + "_skipped.csv"), index=False)
    return result


# ----------------------------------------------------------------------------- Table 2 logic
def evaluate_routing(images: np.ndarray, labels: np.ndarray, true_domain: Sequence[str],
                     iap_predictor: Any, models: Mapping[str, Any], key_iap: str = "manufacturer",
                     unknown: str = "most_likely") -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, float]:
    """The six columns of paper Table 2 on a labelled test set.

    Returns:
        table2 (one row, accuracies in %), cross (model x true-domain accuracy in %, with n),
        per_image (truth, true/predicted domain, every model's prediction, routed predictions),
        key_accuracy (share of images whose predicted domain equals the true one).
    """
    labels = np.asarray(labels).astype(np.int64)
    true_domain = pd.Series([str(v) for v in true_domain])
    keys = [str(k) for k in models]
    true_key = true_domain.map(lambda v: _match_key(v, keys))
    if true_key.isna().any():
        raise SchemaMismatchError(f"test images of domain(s) {sorted(set(true_domain[true_key.isna()]))} have no model")
    from mridomain.iap.run import as_predictor

    predictor = as_predictor(iap_predictor)
    plain = split_view(images, predictor.preprocess.get("kspace_view"))[0]   # tumor models: image only
    preds = {k: model_outputs(models[k], plain)[0].astype(np.int64) for k in keys}
    output = predictor.forward(images)
    values, chosen, how = predicted_domains(output, key_iap, keys, unknown=unknown)
    per = pd.DataFrame({"label": labels, f"true_{key_iap}": true_key.to_numpy(),
                        f"predicted_{key_iap}": values.to_numpy(), "routed_to": chosen.to_numpy(),
                        "routed_by": how.to_numpy()})
    for k in keys:
        per[f"pred_{k}_model"] = preds[k]
    pick = lambda dom: np.array([preds[d][i] for i, d in enumerate(dom)])  # noqa: E731
    per["pred_routed_predicted"] = pick(chosen)
    per["pred_routed_true"] = pick(true_key)

    def acc(pred: np.ndarray, mask: np.ndarray | None = None) -> float:
        m = np.ones(len(labels), bool) if mask is None else mask
        return float((pred[m] == labels[m]).mean() * 100) if m.any() else float("nan")

    row: dict[str, float] = {}
    for k in keys:
        own = (true_key == k).to_numpy()
        row[f"{k} model"] = acc(preds[k])
        row[f"{k} model (only {k} images)"] = acc(preds[k], own)
    row[f"routed by predicted {key_iap}"] = acc(per["pred_routed_predicted"].to_numpy())
    row[f"routed by true {key_iap}"] = acc(per["pred_routed_true"].to_numpy())
    table2 = pd.DataFrame([row])
    cross_rows = []
    for k in keys:
        r = {"model": f"{k} model"}
        for d in keys:
            own = (true_key == d).to_numpy()
            r[f"on {d} images (n={int(own.sum())})"] = acc(preds[k], own)
        r[f"on all (n={len(labels)})"] = acc(preds[k])
        cross_rows.append(r)
    cross = pd.DataFrame(cross_rows)
    key_accuracy = float((chosen.to_numpy() == true_key.to_numpy()).mean())
    return table2, cross, per, key_accuracy


@dataclass
class RoutingExperiment:
    """Result of :func:`run_routing_experiment` (also written under ``out``)."""

    table2: pd.DataFrame
    cross: pd.DataFrame
    per_image: pd.DataFrame
    key_iap: str
    key_accuracy: float
    n_train: dict[str, int]
    verdict: str
    ok: bool
    out: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)

    def to_markdown(self) -> str:
        """Table 2 as markdown plus the verdict (what the CLI prints)."""
        t = self.table2.copy()
        t = t.map(lambda v: f"{v:.2f}%")
        return ("Table 2: tumor-vs-normal slice accuracy on the test set\n\n" + df_to_markdown(t)
                + f"\n\n{self.key_iap} predicted correctly for {self.key_accuracy * 100:.2f}% of test images."
                + f"\n\n{self.verdict}")


def _verdict(table2: pd.DataFrame, cross: pd.DataFrame, per: pd.DataFrame, keys: Sequence[str],
             key_iap: str, key_accuracy: float, n_train: Mapping[str, int]) -> tuple[str, bool]:
    row = table2.iloc[0]
    singles = {k: float(row[f"{k} model"]) for k in keys}
    best = max(singles, key=singles.get)
    routed = float(row[f"routed by predicted {key_iap}"])
    oracle = float(row[f"routed by true {key_iap}"])
    n = len(per)
    k_routed = int((per["pred_routed_predicted"] == per["label"]).sum())
    lo, hi = wilson_interval(k_routed, n)
    if routed >= singles[best]:
        return (f"Routing by predicted {key_iap} ({routed:.2f}%, 95% CI {lo * 100:.1f}-{hi * 100:.1f}%, n={n}) is at least "
                f"as accurate as the better single model ({best} model, {singles[best]:.2f}%); routing by the true "
                f"{key_iap} gives {oracle:.2f}%.", True)
    reasons = []
    if key_accuracy < 0.95:
        reasons.append(f"the IAP model predicts {key_iap} correctly for only {key_accuracy * 100:.1f}% of test images, "
                       f"so {(1 - key_accuracy) * 100:.1f}% go to the other domain's model")
    for d in keys:
        col = [c for c in cross.columns if c.startswith(f"on {d} images")][0]
        own = float(cross.loc[cross["model"] == f"{d} model", col].iloc[0])
        for m in keys:
            if m == d:
                continue
            other = float(cross.loc[cross["model"] == f"{m} model", col].iloc[0])
            if other > own:
                reasons.append(f"on {d} images the {m} model ({other:.2f}%) beats the {d} model ({own:.2f}%), so even "
                               f"perfect routing (true {key_iap}: {oracle:.2f}%) sends them to the weaker model; "
                               f"the {d} training set has {n_train.get(d, 0)} labelled slices")
    k_best = int((per[f"pred_{best}_model"] == per["label"]).sum())
    blo, bhi = wilson_interval(k_best, n)
    if hi >= blo:
        reasons.append(f"the difference ({singles[best] - routed:.2f} points) is within the 95% intervals "
                       f"({lo * 100:.1f}-{hi * 100:.1f}% vs {blo * 100:.1f}-{bhi * 100:.1f}%, n={n} test slices)")
    if not reasons:
        reasons.append("no single cause found in the cross-domain table; inspect per_image.csv")
    return (f"Routing by predicted {key_iap} ({routed:.2f}%) is NOT at least as accurate as the better single model "
            f"({best} model, {singles[best]:.2f}%). Likely reason: " + "; ".join(reasons) + ".", False)


def run_routing_experiment(cache: Any, iap_run: Any, out: str | Path | None,
                           key_iap: str = "manufacturer", domains: Sequence[str] = ("GE", "SIEMENS"),
                           preset: str = "cpu", seed: int = 0, epochs: int | None = None,
                           device: str | None = None, progress: bool = True,
                           **classifier_overrides: Any) -> RoutingExperiment:
    """Reproduce paper Table 2 end to end on a slice cache.

    Trains one tumor-vs-normal slice classifier per domain on the train split (positives inside
    the tumor box, negatives >= 5 slices away: the cache's ``tumor`` column), picks each one's
    best-validation weights on its own domain's val split, and reports on the test split: each
    model on all test images, each on its own domain, routed by the predicted ``key_iap``, routed
    by the true one. Prints nothing; ``to_markdown()`` gives the table.

    Args:
        cache: slice cache folder (or SliceCache) with ``tumor`` and ``split`` columns.
        iap_run: IAP run folder (or predictor) that predicts ``key_iap``.
        out: folder for models/, table2.csv/.json/.md, per_image.csv, cross_domain.csv, report.html.
        key_iap: IAP that defines the domains.
        domains: values of ``key_iap`` that get a model (test images of other values are left out,
            as the paper's test set holds GE and Siemens only).
        preset: tumor classifier preset: "paper" (MONAI ResNet-18, 224 px) or "cpu" (small CNN, 64 px).
        seed: training seed.
        epochs: override the preset's epoch count.
        device: "cpu" | "cuda" (default: cuda when available).
        progress: show progress bars.
        classifier_overrides: further :class:`TumorClassifierConfig` fields.
    """
    from mridomain.iap.tumor_classifier import TumorClassifier

    table, images, meta = open_cache(cache)
    plain = split_view(images, meta.get("kspace_view"))[0]    # tumor models: image only
    for col in ("tumor", "split", key_iap):
        if col not in table.columns:
            raise SchemaMismatchError(f"{cache}: slice cache has no {col!r} column (needed for the routing experiment)")
    table = table.reset_index(drop=True)
    tumor = pd.to_numeric(table["tumor"], errors="coerce")
    labelled = tumor.notna().to_numpy()
    key_vals = as_category_strings(table[key_iap])
    dom = key_vals.map(lambda v: _match_key(v, list(domains)))
    split = table["split"].astype(str).to_numpy()
    overrides = dict(classifier_overrides)
    if epochs is not None:
        overrides["epochs"] = epochs
    models: dict[str, TumorClassifier] = {}
    n_train: dict[str, int] = {}
    out_path = Path(out) if out is not None else None
    for d in domains:
        tr = np.flatnonzero(labelled & (split == "train") & (dom == d).to_numpy())
        va = np.flatnonzero(labelled & (split == "val") & (dom == d).to_numpy())
        y = tumor.to_numpy()[tr]
        if len(tr) == 0 or len(np.unique(y)) < 2:
            raise EmptyInputError(Path(str(cache)), f"no training slices with both tumor classes for {key_iap}={d} "
                                                    f"(found {len(tr)} labelled train slices; a demo's "
                                                    "cache/ holds tumour slices only: `mridomain demo --full "
                                                    "--reuse` adds cache_routing/, with tumour-negative slices)")
        clf = TumorClassifier(preset=preset, device=device, seed=seed, **overrides)
        clf.fit(np.asarray(plain[tr]), y, np.asarray(plain[va]) if len(va) else None,
                tumor.to_numpy()[va] if len(va) else None, progress=progress)
        models[d] = clf
        n_train[d] = int(len(tr))
        if out_path is not None:
            clf.save(out_path / "models" / str(d))
    te = np.flatnonzero(labelled & (split == "test") & dom.notna().to_numpy())
    if len(te) == 0:
        raise EmptyInputError(Path(str(cache)), f"no labelled test slices of {key_iap} in {list(domains)}")
    from mridomain.iap.run import as_predictor

    predictor = as_predictor(iap_run)
    test_images = np.asarray(images[te], dtype=np.float32)
    table2, cross, per, key_acc = evaluate_routing(test_images, tumor.to_numpy()[te], dom.to_numpy()[te],
                                                   predictor, models, key_iap)
    for col in ("patient_id", "series_uid", "slice_index"):
        if col in table.columns:
            per.insert(0, col, table[col].to_numpy()[te])
    per.insert(0, "cache_row", te)
    verdict, ok = _verdict(table2, cross, per, list(domains), key_iap, key_acc, n_train)
    exp = RoutingExperiment(table2=table2, cross=cross, per_image=per, key_iap=key_iap, key_accuracy=key_acc,
                            n_train=n_train, verdict=verdict, ok=ok, out=out_path)
    if out_path is not None:
        _write_experiment(exp, models, preset)
    return exp


def _write_experiment(exp: RoutingExperiment, models: Mapping[str, Any], preset: str) -> None:
    from matplotlib.figure import Figure

    out = exp.out
    assert out is not None
    out.mkdir(parents=True, exist_ok=True)
    exp.table2.to_csv(out / "table2.csv", index=False)
    (out / "table2.json").write_text(json.dumps({
        "table2_percent": exp.table2.iloc[0].to_dict(), "key_iap": exp.key_iap,
        "key_accuracy": exp.key_accuracy, "n_test": len(exp.per_image), "n_train": exp.n_train,
        "preset": preset, "routing_at_least_best_single": exp.ok, "verdict": exp.verdict}, indent=1))
    (out / "table2.md").write_text(exp.to_markdown() + "\n")
    exp.cross.to_csv(out / "cross_domain.csv", index=False)
    exp.per_image.to_csv(out / "per_image.csv", index=False)
    exp.files.update(table2=out / "table2.csv", table2_json=out / "table2.json", table2_md=out / "table2.md",
                     cross=out / "cross_domain.csv", per_image=out / "per_image.csv")
    vals = exp.table2.iloc[0]
    true_col = f"true_{exp.key_iap}"
    n_all = len(exp.per_image)
    sizes = []
    for col in vals.index:                  # "<D> model (only <D> images)" counts only domain D's images
        own = next((k for k in exp.n_train if col == f"{k} model (only {k} images)"), None)
        sizes.append(int((exp.per_image[true_col] == own).sum()) if own is not None else n_all)
    acc = vals.to_numpy(float)
    # a column with no test images (a domain absent from a small test split) has no accuracy
    bounds = np.array([wilson_interval(int(round(a * n / 100)), n) if n and np.isfinite(a) else (np.nan, np.nan)
                       for a, n in zip(acc, sizes)], dtype=float) * 100
    err = np.nan_to_num(np.abs(np.stack([acc - bounds[:, 0], bounds[:, 1] - acc])))
    fig = Figure(figsize=(8.5, 0.55 * len(vals) + 1.2))
    ax = fig.subplots()
    y = np.arange(len(vals))[::-1]          # Table 2's order from the top
    ax.barh(y, acc, xerr=err, capsize=3, color=["#4a6fa5", "#9db4d6", "#a55a4a", "#d6a99d", "#3c8d3c",
                                                   "#8fc98f"][:len(vals)])
    ax.set_yticks(y, [f"{c} (n={n})" for c, n in zip(vals.index, sizes)], fontsize=8)
    ax.set_xlabel("tumor-vs-normal accuracy (%), 95% Wilson intervals")
    ax.set_xlim(0, 105)
    for yi, v, hi in zip(y, acc, bounds[:, 1]):
        ax.text(min(hi + 1, 100) if np.isfinite(hi) else 1, yi, f"{v:.1f}" if np.isfinite(v) else "no test images",
                va="center", fontsize=8)
    fig.tight_layout()
    bar_png = figure_to_png(fig)
    figs = [("Table 2 as bars", bar_png)]
    hist = {k: getattr(m, "history", []) for k, m in models.items()}
    if any(h and "val_accuracy" in h[0] for h in hist.values()):
        fig = Figure(figsize=(6, 3.2))
        ax = fig.subplots()
        for k, h in hist.items():
            if h and "val_accuracy" in h[0]:
                ax.plot([r["epoch"] for r in h], [r["val_accuracy"] * 100 for r in h], label=f"{k} model (val, own domain)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("val accuracy (%)")
        ax.legend(fontsize=8)
        figs.append(("Validation accuracy while training", figure_to_png(fig)))
    (out / "table2.png").write_bytes(bar_png)
    decisions = (exp.per_image.groupby([true_col, "routed_to", "routed_by"], dropna=False).size()
                 .reset_index(name="images")
                 .rename(columns={true_col: f"true {exp.key_iap}", "routed_to": "routed to model",
                                  "routed_by": "chosen by"}))
    n_train = ", ".join(f"{k} {v:,}" for k, v in exp.n_train.items())
    exp.files["report"] = write_html_report(out / "report.html", "Routing by predicted acquisition domain (paper Table 2)", [
        Section("Table 2", note=exp.verdict,
                text=f"Tumor-vs-normal slice accuracy (%) on the labelled test slices (n={len(exp.per_image)}). "
                     f"{exp.key_iap} predicted correctly for {exp.key_accuracy * 100:.2f}% of them. "
                     f"Training slices per domain: {n_train}. Classifier preset: {preset}.",
                tables=[exp.table2.round(2)], figures=figs),
        Section("Every model on every domain", tables=[exp.cross.round(2)]),
        Section("Routing decisions", text=(f"Where each test slice was sent: its true {exp.key_iap}, the model its "
                                           f"predicted {exp.key_iap} chose, and how (predicted: a model exists for "
                                           "the predicted value; most_likely: the most probable value that has a "
                                           "model; default: the default model)."), tables=[decisions]),
    ])
