"""Tables, the paper's Figures 2-5 and one self-contained ``report.html`` from a study folder.

Everything here reads ``OUT/runs.jsonl`` (and ``OUT/attribution.csv`` when attribution ran), so
a finished or interrupted study re-renders without training anything. The figures show every
seed as a dot next to the means, a chance line, full AUC axes and the measured Delta with its
confidence interval, and the summary sentences are derived from the numbers: a Delta whose
interval contains zero is reported as such, not as a drop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mridomain.shift.runner import curves_table, results_table
from mridomain.shift.stats import delta_table, fmt_p, paired_deltas, setting_table, sizes_table, smallest_p, table2

__all__ = ["render_report", "ReportResult", "findings", "PAPER_TABLE2"]

#: Guo et al. Table 2 (real data): modality, dataset, training manufacturer, same, different, Delta
PAPER_TABLE2 = pd.DataFrame([
    ("CT", "Kidney", "Other", "0.819 ± 0.059", "0.763 ± 0.062", -0.056),
    ("CT", "LIDC", "GE", "0.932 ± 0.038", "0.900 ± 0.071", -0.032),
    ("CT", "LIDC", "Other", "0.943 ± 0.022", "0.895 ± 0.060", -0.048),
    ("CT", "HNSCC", "GE", "0.942 ± 0.010", "0.924 ± 0.056", -0.018),
    ("CT", "HNSCC", "Other", "0.943 ± 0.009", "0.928 ± 0.056", -0.015),
    ("CT", "Oropharyngeal", "GE", "0.749 ± 0.052", "0.751 ± 0.053", 0.002),
    ("CT", "Oropharyngeal", "Toshiba", "0.725 ± 0.128", "0.738 ± 0.121", 0.013),
    ("MRI", "Prostate", "Siemens", "0.791 ± 0.033", "0.505 ± 0.074", -0.286),
    ("MRI", "Prostate", "Other", "0.692 ± 0.061", "0.657 ± 0.089", -0.035),
    ("MRI", "Breast", "GE", "0.836 ± 0.085", "0.764 ± 0.138", -0.072),
    ("MRI", "Breast", "Siemens", "0.791 ± 0.138", "0.796 ± 0.086", 0.005),
    ("X-ray", "Chest", "3", "0.898 ± 0.042", "0.880 ± 0.030", -0.018),
    ("X-ray", "Chest", "5", "0.917 ± 0.071", "0.801 ± 0.071", -0.116),
], columns=["modality", "dataset", "train manufacturer", "same manuf.", "different manuf.", "delta"])

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


@dataclass
class ReportResult:
    """What :func:`render_report` wrote."""

    out: Path
    tables: dict[str, Path] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    html: Path | None = None
    findings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """The report's path, its tables and figures, and the findings, one per line."""
        lines = [f"report: {self.html}"] + [f"  {k}: {v}" for k, v in {**self.tables, **self.figures}.items()]
        return "\n".join(lines + [f"  * {f}" for f in self.findings])


# ----------------------------------------------------------------------------------------------
# words


def _verdict(lo: float, hi: float) -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "too few seeds for an interval"
    if hi < 0:
        return "out-of-domain AUC was lower (the interval excludes zero)"
    if lo > 0:
        return "out-of-domain AUC was higher (the interval excludes zero)"
    return "no difference distinguishable from seed-to-seed variation (the interval contains zero)"


