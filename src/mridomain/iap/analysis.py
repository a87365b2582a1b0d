"""Dataset IAP statistics (paper Appendix A.1): per-split distributions (Figs 3-5), associations
between IAPs (Figs 6-8), overlap of unique IAP combinations between splits (Table 3), and a
class-imbalance summary, written as CSV/markdown/PNG and one self-contained HTML report.

The paper correlates every pair of IAPs with Spearman's rho on category codes. That is sound for
IAPs whose values are numbers (field strength, slice thickness, flip angle, FOV, TR, TE: their codes
follow the values' order) but not for nominal ones (manufacturer, scanner model, scan options,
patient position, contrast agent, acquisition matrix): their alphabetical codes have no order, so
rho depends on how the names happen to sort. Pairs with a nominal IAP get Cramér's V instead
(0 = independent, 1 = one determines the other; a continuous partner is cut into quantile bins).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mridomain.iap._analysis_common import (MISSING, as_category_strings, iap_kinds, load_source,
                                        ordinal_codes, sorted_categories, split_names)
from mridomain.report import Section, df_to_markdown, figure_to_png, write_html_report
from mridomain.errors import EmptyInputError

__all__ = ["AnalysisResult", "analyze", "value_counts", "spearman_matrix", "association_matrix", "nominal_iaps",
           "cramers_v", "combination_keys", "combination_overlap", "combination_summary", "imbalance_summary"]


@dataclass
class AnalysisResult:
    """Everything ``analyze`` computed; the same tables are on disk under ``out``."""

    out: Path | None
    splits: list[str]
    iaps: list[str]
    counts: pd.DataFrame                       # iap, kind, split, value, count, share
    correlations: dict[str, pd.DataFrame]      # split -> IAP x IAP association (rho, or V for nominal)
    overlap: pd.DataFrame                      # Table 3: split_a, split_b, a_only, b_only, both
    combinations: pd.DataFrame                 # per split: n rows, n unique combos, seen in train
    imbalance: pd.DataFrame                    # per split x categorical IAP
    nominal: list[str] = field(default_factory=list)            # IAPs whose values have no order
    combination_iaps: list[str] = field(default_factory=list)   # what makes a combination (Table 3)
    files: dict[str, Path] = field(default_factory=dict)

    def to_markdown(self) -> str:
        """Table 3 and the combination summary as markdown (what the CLI prints)."""
        return ("Unique IAP combinations per split\n\n" + df_to_markdown(self.combinations)
                + "\n\nOverlap of unique IAP combinations (paper Table 3)\n\n"
                + df_to_markdown(self.overlap))


def _iap_columns(table: pd.DataFrame, kinds: dict[str, str]) -> list[str]:
    cols = [n for n in kinds if n in table.columns]
    if not cols:
        raise EmptyInputError(Path("<table>"), "no IAP columns found (expected some of "
                              + ", ".join(kinds) + ")")
    return cols


def _continuous(series: pd.Series) -> pd.Series:
    return pd.to_numeric(series, errors="coerce").astype(float)


def value_counts(table: pd.DataFrame, iaps: list[str], kinds: dict[str, str],
                 split_column: str = "split") -> pd.DataFrame:
    """Long table of value counts per IAP and split (continuous IAPs counted per distinct value)."""
    rows = []
    for split in split_names(table, split_column):
        part = table if split == "all" else table[table[split_column].astype(str) == split]
        n = len(part)
        for iap in iaps:
            kind = kinds.get(iap, "categorical")
            if kind == "continuous":
                vals = _continuous(part[iap]).round(4)
                vc = vals.value_counts(dropna=False)
                for v, c in vc.items():
                    rows.append((iap, kind, split, MISSING if pd.isna(v) else float(v), int(c), c / n))
            else:
                vc = as_category_strings(part[iap]).value_counts()
                for v, c in vc.items():
                    rows.append((iap, kind, split, v, int(c), c / n))
    return pd.DataFrame(rows, columns=["iap", "kind", "split", "value", "count", "share"])


def spearman_matrix(table: pd.DataFrame, iaps: list[str], kinds: dict[str, str],
                    categories: dict[str, list] | None = None) -> pd.DataFrame:
    """Spearman rank correlation between IAPs; categorical IAPs enter as ordinal category codes
    (the paper correlates DBC's category indices), pairs with a missing value are dropped, and a
    constant IAP gives NaN (a rank correlation with no variation is undefined)."""
    enc = {}
    for iap in iaps:
        if kinds.get(iap, "categorical") == "continuous":
            enc[iap] = _continuous(table[iap])
        else:
            enc[iap] = ordinal_codes(table[iap], (categories or {}).get(iap))
    df = pd.DataFrame(enc)
    return df.corr(method="spearman", min_periods=3)


def nominal_iaps(table: pd.DataFrame, iaps: list[str], kinds: dict[str, str]) -> list[str]:
    """Categorical IAPs whose values are not all numbers ("GE", "FFP", "350 X 350"): their
    category codes carry no order."""
    out = []
    for iap in iaps:
        if kinds.get(iap, "categorical") == "continuous":
            continue
        values = as_category_strings(table[iap])
        values = values[values != MISSING]
        if len(values) and pd.to_numeric(values, errors="coerce").isna().any():
            out.append(iap)
    return out


def cramers_v(a: pd.Series, b: pd.Series) -> float:
    """Cramér's V of two nominal variables (rows with a missing value dropped); NaN when either
    takes a single value."""
    from scipy.stats.contingency import association

    keep = (a != MISSING) & (b != MISSING) & a.notna() & b.notna()
    table = pd.crosstab(a[keep], b[keep])
    if table.shape[0] < 2 or table.shape[1] < 2:
        return float("nan")
    return float(association(table.to_numpy(), method="cramer"))


def _as_nominal(series: pd.Series, kind: str, bins: int = 5) -> pd.Series:
    """Categories as strings; a continuous IAP cut into (at most ``bins``) quantile bins."""
    if kind != "continuous":
        return as_category_strings(series)
    values = _continuous(series)
    if values.nunique() <= bins:
        return values.map(lambda v: MISSING if pd.isna(v) else f"{v:g}")
    cut = pd.qcut(values, bins, duplicates="drop")
    return cut.astype(str).where(values.notna(), MISSING)


def association_matrix(table: pd.DataFrame, iaps: list[str], kinds: dict[str, str],
                       categories: dict[str, list] | None = None,
                       nominal: list[str] | None = None) -> pd.DataFrame:
    """IAP x IAP association: Spearman's rho where both IAPs are ordered (continuous, or
    categorical with numeric values), Cramér's V where either is nominal (see the module doc)."""
    nominal = nominal_iaps(table, iaps, kinds) if nominal is None else nominal
    matrix = spearman_matrix(table, iaps, kinds, categories)
    for a, b in itertools.combinations(iaps, 2):
        if a in nominal or b in nominal:
            v = cramers_v(_as_nominal(table[a], kinds.get(a, "categorical")),
                          _as_nominal(table[b], kinds.get(b, "categorical")))
            matrix.loc[a, b] = matrix.loc[b, a] = v
    for a in nominal:
        matrix.loc[a, a] = 1.0 if as_category_strings(table[a]).nunique() > 1 else float("nan")
    return matrix


