"""Image kinds and volumes: phase, derived, localizer and secondary-capture images told apart from
anatomy; Siemens mosaics recognised; the volumes of a multi-volume series labelled.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any


from mridomain.io.fields import VOLUME_KEYWORDS
# ----------------------------------------------------------------------------- image kinds
#: Images that are not anatomical magnitude images; predictions and caches leave them out unless
#: asked to keep them (``keep_kinds``): a model of acquisition parameters was never shown them.
IMAGE_KINDS: tuple[str, ...] = ("phase", "derived", "localizer", "secondary capture")

_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"           # PS3.4 B.5: SC and multi-frame SC (.7.x)
_DERIVED_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.30": "Parametric Map Storage",
                        "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation Storage"}
# ImageType values (PS3.3 C.8.16.1 and vendor usage) of parametric maps, projections and
# subtractions; "DERIVED" alone is not enough (reformats and filtered magnitude images are
# DERIVED and still anatomy, e.g. pydicom's MR_small and MR-SIEMENS files).
_MAP_TOKENS = frozenset({"ADC", "EADC", "FA", "MAP", "T1 MAP", "T2 MAP", "T2* MAP", "R1", "R2", "R2*",
                         "B0", "B1", "FIELD_MAP", "CBF", "CBV", "MTT", "TTP", "RCBF", "RCBV",
                         "PERFUSION", "PROJECTION IMAGE", "MIP", "MINIP", "SUB", "SUBTRACTION",
                         "COLLAPSE", "FUSED"})
_LOCALIZER_WORDS = re.compile(r"\b(localizers?|localisers?|scouts?|survey|3[- ]?pl(ane)?\s*loc|loc|aahscout\w*)\b",
                              re.IGNORECASE)


def image_kind(fields: dict[str, Any]) -> tuple[str, str] | None:
    """(kind, evidence) of an image that is not an anatomical magnitude image, else None.

    Kinds (:data:`IMAGE_KINDS`): ``"secondary capture"`` (SOP class 1.2.840.10008.5.1.4.1.1.7[.x]);
    ``"localizer"`` (ImageType LOCALIZER, or a SeriesDescription naming a localizer, scout or
    survey); ``"phase"`` (ImageType P / PHASE / Philips P_*, or ComplexImageComponent PHASE);
    ``"derived"`` (parametric maps, projections and subtractions: ImageType values such as ADC,
    FA, T1 MAP, MIP, SUB, or a Parametric Map / Segmentation SOP class).
    """
    sop = str(fields.get("SOPClassUID") or "")
    if sop == _SECONDARY_CAPTURE or sop.startswith(_SECONDARY_CAPTURE + "."):
        return "secondary capture", f"SOP class {sop}"
    tokens = [str(t).strip().upper() for t in (fields.get("ImageType") or []) if t is not None]
    shown = "\\".join(tokens)
    if "LOCALIZER" in tokens:
        return "localizer", f"ImageType {shown}"
    description = str(fields.get("SeriesDescription") or "")
    if _LOCALIZER_WORDS.search(description.replace("_", " ")):
        return "localizer", f"SeriesDescription {description!r}"
    if str(fields.get("ComplexImageComponent") or "").upper() == "PHASE":
        return "phase", "ComplexImageComponent PHASE"
    if any(t in ("P", "PHASE", "PHASE MAP") or t.startswith("P_") for t in tokens[2:]):
        return "phase", f"ImageType {shown}"
    if sop in _DERIVED_SOP_CLASSES:
        return "derived", _DERIVED_SOP_CLASSES[sop]
    if any(t in _MAP_TOKENS or t.endswith(" MAP") for t in tokens[2:]):
        return "derived", f"ImageType {shown}"
    return None


def kind_problem(fields: dict[str, Any], keep_kinds: Iterable[str] = ()) -> str | None:
    """The skip reason of an image whose :func:`image_kind` is not in ``keep_kinds``, else None."""
    found = image_kind(fields)
    if found is None or found[0] in set(keep_kinds):
        return None
    kind, evidence = found
    return f"{kind} image ({evidence}): not an anatomical image; keep_kinds=('{kind}',) keeps it"


def check_keep_kinds(keep_kinds: Iterable[str]) -> tuple[str, ...]:
    """``keep_kinds`` validated against :data:`IMAGE_KINDS` (InvalidArgumentError otherwise)."""
    from mridomain.errors import InvalidArgumentError

    kinds = tuple(keep_kinds)
    unknown = [k for k in kinds if k not in IMAGE_KINDS]
    if unknown:
        raise InvalidArgumentError(f"keep_kinds {unknown}: choose among {', '.join(IMAGE_KINDS)}")
    return kinds


# ----------------------------------------------------------------------------- mosaics and volumes
def volume_labels(positions: Sequence[float | None], values: Sequence[dict[str, Any]],
                  keywords: Sequence[str] = VOLUME_KEYWORDS) -> tuple[list[int], str]:
    """Volume number (0, 1, ...) of each image of one series, and what tells the volumes apart.

    A series is one volume unless several of its images share a slice position (``positions``:
    mm along the slice normal). Then the first of ``keywords`` (default :data:`VOLUME_KEYWORDS`:
    temporal position, b-value, echo, acquisition) whose values differ and leave no repeated
    position inside any volume splits it, volumes numbered in the order of that value. When
    none does but every position holds the same number of images, the k-th image at each
    position (by InstanceNumber in ``values``) goes to volume k (``"InstanceNumber order"``).
    Otherwise the series stays one volume. Returns ``([0] * n, "")`` for one volume.
    """
    n = len(positions)
    single: tuple[list[int], str] = ([0] * n, "")
    if n < 2 or any(p is None for p in positions):
        return single
    spot = [round(float(p), 3) for p in positions]  # type: ignore[arg-type]
    if len(set(spot)) == n:
        return single
    for keyword in keywords:
        tags = [_sortable(v.get(keyword)) for v in values]
        distinct = sorted(set(tags))
        if len(distinct) < 2:
            continue
        members: dict[Any, list[float]] = {}
        for tag, where in zip(tags, spot):
            members.setdefault(tag, []).append(where)
        if all(len(set(m)) == len(m) for m in members.values()):
            rank = {tag: k for k, tag in enumerate(distinct)}
            return [rank[t] for t in tags], keyword
    counts: dict[float, list[int]] = {}
    for i, where in enumerate(spot):
        counts.setdefault(where, []).append(i)
    if len({len(v) for v in counts.values()}) == 1:
        labels = [0] * n
        for members_at in counts.values():
            members_at.sort(key=lambda i: (_sortable(values[i].get("InstanceNumber")), i))
            for k, i in enumerate(members_at):
                labels[i] = k
        return labels, "InstanceNumber order"
    return single


def _sortable(value: Any) -> tuple:
    """A key that orders None last and never compares numbers with text."""
    if value is None or value == "" or value == []:
        return (2, 0, "")
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0, str(value))