def findings(t2: pd.DataFrame, delta: pd.DataFrame) -> list[str]:
    """One sentence per (dataset, training domain), from the numbers alone."""
    out = []
    for r in delta.itertuples(index=False):
        rows = t2[(t2["dataset"] == r.dataset) & (t2["train_domain"] == r.train_domain)]
        same = rows[rows["test_domain"] == r.train_domain]
        other = rows[rows["test_domain"] != r.train_domain]
        if not len(same) or not len(other):
            continue
        s, o = same.iloc[0], other.iloc[0]
        ci = (f"95% CI {r.ci_low:+.3f} to {r.ci_high:+.3f}" if math.isfinite(r.ci_low) else "no CI")
        p_note = fmt_p(r.p_value)
        if r.n_seeds and smallest_p(int(r.n_seeds)) > 0.05:
            p_note += f"; with {r.n_seeds} seeds p cannot fall below {smallest_p(int(r.n_seeds)):.3g}"
        power = ""
        if hasattr(r, "detectable_delta"):
            power = (f" Power: the smallest test set held {r.min_test_positives} positives and "
                     f"{r.min_test_negatives} negatives; a Delta of ±{_nz(r.detectable_delta)} or more would be "
                     f"detected with 80% power (CI half-width {_nz(r.ci_half_width)}).")
            if r.min_test_positives < 25 or r.min_test_negatives < 25:
                power += " Warning: fewer than 25 of a class in a test set; its AUC moves in coarse steps."
        out.append(f"{r.dataset}, trained on {r.train_domain}: AUC {s.auc_mean:.3f} ± {_nz(s.auc_std)} on "
                   f"{r.train_domain}, {o.auc_mean:.3f} ± {_nz(o.auc_std)} on {o.test_domain}; Delta = "
                   f"{r.delta:+.3f} ({ci}; Wilcoxon p = {p_note}; {r.n_seeds} seeds): {_verdict(r.ci_low, r.ci_high)}."
                   + power)
    return out


def _collapsed(df: pd.DataFrame, summary: str) -> str:
    """A long table folded into a <details> element (the report stays short until it is opened)."""
    import html

    body = df.to_html(index=False, escape=True, border=0, na_rep="", float_format=lambda x: f"{x:.4g}")
    return f"<details><summary>{html.escape(summary)}</summary>\n{body}\n</details>"


def _nz(v: float) -> str:
    return f"{v:.3f}" if math.isfinite(v) else "n/a"


# ----------------------------------------------------------------------------------------------
# figures


def _figure(n_panels: int, width: float = 4.2, height: float = 3.4):
    from mridomain.report import figure_grid

    return figure_grid(n_panels, 3, width, height)