def combination_keys(table: pd.DataFrame, iaps: list[str], kinds: dict[str, str]) -> pd.Series:
    """One hashable key per row: the tuple of all its IAP values (continuous rounded to 1e-3 ms so
    float noise does not make new combinations)."""
    cols = []
    for iap in iaps:
        if kinds.get(iap, "categorical") == "continuous":
            cols.append(_continuous(table[iap]).round(3).map(lambda v: MISSING if pd.isna(v) else f"{v:g}"))
        else:
            cols.append(as_category_strings(table[iap]))
    return pd.Series(list(zip(*cols)) if cols else [()] * len(table), index=table.index)


def combination_overlap(keys_by_split: dict[str, set]) -> pd.DataFrame:
    """Paper Table 3: for each pair of splits, unique combinations in A only, B only, and both."""
    rows = []
    for a, b in itertools.combinations(list(keys_by_split), 2):
        sa, sb = keys_by_split[a], keys_by_split[b]
        rows.append({"split_a": a, "split_b": b, "a_not_b": len(sa - sb), "b_not_a": len(sb - sa),
                     "both": len(sa & sb)})
    return pd.DataFrame(rows, columns=["split_a", "split_b", "a_not_b", "b_not_a", "both"])


def combination_summary(table: pd.DataFrame, keys: pd.Series, split_column: str = "split",
                        reference: str = "train") -> pd.DataFrame:
    """Per split: rows, unique combinations, how many of them (and what share of rows) also occur
    in the reference split."""
    splits = split_names(table, split_column)
    ref_keys: set = set()
    if reference in splits:
        ref_keys = set(keys[table[split_column].astype(str) == reference])
    rows = []
    for split in splits:
        mask = np.ones(len(table), bool) if split == "all" else (table[split_column].astype(str) == split).to_numpy()
        k = keys[mask]
        uniq = set(k)
        row = {"split": split, "n_rows": int(mask.sum()), "n_unique_combinations": len(uniq)}
        if ref_keys and split != reference:
            seen = uniq & ref_keys
            row[f"combinations_seen_in_{reference}"] = len(seen)
            row[f"combinations_unseen_in_{reference}"] = len(uniq - ref_keys)
            row[f"share_rows_with_combination_seen_in_{reference}"] = float(k.isin(ref_keys).mean()) if len(k) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def imbalance_summary(table: pd.DataFrame, iaps: list[str], kinds: dict[str, str],
                      split_column: str = "split") -> pd.DataFrame:
    """Per split and IAP: number of classes, majority class and share, minority share, imbalance
    ratio (majority count / minority count), Shannon entropy in bits and entropy / log2(K)
    (1 = perfectly balanced). Continuous IAPs (TR, TE) have no classes and are left out;
    missing values are reported, not counted as a class."""
    rows = []
    iaps = [iap for iap in iaps if kinds.get(iap, "categorical") != "continuous"]
    splits = split_names(table, split_column)
    if len(splits) > 1:
        splits = splits + ["all"]
    for split in splits:
        part = table if split == "all" else table[table[split_column].astype(str) == split]
        for iap in iaps:
            kind = kinds.get(iap, "categorical")
            vals = as_category_strings(part[iap])
            n_missing = int((vals == MISSING).sum())
            vc = vals[vals != MISSING].value_counts()
            n = int(vc.sum())
            k = int(len(vc))
            if n:
                p = (vc / n).to_numpy(float)
                entropy = max(0.0, float(-(p * np.log2(p)).sum()))
                row = {"majority_value": vc.index[0], "majority_share": float(vc.iloc[0] / n),
                       "minority_share": float(vc.iloc[-1] / n),
                       "imbalance_ratio": float(vc.iloc[0] / vc.iloc[-1]),
                       "entropy_bits": entropy,
                       "normalized_entropy": entropy / math.log2(k) if k > 1 else float("nan")}
            else:
                row = {"majority_value": None, "majority_share": float("nan"), "minority_share": float("nan"),
                       "imbalance_ratio": float("nan"), "entropy_bits": float("nan"),
                       "normalized_entropy": float("nan")}
            rows.append({"split": split, "iap": iap, "kind": kind, "n": n, "n_missing": n_missing,
                         "n_classes": k, **row})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------- figures
