"""Acquisition protocols: the IAPs of one series, and presets (YAML) that sample them like DBC.

A preset is a weighted list of scanner entries; each entry gives, per IAP, a fixed value, a
categorical distribution ``{value: weight}``, or a continuous one ``{mean, sd[, min, max]}`` /
``{min, max}``. Sampling the scanner first and then its IAPs gives the correlations of real
archives (manufacturer <-> TE/TR, scan options, matrix, patient position; site <-> agent).
Schema: docs/simulator.md.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml
from pydantic import Field, field_validator

from mridomain.config import Settings
from mridomain.errors import SchemaMismatchError
from mridomain.sim.breast.vendors import COIL_CHANNELS, MANUFACTURER_DICOM, VENDOR_RECON, ReconStyle

AGENT_LABELS = ("GADAVIST", "MAGNEVIST", "MMAGNEVIST", "MULTIHANCE", "not stated", "absent")


def _fmt(v: float) -> str:
    """Number as DBC's sheet writes it: '1.5', '3', '1.494', '1.1', '340'."""
    return f"{float(v):g}"


@dataclass(frozen=True)
class Protocol:
    """Every acquisition parameter of one series. Change any field with ``dataclasses.replace``.

    Units: field strength T, thickness and FOV mm, TR/TE ms, flip angle degrees.
    ``contrast_agent`` is the normalized header label (``"not stated"``: tag present but empty,
    ``"absent"``: no tag); ``agent`` is what was physically injected (drives post-contrast physics).
    """

    manufacturer: str = "GE"
    model: str = "Signa HDxt"
    field_strength: float = 1.5
    scan_options: str = "FAST_GEMS\\SAT_GEMS\\PFP\\FS"
    patient_position: str = "FFP"
    contrast_agent: str = "MAGNEVIST"
    agent: str = "MAGNEVIST"
    acq_freq: int = 448
    acq_phase: int = 448
    recon_matrix: int = 512
    slice_thickness: float = 1.1
    flip_angle: float = 10.0
    fov: float = 340.0
    tr: float = 5.5
    te: float = 2.4
    coil_channels: int = 8
    partial_fourier: float = 0.75
    acceleration: int = 2
    fatsat: str = "special"
    recon: ReconStyle = field(default_factory=lambda: VENDOR_RECON["GE"])
    series_description: str = "Ax Vibrant MultiPhase"
    site: str = "custom"

    @property
    def b0(self) -> float:
        """Field strength driving the physics (the header value)."""
        return float(self.field_strength)

    @property
    def manufacturer_dicom(self) -> str:
        """The manufacturer as the DICOM header spells it (``GE`` -> ``GE MEDICAL SYSTEMS``; others unchanged)."""
        return MANUFACTURER_DICOM.get(self.manufacturer, self.manufacturer)

    @property
    def pixel_mm(self) -> float:
        """In-plane pixel spacing of the reconstructed image (mm): field of view / reconstruction matrix."""
        return self.fov / self.recon_matrix

    def iaps(self) -> dict[str, Any]:
        """The 12 IAPs in the schema's normalized form (mridomain.data.schema naming)."""
        return {
            "manufacturer": self.manufacturer,
            "scanner_model": self.model,
            "scan_options": self.scan_options,
            "field_strength": _fmt(self.field_strength),
            "patient_position": self.patient_position,
            "contrast_agent": self.contrast_agent,
            "acquisition_matrix": f"{self.acq_freq} X {self.acq_phase}",
            "slice_thickness": _fmt(self.slice_thickness),
            "flip_angle": _fmt(self.flip_angle),
            "fov": _fmt(self.fov),
            "tr": round(float(self.tr), 3),
            "te": round(float(self.te), 3),
        }


def derive(p: Protocol) -> Protocol:
    """Fill the fields implied by scan options and vendor (fat-sat method, PF, acceleration, recon)."""
    opts = set(p.scan_options.split("\\")) if p.scan_options else set()
    if "SAT_GEMS" in opts:
        fatsat = "special"
    elif "SFS" in opts:
        fatsat = "spair"
    elif "FS" in opts:
        fatsat = "chess"
    else:
        fatsat = "none"
    pf = (0.70 if p.manufacturer == "GE" else 0.75) if "PFP" in opts else 1.0
    accel = 2 if "ACC_GEMS" in opts else 1
    return dataclasses.replace(p, fatsat=fatsat, partial_fourier=pf, acceleration=accel)


# ---- presets ------------------------------------------------------------------------------------
def load_preset(preset: str | Path) -> dict:
    """Load the named built-in preset ("dbc") or a YAML file, validated; raises SchemaMismatchError."""
    if isinstance(preset, str) and preset == "dbc":
        text = resources.files("mridomain.sim.breast").joinpath("resources/dbc.yaml").read_text()
        source = "dbc"
    else:
        path = Path(preset)
        if not path.is_file():
            raise SchemaMismatchError(f"{preset}: not a preset name ('dbc') and no such YAML file")
        text = path.read_text()
        source = str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SchemaMismatchError(f"{source}: invalid YAML ({str(err).splitlines()[0]})") from None
    validate_preset(data, source)
    return data