def figure_auc_bars(runs: pd.DataFrame, t2: pd.DataFrame, delta: pd.DataFrame):
    """Figure 2: per (dataset, training domain), same- vs different-domain test AUC (mean ± std,
    every seed a dot), with the measured Delta and its interval in the title."""
    pairs = list(delta[["dataset", "train_domain"]].itertuples(index=False, name=None))
    fig, axes = _figure(max(1, len(pairs)), 3.6, 3.6)
    main = runs[(runs["experiment"] == "main") & (runs["status"] == "ok")]
    for ax, (ds, dom) in zip(axes, pairs):
        rows = t2[(t2["dataset"] == ds) & (t2["train_domain"] == dom)]
        order = [dom] + [d for d in rows["test_domain"] if d != dom]
        for i, test in enumerate(order):
            r = rows[rows["test_domain"] == test].iloc[0]
            ax.bar(i, r.auc_mean, 0.6, color=_COLORS[i], alpha=0.75,
                   yerr=r.auc_std if math.isfinite(r.auc_std) else None, capsize=5,
                   label=("same" if test == dom else "different") + f" ({test})")
            pts = main[(main["dataset"] == ds) & (main["train_domain"] == dom) & (main["test_domain"] == test)]["auc"]
            jitter = np.linspace(-0.12, 0.12, len(pts)) if len(pts) > 1 else np.zeros(len(pts))
            ax.scatter(i + jitter, pts, s=14, color="black", zorder=3)
        ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
        d = delta[(delta["dataset"] == ds) & (delta["train_domain"] == dom)].iloc[0]
        ci = f" [{d.ci_low:+.3f}, {d.ci_high:+.3f}]" if math.isfinite(d.ci_low) else ""
        ax.set_title(f"{ds}\ntrained on {dom}: Δ = {d.delta:+.3f}{ci}", fontsize=9)
        ax.set_xticks(range(len(order)), [f"test {t}" for t in order], fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("test AUC")
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("Test AUC by training domain (bars: mean ± std over seeds; dots: seeds; dotted: chance)",
                 fontsize=9)
    fig.tight_layout()
    return fig


def figure_delta_box(runs: pd.DataFrame, delta: pd.DataFrame, modality: dict[str, str]):
    """Figure 3: Delta per modality (box over dataset/domain settings, as the paper) next to the
    per-seed Deltas of each setting with their bootstrap interval (the spread behind each mean)."""
    from matplotlib.figure import Figure

    per_seed = paired_deltas(runs, "main")
    fig = Figure(figsize=(11, 3.8))
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 2]})
    mods = sorted({modality.get(ds, "MRI") for ds in delta["dataset"]})
    for i, m in enumerate(mods):
        vals = delta[[modality.get(ds, "MRI") == m for ds in delta["dataset"]]]["delta"].to_numpy()
        ax1.boxplot([vals], positions=[i], widths=0.5, showmeans=True, meanline=True,
                    meanprops={"color": "red", "linewidth": 2}, medianprops={"color": "black"})
        ax1.scatter(np.full(len(vals), i), vals, color="black", s=14, zorder=3)
    ax1.axhline(0, color="grey", linestyle=":")
    ax1.set_xticks(range(len(mods)), mods)
    ax1.set_ylabel("Δ = AUC out-of-domain − in-domain")
    ax1.set_title("Δ per modality (mean of each setting; red: average)", fontsize=9)
    labels = []
    for i, r in enumerate(delta.itertuples(index=False)):
        d = per_seed[(per_seed["dataset"] == r.dataset) & (per_seed["train_domain"] == r.train_domain)]["delta"]
        if len(d):
            ax2.boxplot([d.to_numpy()], positions=[i], widths=0.5, medianprops={"color": "black"})
            ax2.scatter(np.full(len(d), i) + np.linspace(-0.1, 0.1, len(d)), d, s=12, color="black", zorder=3)
        if math.isfinite(r.ci_low):
            ax2.errorbar(i + 0.32, r.delta, yerr=[[r.delta - r.ci_low], [r.ci_high - r.delta]], fmt="o",
                         color="red", capsize=4)
        labels.append(f"{r.dataset}\n{r.train_domain}\np={fmt_p(r.p_value)}")
    ax2.axhline(0, color="grey", linestyle=":")
    ax2.set_xticks(range(len(labels)), labels, fontsize=7)
    ax2.set_title("Per-seed Δ (box, dots) and mean with 95% bootstrap CI (red)", fontsize=9)
    fig.tight_layout()
    return fig