def _hist_figure(table: pd.DataFrame, split: str, iaps: list[str], kinds: dict[str, str],
                 categories: dict[str, list], bins: dict[str, np.ndarray]):
    from mridomain.report import figure_grid, wrap_label

    fig, axes = figure_grid(len(iaps), 4, 4.6, 4.4)
    for ax, iap in zip(axes, iaps):
        if kinds.get(iap) == "continuous":
            vals = _continuous(table[iap]).dropna().to_numpy()
            ax.hist(vals, bins=bins[iap], color="#4a6fa5", edgecolor="white")
            ax.set_xlabel("ms" if iap in ("tr", "te") else "")
        else:
            vals = as_category_strings(table[iap])
            cats = categories[iap] + ([MISSING] if (vals == MISSING).any() else [])
            counts = vals.value_counts().reindex(cats, fill_value=0)
            ax.bar(range(len(cats)), counts.to_numpy(), color="#4a6fa5")
            ax.set_xticks(range(len(cats)))
            ax.set_xticklabels([wrap_label(c) for c in cats], rotation=60, ha="right", fontsize=8)
        ax.set_title(iap, fontsize=10)
        ax.set_ylabel("count", fontsize=8)
    fig.suptitle(f"IAP value distributions: {split} (n={len(table)})")
    fig.tight_layout()
    return fig