class ScannerEntry(Settings):
    """One scanner entry of a preset. Every IAP is a fixed value, a ``{value: weight}`` mapping, a
    normal ``{mean, sd[, min, max]}`` or a uniform ``{min, max}`` distribution."""

    manufacturer: str
    model: str
    field_strength: Any
    scan_options: Any
    patient_position: Any
    contrast_agent: Any
    acquisition_matrix: Any
    slice_thickness: Any
    flip_angle: Any
    fov: Any
    tr: Any
    te: Any
    weight: float = Field(1.0, ge=0)
    name: Optional[str] = None
    recon_matrix: Any = None
    coil_channels: Any = None
    hidden_agent: Any = None
    series_description: Any = None
    recon: Optional[dict[str, Any]] = None
    readout_coupling: Any = None

    @field_validator("manufacturer")
    @classmethod
    def _known_vendor(cls, value: str) -> str:
        if value not in MANUFACTURER_DICOM:
            raise ValueError(f"must be one of {sorted(MANUFACTURER_DICOM)}")
        return value

    @field_validator("field_strength", "scan_options", "patient_position", "contrast_agent", "acquisition_matrix",
                     "slice_thickness", "flip_angle", "fov", "tr", "te")
    @classmethod
    def _distribution(cls, spec: Any) -> Any:
        problem = _spec_problem(spec)
        if problem:
            raise ValueError(problem)
        return spec

    @field_validator("acquisition_matrix")
    @classmethod
    def _matrices(cls, spec: Any) -> Any:
        for v in _values(spec):
            _parse_matrix(v)
        return spec

    @field_validator("contrast_agent")
    @classmethod
    def _agents(cls, spec: Any) -> Any:
        bad = [v for v in _values(spec) if str(v) not in AGENT_LABELS]
        if bad:
            raise ValueError(f"{bad[0]!r} is not one of {AGENT_LABELS}")
        return spec

    @field_validator("patient_position")
    @classmethod
    def _positions(cls, spec: Any) -> Any:
        bad = [v for v in _values(spec) if str(v) not in ("FFP", "HFP", "HFS", "FFS")]
        if bad:
            raise ValueError(f"{bad[0]!r} is not FFP/HFP/HFS/FFS")
        return spec

    @field_validator("recon")
    @classmethod
    def _recon_keys(cls, recon: dict[str, Any] | None) -> dict[str, Any] | None:
        bad = set(recon or {}) - {f.name for f in dataclasses.fields(ReconStyle)}
        if bad:
            raise ValueError(f"unknown key(s) {', '.join(sorted(bad))}")
        return recon


class PresetConfig(Settings):
    """A simulator preset file: a name and a non-empty list of scanner entries."""

    name: Optional[str] = None
    scanners: list[ScannerEntry] = Field(min_length=1)


def validate_preset(data: Any, source: str = "preset") -> None:
    """Check a preset (:class:`PresetConfig`), naming the file, the entry and the field of the
    first problem: ``my.yaml: field 'scanners.0.acquisition_matrix': ...``."""
    PresetConfig.from_dict(data, where=source)


def _values(spec) -> list:
    if isinstance(spec, dict) and not ({"mean", "min", "max"} & set(spec)):
        return list(spec)
    return [spec] if not isinstance(spec, dict) else []


def _spec_problem(spec: Any) -> str | None:
    """Why ``spec`` is not a value or a distribution, or None."""
    if isinstance(spec, dict):
        if not spec:
            return "empty distribution"
        if {"mean", "min", "max"} & set(spec):
            if "mean" in spec and "sd" not in spec:
                return "a normal distribution needs 'mean' and 'sd'"
            if "mean" not in spec and not {"min", "max"} <= set(spec):
                return "a uniform distribution needs 'min' and 'max'"
            return None
        ws = list(spec.values())
        if not all(isinstance(w, (int, float)) and w >= 0 for w in ws) or sum(ws) <= 0:
            return "weights must be non-negative numbers with a positive sum"
    elif isinstance(spec, list):
        return "use a mapping {value: weight}, not a list"
    return None


def _parse_matrix(v: Any) -> tuple[int, int]:
    try:
        a, b = (int(t) for t in str(v).upper().split("X"))
    except ValueError:
        raise ValueError(f"{v!r} is not 'FREQ X PHASE' (e.g. '448 X 381')") from None
    return a, b


def _draw(spec, rng: np.random.Generator, weights_mod=None):
    if isinstance(spec, dict):
        if "mean" in spec:
            v = rng.normal(float(spec["mean"]), float(spec["sd"]))
            return float(np.clip(v, spec.get("min", -np.inf), spec.get("max", np.inf)))
        if {"min", "max"} <= set(spec):
            return float(rng.uniform(float(spec["min"]), float(spec["max"])))
        keys = list(spec)
        w = np.array([float(spec[k]) for k in keys])
        if weights_mod is not None:
            w = w * np.array([weights_mod(k) for k in keys])
            if w.sum() <= 0:
                w = np.array([float(spec[k]) for k in keys])
        return keys[int(rng.choice(len(keys), p=w / w.sum()))]
    return spec