def figure_curves(table: pd.DataFrame, runs: pd.DataFrame, experiment: str, setting: str, xlabel: str,
                  log: bool = False):
    """Figures 4 and 5: test AUC against the mixing fraction / noise level, one panel per
    (dataset, training domain), a line per test domain (mean), dotted ± std, dots per seed."""
    pairs = sorted(set(table[["dataset", "train_domain"]].itertuples(index=False, name=None)))
    fig, axes = _figure(max(1, len(pairs)))
    exp_runs = runs[(runs["status"] == "ok") & (runs["experiment"].isin([experiment, "main"]))]
    seeds = set(runs.loc[runs["experiment"] == experiment, "seed"])
    for ax, (ds, dom) in zip(axes, pairs):
        sub = table[(table["dataset"] == ds) & (table["train_domain"] == dom)]
        tests = [dom] + sorted(d for d in sub["test_domain"].unique() if d != dom)
        for i, test in enumerate(tests):
            t = sub[sub["test_domain"] == test].sort_values(setting)
            x, m, s = t[setting].to_numpy(float), t["auc_mean"].to_numpy(float), t["auc_std"].to_numpy(float)
            label = f"test {test}" + (" (same)" if test == dom else " (target)")
            ax.plot(x, m, "-o", color=_COLORS[i], label=label, markersize=4)
            ax.plot(x, np.minimum(m + s, 1.0), ":", color=_COLORS[i], linewidth=1)
            ax.plot(x, np.maximum(m - s, 0.0), ":", color=_COLORS[i], linewidth=1)
            pts = exp_runs[(exp_runs["dataset"] == ds) & (exp_runs["train_domain"] == dom) &
                           (exp_runs["test_domain"] == test) & exp_runs["seed"].isin(seeds)]
            px = np.where(pts["experiment"] == "main", 0.0, pts["setting"].astype(float))
            ax.scatter(px, pts["auc"], s=8, color=_COLORS[i], alpha=0.5)
        if log:
            ax.set_xscale("symlog", linthresh=1)
        ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test AUC")
        ax.set_title(f"{ds}: trained on {dom}", fontsize=9)
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def figure_learning_curves(curves: pd.DataFrame, runs: pd.DataFrame):
    """Validation AUC per epoch of every main run (the best epoch is the model kept)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.4))
    ax = fig.subplots()
    main = runs[runs["experiment"] == "main"].drop_duplicates("run_id")
    domains = sorted(main["train_domain"].unique())
    for _, r in main.iterrows():
        c = curves[curves["run_id"] == r["run_id"]]
        if "val_auc" in c:
            ax.plot(c["epoch"], c["val_auc"], color=_COLORS[domains.index(r["train_domain"]) % 4], alpha=0.5,
                    linewidth=1)
    for i, d in enumerate(domains):
        ax.plot([], [], color=_COLORS[i % 4], label=f"trained on {d}")
    ax.set(xlabel="epoch", ylabel="validation AUC", ylim=(0, 1.02), title="Main runs: validation AUC per epoch")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# the report


def _alpha_scale(out: Path, study: Any) -> pd.DataFrame:
    """Median per-sample standard deviation of the training domain's images (stored units): what
    alpha is relative to."""
    rows = []
    for ds, pair in study.domains.items():
        data = study.data(ds)
        for dom in pair:
            idx = np.flatnonzero(data.table["domain"].to_numpy() == dom)
            sample = idx[:: max(1, len(idx) // 200)]
            stds = [float(np.std(np.asarray(data.images[i], np.float64))) for i in sample]
            rows.append({"dataset": ds, "train_domain": dom, "image_std": float(np.median(stds)) if stds else float("nan")})
    return pd.DataFrame(rows)


class _Outputs:
    """Writes a report's tables (CSV) and figures (PNG) into the study folder and lists them in
    the :class:`ReportResult`."""

    def __init__(self, out: Path, res: ReportResult):
        self.out, self.res = out, res

    def table(self, name: str, df: pd.DataFrame) -> pd.DataFrame:
        """``OUT/<name>.csv``; returns ``df``."""
        path = self.out / f"{name}.csv"
        df.to_csv(path, index=False)
        self.res.tables[name] = path
        return df

    def figure(self, name: str, fig: Any) -> Path:
        """``OUT/<name>.png``; returns its path."""
        path = self.out / f"{name}.png"
        fig.savefig(path, dpi=100)
        self.res.figures[name] = path
        return path


def _main_sections(write: _Outputs, runs: pd.DataFrame, curves: pd.DataFrame, t2: pd.DataFrame,
                   delta: pd.DataFrame, modality: dict[str, str]) -> list:
    """Table 2 and Figure 2, Delta and Figure 3, the test sets and the training curves."""
    from mridomain.report import Section

    sections = []
    f2 = write.figure("fig2_auc_bars", figure_auc_bars(runs, t2, delta))
    f3 = write.figure("fig3_delta_box", figure_delta_box(runs, delta, modality))
    sizes = write.table("test_sets", sizes_table(runs))
    sections.append(Section("Table 2: test AUC, mean ± std over seeds", tables=[t2], figures=[(
        "Figure 2. Test AUC of each domain's model on its own test set and on the other domain's (bars: mean ± "
        "std over seeds; dots: single seeds; dotted line: chance); the title gives Delta and its 95% interval.",
        f2)]))
    sections.append(Section("Delta: out-of-domain minus in-domain AUC, paired per seed",
                            text="Delta per seed = AUC(M_j, Test_other) − AUC(M_j, Test_j): negative means the "
                                 "model scores worse on the other scanner. The interval is a 95% percentile "
                                 "bootstrap over seeds, the p-value a two-sided Wilcoxon signed-rank test of the "
                                 "per-seed differences. ci_half_width and detectable_delta say how small a Delta "
                                 "this study could see: detectable_delta is the Delta a paired test of these seeds "
                                 "detects with 80% power at alpha 0.05, from the seed-to-seed spread.",
                            tables=[delta], figures=[(
                                "Figure 3. Left: Delta of each setting grouped by modality (box; red line: mean). "
                                "Right: per-seed Delta of each (dataset, training domain) (box and dots) with the "
                                "mean and its 95% bootstrap interval (red) and the Wilcoxon p under each.", f3)]))
    sections.append(Section("Test sets: what each AUC rests on",
                            text="Per (dataset, training domain, test domain), the test sets over seeds: samples, "
                                 "positives, negatives, patients and positive patients (min and max over seeds; "
                                 "the split changes with the seed). A warning marks fewer than 25 of a class.",
                            tables=[sizes]))
    if len(curves):
        sections.append(Section("Training curves", figures=[(
            "Figure. Validation AUC per epoch of every main run, coloured by training domain; the epoch of best "
            "validation AUC is the model kept.", write.figure("learning_curves", figure_learning_curves(curves, runs)))]))
    return sections


def _appendix_sections(write: _Outputs, runs: pd.DataFrame, study: Any) -> list:
    """Appendix A.1 (mixing) and A.2 (noise), each where its runs exist: table and figure."""
    from mridomain.report import Section

    sections = []
    for exp, setting, xlabel, log, fig_name, caption in (
            ("mixing", "f", "fraction f of the training set from the target domain", False, "fig4_mixing",
             "Appendix A.1: target-domain training samples make up the fraction f of the training set "
             "(duplicated when the target domain runs short); f = 0 is the main run of the same seed."),
            ("noise", "alpha", "noise standard deviation alpha (stored intensity units)", True, "fig5_noise",
             "Appendix A.2: x + alpha * N(0, I) added once to every training image in stored intensity units, "
             "before the per-image z-score; alpha = 0 is the main run of the same seed. alpha_rel = alpha / "
             "the median per-image standard deviation of the training domain's images.")):
        tab = setting_table(runs, exp, setting)
        if not len(tab) or not (runs["experiment"] == exp).any():
            continue
        if exp == "noise":
            scale = _alpha_scale(write.out, study)
            tab = tab.merge(scale, on=["dataset", "train_domain"], how="left")
            tab["alpha_rel"] = tab["alpha"] / tab["image_std"]
        write.table(exp, tab)
        path = write.figure(fig_name, figure_curves(tab, runs, exp, setting, xlabel, log))
        fig_caption = ("Figure 4. Test AUC against the fraction f of target-domain images in the training set, one "
                       "panel per training domain, a line per test domain (mean; dotted: ± std; dots: seeds)."
                       if exp == "mixing" else
                       "Figure 5. Test AUC against the training noise alpha (stored units, symlog axis), one panel "
                       "per training domain, a line per test domain (mean; dotted: ± std; dots: seeds).")
        sections.append(Section(f"{'Target-domain mixing' if exp == 'mixing' else 'Training noise'}",
                                text=caption, tables=[tab], figures=[(fig_caption, path)]))
    return sections


def _attribution_section(out: Path, res: ReportResult):
    """The attribution's table, figures and findings, when ``attribution.csv`` exists (else None)."""
    from mridomain.files import read_json
    from mridomain.report import Section

    attribution = out / "attribution.csv"
    if not attribution.exists():
        return None
    att = pd.read_csv(attribution)
    res.tables["attribution"] = attribution
    figs = [(p.stem, p) for p in sorted(out.glob("fig_attribution*.png"))]
    for p in figs:
        res.figures[p[0]] = p[1]
    summary_path = out / "attribution_summary.json"
    text = None
    if summary_path.exists():
        text = "\n\n".join(read_json(summary_path).get("findings", []))
    signs = ("Signs as for Delta: the acquired row's change is the target set's AUC as acquired minus the "
             "in-domain AUC (negative: lower on the other scanner). A factor's change is the AUC with that "
             "factor of the training domain's protocol minus the AUC as acquired (positive: the factor raised "
             "it, undoing a negative gap). Changes are pooled over seeds and source partners; intervals are "
             "95% percentile bootstraps over seeds and patients. 'sum of factors' adds the single-factor "
             "changes, 'interaction' is the all-factors change minus that sum. The sentences name only the "
             "factors whose interval excludes zero.")
    captions = [("Figure. AUC change per re-imaging condition (bars: mean over seeds and partners; whiskers: "
                 "95% bootstrap interval; grey: all factors, their sum and the interaction); dashed red: the change "
                 "that would bring the AUC to the in-domain level.", p) for _, p in figs]
    return Section("Attribution on the simulator: which acquisition factor moves the out-of-domain AUC",
                   text=signs + ("\n\n" + text if text else ""), tables=[att], figures=captions)