def _corr_figure(corr: pd.DataFrame, split: str, nominal: list[str]):
    from matplotlib.figure import Figure

    k = len(corr)
    fig = Figure(figsize=(1.6 + 0.7 * k, 1.2 + 0.62 * k))
    ax = fig.subplots()
    im = ax.imshow(corr.to_numpy(float), vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(k))
    ax.set_xticklabels(corr.columns, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k))
    ax.set_yticklabels(corr.index, fontsize=8)
    for i in range(k):
        for j in range(k):
            v = corr.iat[i, j]
            if not np.isnan(v):
                is_v = i != j and (corr.index[i] in nominal or corr.columns[j] in nominal)
                ax.text(j, i, f"V{v:.2f}" if is_v else f"{v:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if abs(v) > 0.6 else "black")
    fig.colorbar(im, ax=ax, fraction=0.04)
    ax.set_title(f"Association between IAPs: {split}\nSpearman rho; V = Cramér's V (a nominal IAP in the pair)",
                 fontsize=9)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------ analyze
def analyze(source: Any, out: str | Path | None = None, split_column: str = "split",
            title: str = "Dataset IAP analysis", html: bool = True,
            combination_iaps: list[str] | None = None) -> AnalysisResult:
    """Acquisition landscape of a dataset (paper Appendix A.1).

    Args:
        source: index parquet (one row per series), slice cache folder (one row per slice) or a
            DataFrame with IAP columns.
        out: folder for CSV, markdown, PNG and ``report.html``; None computes only.
        split_column: column naming the split; without it everything is one split ``"all"``.
        title: report heading.
        html: also write the self-contained ``report.html``.
        combination_iaps: IAPs that make up a combination for Table 3 (default: the categorical
            ones; TR and TE vary continuously and would make almost every series unique).

    Returns:
        :class:`AnalysisResult` with the tables (and the files written).
    """
    table, meta, _ = load_source(source)
    if len(table) == 0:
        raise EmptyInputError(Path(str(source)) if not isinstance(source, pd.DataFrame) else Path("<table>"),
                              "table has no rows")
    kinds = iap_kinds(meta)
    iaps = _iap_columns(table, kinds)
    if split_column not in table.columns:
        table = table.assign(**{split_column: "all"})
    splits = split_names(table, split_column)

    categories = {iap: sorted_categories(as_category_strings(table[iap]))
                  for iap in iaps if kinds.get(iap) != "continuous"}
    categories = {k: [c for c in v if c != MISSING] for k, v in categories.items()}
    bins = {}
    for iap in iaps:
        if kinds.get(iap) == "continuous":
            vals = _continuous(table[iap]).dropna().to_numpy()
            bins[iap] = np.histogram_bin_edges(vals, bins=20) if len(vals) else np.linspace(0, 1, 21)

    counts = value_counts(table, iaps, kinds, split_column)
    nominal = nominal_iaps(table, iaps, kinds)
    correlations = {}
    for split in splits:
        part = table[table[split_column].astype(str) == split]
        correlations[split] = association_matrix(part, iaps, kinds, categories, nominal)
    if combination_iaps is None:
        combination_iaps = [i for i in iaps if kinds.get(i, "categorical") != "continuous"]
    combination_iaps = [i for i in iaps if i in combination_iaps]
    keys = combination_keys(table, combination_iaps, kinds)
    by_split = {s: set(keys[table[split_column].astype(str) == s]) for s in splits}
    overlap = combination_overlap(by_split)
    combos = combination_summary(table, keys, split_column)
    imbalance = imbalance_summary(table, iaps, kinds, split_column)
    result = AnalysisResult(out=Path(out) if out else None, splits=splits, iaps=iaps, counts=counts,
                            correlations=correlations, overlap=overlap, combinations=combos,
                            imbalance=imbalance, nominal=nominal, combination_iaps=combination_iaps)
    if out is None:
        return result
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_tables(result, out)
    _write_figures_and_report(result, table, out, kinds, categories, bins, split_column, title, html,
                              source_name=source if not isinstance(source, pd.DataFrame) else "DataFrame")
    return result


def _write_tables(result: AnalysisResult, out: Path) -> None:
    """The CSV and Markdown tables of an analysis, recorded in ``result.files``."""
    files = result.files
    result.counts.to_csv(out / "value_counts.csv", index=False)
    files["value_counts"] = out / "value_counts.csv"
    for split, corr in result.correlations.items():
        p = out / f"association_{split}.csv"
        corr.to_csv(p)
        files[f"association_{split}"] = p
    result.overlap.to_csv(out / "combination_overlap.csv", index=False)
    result.combinations.to_csv(out / "combinations.csv", index=False)
    result.imbalance.to_csv(out / "imbalance.csv", index=False)
    (out / "combinations.md").write_text(result.to_markdown() + "\n")
    files.update(combination_overlap=out / "combination_overlap.csv", combinations=out / "combinations.csv",
                 imbalance=out / "imbalance.csv", combinations_md=out / "combinations.md")


def _write_figures_and_report(result: AnalysisResult, table: pd.DataFrame, out: Path, kinds: dict[str, str],
                              categories: dict[str, list[str]], bins: dict[str, np.ndarray], split_column: str,
                              title: str, html: bool, source_name: Any) -> None:
    """Histograms and association heat maps per split (PNG), and the HTML report that gathers them."""
    files, splits, iaps, nominal = result.files, result.splits, result.iaps, result.nominal
    correlations, combination_iaps = result.correlations, result.combination_iaps
    combos, overlap, imbalance = result.combinations, result.overlap, result.imbalance
    sections = [Section("Dataset", text=(
        f"{len(table)} rows ({'slices' if 'slice_index' in table.columns or 'slice_id' in table.columns else 'series'}), "
        f"splits: {', '.join(f'{s} ({int((table[split_column].astype(str) == s).sum())})' for s in splits)}. "
        f"IAPs analysed: {', '.join(iaps)}."))]
    hist_pngs = {}
    for split in splits:
        part = table[table[split_column].astype(str) == split]
        png = figure_to_png(_hist_figure(part, split, iaps, kinds, categories, bins))
        (out / f"histograms_{split}.png").write_bytes(png)
        files[f"histograms_{split}"] = out / f"histograms_{split}.png"
        hist_pngs[split] = png
    sections.append(Section("IAP value distributions per split (paper Figs 3-5)",
                            text="Categorical IAPs as bar counts in natural value order (the order of "
                                 "the ordinal codes used for correlations); TR and TE as histograms "
                                 "with bins shared across splits.",
                            figures=[(f"split {s}", png) for s, png in hist_pngs.items()]))
    corr_figs = []
    for split, corr in correlations.items():
        png = figure_to_png(_corr_figure(corr, split, nominal))
        (out / f"association_{split}.png").write_bytes(png)
        files[f"association_{split}_png"] = out / f"association_{split}.png"
        corr_figs.append((f"split {split}", png))
    ordered = [i for i in iaps if i not in nominal]
    sections.append(Section("Associations between IAPs (paper Figs 6-8)",
                            text=("Pairs of ordered IAPs (" + ", ".join(ordered) + "): Spearman's rho, "
                                  "categorical values entering as codes 0..K-1 in numeric order, as in the paper. "
                                  "Pairs with a nominal IAP (" + (", ".join(nominal) or "none") + "), whose "
                                  "codes have no order: Cramér's V (0 = independent, 1 = one determines the "
                                  "other), marked V, with TR/TE cut into quantile bins. Blank cells: an IAP "
                                  "constant in that split."),
                            figures=corr_figs,
                            tables=[(f"split {s}", c.round(3)) for s, c in correlations.items()]))
    sections.append(Section("Unique IAP combinations (paper Table 3)",
                            text="A combination is the tuple of " + ", ".join(combination_iaps) + ".",
                            tables=[("per split", combos), ("overlap between splits", overlap)]))
    sections.append(Section("Class imbalance", text=(
        "Categorical IAPs only (TR and TE are continuous: they have no classes). "
        "n_classes: distinct values; imbalance_ratio: majority count / minority count; "
        "normalized_entropy: entropy / log2(n_classes), 1 = perfectly balanced."),
        tables=[imbalance]))
    if html:
        files["report"] = write_html_report(out / "report.html", title, sections, subtitle=f"source: {source_name}")