def sample_protocols(preset: str | Path | dict, n: int, rng: np.random.Generator,
                     body_widths_mm: list[float] | None = None) -> list[Protocol]:
    """Draw ``n`` protocols from a preset. With ``body_widths_mm`` the FOV is chosen, as a
    technologist does, among the preset's FOVs closest to each patient's width (so FOV is hard to
    read from anatomy size, as in real data)."""
    data = preset if isinstance(preset, dict) else load_preset(preset)
    scanners = data["scanners"]
    w = np.array([float(s.get("weight", 1.0)) for s in scanners])
    out = []
    for i in range(n):
        sc = scanners[int(rng.choice(len(scanners), p=w / w.sum()))]
        out.append(protocol_from_entry(sc, rng, None if body_widths_mm is None else body_widths_mm[i]))
    return out


def protocol_from_entry(sc: dict, rng: np.random.Generator, body_width_mm: float | None = None) -> Protocol:
    """Draw one protocol from one scanner entry of a preset."""
    man = sc["manufacturer"]
    model = str(sc["model"])
    fs = float(_draw(sc["field_strength"], rng))
    opts = str(_draw(sc["scan_options"], rng))
    pos = str(_draw(sc["patient_position"], rng))
    agent_label = str(_draw(sc["contrast_agent"], rng))
    hidden = sc.get("hidden_agent", {"MAGNEVIST": 1.0})
    if agent_label in ("GADAVIST", "MAGNEVIST", "MULTIHANCE"):
        agent = agent_label
    elif agent_label == "MMAGNEVIST":  # a typo in the source data: Magnevist was injected
        agent = "MAGNEVIST"
    else:
        agent = str(_draw(hidden, rng))
    freq, phase = _parse_matrix(_draw(sc["acquisition_matrix"], rng))
    recon_spec = sc.get("recon_matrix", None)
    recon = int(_draw(recon_spec, rng)) if recon_spec is not None else int(max(freq, phase))
    recon = max(recon, freq, phase)
    thick = float(_draw(sc["slice_thickness"], rng))
    flip = float(_draw(sc["flip_angle"], rng))
    if body_width_mm is not None and isinstance(sc["fov"], dict) and "mean" not in sc["fov"]:
        target = body_width_mm + 25.0
        fov = float(_draw(sc["fov"], rng, weights_mod=lambda v: np.exp(-0.5 * ((float(v) - target) / 30) ** 2)))
    else:
        fov = float(_draw(sc["fov"], rng))
    tr = float(_draw(sc["tr"], rng))
    te = float(_draw(sc["te"], rng))
    if sc.get("readout_coupling", True):
        # a longer readout (more frequency samples at the same bandwidth) lengthens TE and TR
        tr += 0.004 * (freq - 448)
        te += 0.0012 * (freq - 448)
        for spec, name in ((sc["tr"], "tr"), (sc["te"], "te")):
            if isinstance(spec, dict):  # stay inside the preset's documented range
                lo, hi = spec.get("min", -np.inf), spec.get("max", np.inf)
                if name == "tr":
                    tr = float(np.clip(tr, lo, hi))
                else:
                    te = float(np.clip(te, lo, hi))
    recon_style = VENDOR_RECON[man]
    if "recon" in sc:
        recon_style = dataclasses.replace(recon_style, **sc["recon"])
    desc = sc.get("series_description")
    if desc is None:
        if man == "GE":
            desc = "Ax Vibrant MultiPhase" if "MP_GEMS" in opts else "AX VIBRANT"
        else:
            desc = "t1_fl3d_tra_dynVIEWS_" + ("spair" if "SFS" in opts else "fs")
    p = Protocol(manufacturer=man, model=model, field_strength=fs, scan_options=opts,
                 patient_position=pos, contrast_agent=agent_label, agent=agent, acq_freq=freq,
                 acq_phase=phase, recon_matrix=recon, slice_thickness=thick, flip_angle=flip,
                 fov=fov, tr=round(tr, 3), te=round(te, 3),
                 coil_channels=int(sc.get("coil_channels", COIL_CHANNELS.get(model, 8))),
                 recon=recon_style, series_description=str(desc), site=str(sc.get("name", model)))
    return derive(p)


def make_protocol(**kwargs) -> Protocol:
    """A protocol from keyword IAPs (vendor recon defaults follow ``manufacturer``), fully derived."""
    man = kwargs.get("manufacturer", "GE")
    kwargs.setdefault("recon", VENDOR_RECON[man])
    if "contrast_agent" in kwargs and "agent" not in kwargs:
        lab = kwargs["contrast_agent"]
        kwargs["agent"] = lab if lab in ("GADAVIST", "MAGNEVIST", "MULTIHANCE") else "MAGNEVIST"
    return derive(Protocol(**kwargs))
