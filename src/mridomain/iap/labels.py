"""Label encoding: vocabularies from the training split, an explicit "other" class, masked missing labels.

Every categorical IAP k gets the sorted values seen in the training split plus one last class
``"other"`` for values first met at validation, test or prediction time, so C_k = len(values) + 1.
Missing values (None / NaN) become ``IGNORE_INDEX`` (categorical) or NaN (continuous): the loss masks
that term only, so a slice missing one label still teaches the others.
Continuous IAPs (TR, TE in ms, and any dense categorical IAP configured as continuous) are
standardized with the training mean and standard deviation; the model predicts standardized values
and :meth:`LabelEncoder.to_units` brings them back to ms / mm / degrees.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from mridomain.data.schema import is_missing  # noqa: F401  (also imported from here by prediction)
from mridomain.engine.checkpoint import dump_json, read_json
from mridomain.errors import SchemaMismatchError

IGNORE_INDEX = -100
OTHER = "other"


def category_string(value: Any) -> str:
    """One canonical string per category value (3.0 and "3" are the same class)."""
    if isinstance(value, (float, np.floating)):
        return f"{float(value):g}"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return str(value)


def as_float(value: Any) -> float:
    """A continuous target in its unit, NaN when missing or not a number."""
    if is_missing(value):
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _sort_key(values: Iterable[str]) -> list[str]:
    vals = list(values)
    try:
        return sorted(vals, key=lambda v: (float(v), v))   # numeric-looking classes in numeric order
    except ValueError:
        return sorted(vals)


@dataclass
class Head:
    """One IAP's slice of the network output."""

    name: str
    kind: str                      # "categorical" | "continuous"
    unit: str | None = None
    classes: list[str] = field(default_factory=list)   # categorical: vocabulary, "other" last
    counts: list[int] = field(default_factory=list)    # categorical: training count per class
    mean: float = 0.0              # continuous: training mean (unit)
    std: float = 1.0               # continuous: training std (unit)
    n_train: int = 0               # labelled training slices
    source_kind: str = "categorical"   # the kind the cache declares (differs for starred rows)

    @property
    def size(self) -> int:
        """Network outputs of this head: the class count, or 1 for a continuous IAP."""
        return len(self.classes) if self.kind == "categorical" else 1

    @property
    def n_seen_classes(self) -> int:
        """Classes seen in training (the "other" class excluded)."""
        return len(self.classes) - 1 if self.kind == "categorical" else 0