def _run_sections(runs: pd.DataFrame) -> list:
    """Failed runs (when any), every finished run (folded) and the paper's Table 2 for reference."""
    from mridomain.report import Section

    sections = []
    failed = runs[runs["status"] != "ok"].drop_duplicates("run_id")
    if len(failed):
        sections.append(Section("Failed runs", note=f"{len(failed)} run(s) failed and are left out of every table "
                                                    "above; they are retried by the next call on this folder.",
                                tables=[failed[["run_id", "error"]]]))
    ok = runs[runs["status"] == "ok"]
    if len(ok):
        every = ok[["run_id", "test_domain", "auc", "n_test", "n_test_positive", "n_train", "n_train_target",
                    "n_duplicates", "best_epoch", "best_val_auc", "split_digest", "seconds"]]
        sections.append(Section("Every run", text="One row per (run, test domain): seed, split fingerprint, best "
                                                  "epoch and AUC; runs.csv and curves.csv hold them all.",
                                html=_collapsed(every, f"Show all {len(every)} rows")))
    sections.append(Section("The paper's Table 2 (real data, for reference)",
                            text="Guo et al., Table 2: mean ± std over 10 seeds on the real datasets. Not "
                                 "comparable number by number with a simulated or another dataset.",
                            tables=[PAPER_TABLE2]))
    return sections