class LabelEncoder:
    """Maps a cache table's IAP columns to integer classes / standardized floats and back."""

    def __init__(self, heads: Sequence[Head]):
        self.heads: list[Head] = list(heads)
        offsets = np.cumsum([0] + [h.size for h in self.heads])
        self.slices: dict[str, slice] = {h.name: slice(int(a), int(b))
                                         for h, a, b in zip(self.heads, offsets[:-1], offsets[1:])}

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def fit(cls, table: pd.DataFrame, iaps: Sequence[dict[str, Any]], as_continuous: Iterable[str] = (),
            split: str | None = "train") -> "LabelEncoder":
        """Learn vocabularies and standardization from the rows of ``split`` (all rows if None).

        ``iaps`` is the cache's ``meta["iaps"]`` list (dicts with name, kind, unit), in output order.

        Each categorical head gets the training vocabulary plus ``"other"``; a continuous one the
        training mean and standard deviation (a value only the validation split holds is not learned):

        >>> table = pd.DataFrame({"split": ["train", "train", "train", "val"],
        ...                       "manufacturer": ["GE", "SIEMENS", "GE", "Philips"],
        ...                       "tr_ms": [4.0, 6.0, 5.0, 1.0]})
        >>> encoder = LabelEncoder.fit(table, [{"name": "manufacturer"}, {"name": "tr_ms", "kind": "continuous"}])
        >>> encoder.head("manufacturer").classes, encoder.head("manufacturer").counts
        (['GE', 'SIEMENS', 'other'], [2, 1, 0])
        >>> encoder.head("tr_ms").mean
        5.0
        """
        rows = table[table["split"] == split] if split is not None and "split" in table else table
        if len(rows) == 0:
            raise SchemaMismatchError(f"label encoder: no rows in split {split!r} to fit on")
        as_continuous = set(as_continuous)
        heads = []
        for spec in iaps:
            name, kind, unit = spec["name"], spec.get("kind", "categorical"), spec.get("unit")
            if name not in table.columns:
                raise SchemaMismatchError(f"label encoder: IAP column {name!r} missing from the slice table")
            col = rows[name]
            if kind == "continuous" or name in as_continuous:
                vals = np.array([as_float(v) for v in col], dtype=np.float64)
                vals = vals[np.isfinite(vals)]
                mean = float(vals.mean()) if len(vals) else 0.0
                std = float(vals.std()) if len(vals) > 1 else 0.0
                heads.append(Head(name, "continuous", unit, mean=mean, std=std if std > 1e-12 else 1.0,
                                  n_train=int(len(vals)), source_kind=kind))
            else:
                strings = [category_string(v) for v in col if not is_missing(v)]
                vocab = _sort_key(set(strings) - {OTHER})
                classes = vocab + [OTHER]
                counts = pd.Series(strings).value_counts() if strings else pd.Series(dtype=int)
                heads.append(Head(name, "categorical", unit, classes=classes,
                                  counts=[int(counts.get(c, 0)) for c in classes],
                                  n_train=len(strings), source_kind=kind))
        return cls(heads)

    # ---- properties ---------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        """IAP names in output order."""
        return [h.name for h in self.heads]

    @property
    def categorical(self) -> list[Head]:
        """The categorical heads."""
        return [h for h in self.heads if h.kind == "categorical"]

    @property
    def continuous(self) -> list[Head]:
        """The continuous heads."""
        return [h for h in self.heads if h.kind == "continuous"]

    @property
    def n_outputs(self) -> int:
        """sum(C_k) + M: the width of the network's final linear layer."""
        return sum(h.size for h in self.heads)

    def head(self, name: str) -> Head:
        """The head of one IAP (a one-line error for an unknown name)."""
        for h in self.heads:
            if h.name == name:
                return h
        raise KeyError(name)

    def schema(self) -> list[tuple[str, str]]:
        """(name, kind as the data declares it) per IAP: what a cache must match."""
        return [(h.name, h.source_kind) for h in self.heads]

    def check_schema(self, iaps: Sequence[dict[str, Any]], where: str, mine: str = "checkpoint") -> None:
        """Refuse data whose IAP schema differs (one-line :class:`SchemaMismatchError`)."""
        theirs = {spec["name"]: spec.get("kind", "categorical") for spec in iaps}
        missing = [f"{n}:{k}" for n, k in self.schema() if theirs.get(n) != k]
        if missing:
            ours = ",".join(f"{n}:{k}" for n, k in self.schema())
            other = ",".join(f"{n}:{k}" for n, k in theirs.items())
            raise SchemaMismatchError(f"{mine} IAP schema [{ours}] does not match {where} [{other}] "
                                      f"(missing or different: {', '.join(missing)})")

    # ---- encoding -----------------------------------------------------------------------------
    def encode(self, table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Targets for every row: categorical (N, K) int64 with IGNORE_INDEX for missing,
        continuous (N, M) float32 standardized with NaN for missing."""
        n = len(table)
        cat = np.full((n, len(self.categorical)), IGNORE_INDEX, dtype=np.int64)
        cont = np.full((n, len(self.continuous)), np.nan, dtype=np.float32)
        for j, h in enumerate(self.categorical):
            lookup = {c: i for i, c in enumerate(h.classes)}
            other = lookup[OTHER]
            cat[:, j] = [IGNORE_INDEX if is_missing(v) else lookup.get(category_string(v), other)
                         for v in table[h.name]]
        for j, h in enumerate(self.continuous):
            vals = np.array([as_float(v) for v in table[h.name]], dtype=np.float64)
            cont[:, j] = (vals - h.mean) / h.std
        return cat, cont

    def truth_units(self, table: pd.DataFrame) -> np.ndarray:
        """Continuous targets in their units (N, M), NaN where missing."""
        return np.stack([np.array([as_float(v) for v in table[h.name]], dtype=np.float64)
                         for h in self.continuous], axis=1) if self.continuous else np.zeros((len(table), 0))

    def to_units(self, z: np.ndarray) -> np.ndarray:
        """Standardized continuous predictions (N, M) -> their units."""
        mean = np.array([h.mean for h in self.continuous])
        std = np.array([h.std for h in self.continuous])
        return np.asarray(z, dtype=np.float64) * std + mean

    # ---- persistence --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The label schema as JSON-ready values (``labels.json``)."""
        return {"version": 1, "ignore_index": IGNORE_INDEX, "other": OTHER,
                "heads": [asdict(h) for h in self.heads]}

    def to_json(self, path: str | Path | None = None) -> str:
        """The label schema written as JSON to ``path``."""
        return dump_json(self.to_dict(), path)

    @classmethod
    def from_dict(cls, d: Any, where: str = "labels.json") -> "LabelEncoder":
        """An encoder from its JSON form; a damaged or foreign schema is a one-line error."""
        if not isinstance(d, dict) or not isinstance(d.get("heads"), list):
            raise SchemaMismatchError(f"{where}: not a label schema (no list of 'heads')")
        try:
            heads = [Head(**h) for h in d["heads"]]
        except TypeError as err:
            raise SchemaMismatchError(f"{where}: malformed head ({err})") from None
        for h in heads:
            if h.kind not in ("categorical", "continuous"):
                raise SchemaMismatchError(f"{where}: head {h.name!r} has unknown kind {h.kind!r}")
            if h.kind == "categorical" and not h.classes:
                raise SchemaMismatchError(f"{where}: categorical head {h.name!r} has no classes")
        return cls(heads)

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> "LabelEncoder":
        """A label schema read back from ``labels.json``."""
        s = str(text_or_path)
        if s.lstrip().startswith("{"):
            return cls.from_dict(json.loads(s), where="labels")
        return cls.from_dict(read_json(s), where=s)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelEncoder) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        parts = [f"{h.name}[{h.size}]" if h.kind == "categorical" else f"{h.name}(cont)" for h in self.heads]
        return f"LabelEncoder({', '.join(parts)}; outputs={self.n_outputs})"


#: What a left-right mirror of the stored image turns each patient position into: prone or supine,
#: head first and feet first see the patient from opposite ends, so their stored images are mirrors.
MIRRORED_POSITION = {"HFP": "FFP", "FFP": "HFP", "HFS": "FFS", "FFS": "HFS"}


def mirror_relabeling(encoder: LabelEncoder, iap: str = "patient_position") -> tuple[int, np.ndarray] | None:
    """(column of ``iap`` among the categorical targets, class index -> class index after a
    left-right mirror), or None when the encoder has no such head.

    A class whose mirror is not in the vocabulary (decubitus positions, "other", a position seen
    only one way round) maps to IGNORE_INDEX: the mirrored slice then teaches the other IAPs only.
    """
    for column, head in enumerate(encoder.categorical):
        if head.name == iap:
            index = {c: k for k, c in enumerate(head.classes)}
            relabel = [index.get(MIRRORED_POSITION.get(c, ""), IGNORE_INDEX) for c in head.classes]
            return column, np.array(relabel, dtype=np.int64)
    return None


def mirror_output_map(encoder: LabelEncoder, iap: str = "patient_position") -> tuple[np.ndarray, np.ndarray]:
    """How to read a left-right mirrored slice's network outputs as outputs for the slice itself:
    (index, has_mirror), both of length ``encoder.n_outputs``.

    Output ``k`` of the slice corresponds to output ``index[k]`` of its mirror. That is the same
    output for every IAP a mirror leaves unchanged (all of them but ``iap``), and the mirrored
    position's class for ``iap`` (HFP <-> FFP). ``has_mirror[k]`` is False for a class of ``iap``
    whose mirror is not in the vocabulary ("other", a position seen only one way round): the
    mirrored slice says nothing about it.

    >>> enc = LabelEncoder.fit(pd.DataFrame({"patient_position": ["HFP", "FFP", "HFS"]}),
    ...                        [{"name": "patient_position"}], split=None)
    >>> enc.head("patient_position").classes
    ['FFP', 'HFP', 'HFS', 'other']
    >>> index, has = mirror_output_map(enc)
    >>> index.tolist(), has.tolist()
    ([1, 0, 2, 3], [True, True, False, False])
    """
    index = np.arange(encoder.n_outputs, dtype=np.int64)
    has_mirror = np.ones(encoder.n_outputs, dtype=bool)
    relabel = mirror_relabeling(encoder, iap)
    if relabel is not None:
        column, classes = relabel
        start = encoder.slices[encoder.categorical[column].name].start
        for k, mirrored in enumerate(classes):
            if mirrored == IGNORE_INDEX:
                has_mirror[start + k] = False
            else:
                index[start + k] = start + int(mirrored)
    return index, has_mirror