def render_report(out: str | Path, title: str = "Scanner domain-shift study", command: str | None = None) -> ReportResult:
    """Write every table, figure and ``report.html`` of a study folder from its results.

    Steps: the run and curve tables, Table 2 and Delta, the findings; then the sections of the
    main experiment (:func:`_main_sections`), the appendix experiments (:func:`_appendix_sections`),
    the attribution (:func:`_attribution_section`) and the runs (:func:`_run_sections`).
    """
    from mridomain.report import Section, write_html_report
    from mridomain.shift.folder import open_study

    out = Path(out)
    study = open_study(out)
    records = study.store.records()
    runs = results_table(records)
    res = ReportResult(out)
    write = _Outputs(out, res)
    write.table("runs", runs)
    curves = write.table("curves", curves_table(records))
    t2 = write.table("table2", table2(runs))
    delta = write.table("delta", delta_table(runs))
    modality = {ds: study.data(ds).modality or "MRI" for ds in study.domains}
    res.findings = findings(t2, delta)
    note = " ".join(res.findings) if res.findings else "No main-experiment run has finished yet."
    sections = [Section("What the study found", note=note,
                        text=(f"Study folder: {out}. Manifest: {study.meta.get('manifest')} "
                              f"({study.meta.get('n_samples')} samples). Domains: "
                              + "; ".join(f"{ds}: {a} vs {b}" for ds, (a, b) in study.domains.items())
                              + f". Model settings: {study.settings_line()}."
                              + (f"\n\nCommand: {command}" if command else "")))]
    if len(t2):
        sections += _main_sections(write, runs, curves, t2, delta, modality)
    sections += _appendix_sections(write, runs, study)
    attribution = _attribution_section(out, res)
    sections += [attribution] if attribution is not None else []
    sections += _run_sections(runs)
    ok = runs[runs["status"] == "ok"]
    res.html = write_html_report(out / "report.html", title, sections,
                                 subtitle=f"{len(ok.drop_duplicates('run_id'))} finished runs")
    return res
