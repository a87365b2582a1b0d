"""Tissue parameters and signal physics of a fat-saturated 3D spoiled gradient echo (DCE breast MRI).

Every number here is a literature value collected in ``shared/FIELD.md`` section 4, cited at its use.
Values for field strengths other than 1.5 T and 3 T (Siemens' 1.494 T, 2.8936 T) are linearly
interpolated in B0, which is how relaxation times vary over that small range.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Tissue classes of the phantom, in the order of the fraction stack the phantom returns.
TISSUES: tuple[str, ...] = ("fat", "fgt", "muscle", "skin", "blood", "myocardium", "lung",
                            "tumor", "tumor_core", "bone", "liver", "csf", "node")


@dataclass(frozen=True)
class TissueProps:
    """Relaxation and proton density of one tissue at 1.5 T and 3 T (FIELD.md section 4 table)."""

    t1_15: float  # ms
    t1_30: float
    t2_15: float  # ms (spin-spin T2; T2* adds the field-dependent R2' below)
    t2_30: float
    pd: float     # relative proton density
    fat: bool = False  # resonates at the fat frequency (chemical shift, fat saturation)


# FIELD.md section 4 table. Bone: cortical bone has almost no MR-visible signal (PD ~0.05); rib marrow
# is modelled as fat inside the chest-wall band by the phantom.
TISSUE_PROPS: dict[str, TissueProps] = {
    "fat": TissueProps(296, 367, 53, 133, 0.90, fat=True),
    "fgt": TissueProps(1266, 1445, 57, 54, 0.80),
    "muscle": TissueProps(1008, 1412, 44, 50, 0.75),
    "skin": TissueProps(600, 700, 40, 40, 0.60),
    "blood": TissueProps(1441, 1932, 290, 275, 0.90),
    "myocardium": TissueProps(1030, 1471, 40, 47, 0.80),
    "lung": TissueProps(1200, 1400, 30, 25, 0.10),
    "tumor": TissueProps(1200, 1400, 70, 70, 0.80),
    # necrotic / cystic core of large tumours: more free water, longer T1 and T2 than viable tumour
    "tumor_core": TissueProps(1500, 1700, 120, 110, 0.85),
    "bone": TissueProps(500, 600, 1, 1, 0.05),
    # liver: de Bazelaire et al., Radiology 2004;230:652 (T1 586 / 809 ms, T2 46 / 34 ms at 1.5 / 3 T);
    # PD from its ~71 % water content
    "liver": TissueProps(586, 809, 46, 34, 0.71),
    # cerebrospinal fluid in the spinal canal: FIELD.md section 6 (T1 4000-4500 ms, T2 ~2000 ms)
    "csf": TissueProps(4300, 4300, 2000, 2000, 1.0),
    # axillary lymph node cortex: solid soft tissue with the invasive-tumour relaxation of the FIELD.md
    # table (no separate node values are in it); a normal node's fatty hilum is rendered as fat
    "node": TissueProps(1200, 1400, 70, 70, 0.80),
}

#: Reversible dephasing R2' (1/ms) at 1.5 T, scaling linearly with B0: 1/T2* = 1/T2 + R2'.
#: Soft tissue R2' ~ 20 s^-1 at 1.5 T; lung parenchyma T2* ~ 1-2 ms at 1.5 T (air-tissue interfaces).
R2PRIME_15: dict[str, float] = {"lung": 0.6, "bone": 0.5}
R2PRIME_DEFAULT_15 = 0.020

#: Fat-water chemical shift, 3.4 ppm (FIELD.md: ~220 Hz at 1.5 T). Fat resonates below water.
FAT_SHIFT_PPM = -3.4
GAMMA_MHZ_PER_T = 42.577

#: r1 relaxivity in plasma, mM^-1 s^-1, at 1.5 T / 3 T (FIELD.md section 4).
RELAXIVITY: dict[str, tuple[float, float]] = {
    "GADAVIST": (5.2, 5.0),    # gadobutrol
    "MAGNEVIST": (4.1, 3.7),   # gadopentetate
    "MULTIHANCE": (6.3, 5.5),  # gadobenate
    "OMNISCAN": (4.3, 4.0),    # gadodiamide
    "DOTAREM": (3.6, 3.5),     # gadoterate
}
#: Formulation concentration (mol/L): Gadavist is 1.0 M, the others 0.5 M (FIELD.md).
AGENT_MOLARITY: dict[str, float] = {"GADAVIST": 1.0}
STANDARD_DOSE_MMOL_PER_KG = 0.1


def _interp_b0(v15: float, v30: float, b0: float) -> float:
    return float(v15 + (v30 - v15) * (b0 - 1.5) / 1.5)


def tissue_relaxation(name: str, b0: float) -> tuple[float, float, float]:
    """(T1 ms, T2* ms, PD) of a tissue at field strength ``b0`` (tesla), interpolated in B0."""
    p = TISSUE_PROPS[name]
    t1 = _interp_b0(p.t1_15, p.t1_30, b0)
    t2 = _interp_b0(p.t2_15, p.t2_30, b0)
    r2p = R2PRIME_15.get(name, R2PRIME_DEFAULT_15) * b0 / 1.5
    t2s = 1.0 / (1.0 / t2 + r2p)
    return t1, t2s, p.pd


def relaxivity(agent: str, b0: float) -> float:
    """r1 (mM^-1 s^-1) of a gadolinium agent at ``b0``; unknown names raise KeyError."""
    r15, r30 = RELAXIVITY[agent]
    return _interp_b0(r15, r30, b0)


def spgr_signal(pd, t1, t2s, tr: float, te: float, flip_deg):
    """Steady-state spoiled gradient echo: PD sin(a)(1-E1)/(1-cos(a)E1) exp(-TE/T2*), E1 = exp(-TR/T1).

    Arrays broadcast; TR, TE, T1, T2* in ms, flip angle in degrees (may be a B1-scaled map).

    At 90 degrees the steady state is saturation recovery, PD (1 - E1) exp(-TE/T2*):

    >>> round(float(spgr_signal(1.0, 1000.0, 50.0, tr=1000.0, te=0.0, flip_deg=90.0)), 4)   # 1 - 1/e
    0.6321
    """
    a = np.deg2rad(flip_deg)
    e1 = np.exp(-tr / np.asarray(t1))
    return pd * np.sin(a) * (1.0 - e1) / (1.0 - np.cos(a) * e1) * np.exp(-te / t2s)


def ernst_angle(tr: float, t1: float) -> float:
    """Flip angle (degrees) maximising the spoiled GRE signal: arccos(exp(-TR/T1)).

    >>> round(ernst_angle(tr=5.0, t1=1000.0), 1)     # a breast DCE protocol's TR on fat-free tissue
    5.7
    """
    return float(np.rad2deg(np.arccos(np.exp(-tr / t1))))


def fat_offset_hz(b0: float) -> float:
    """Fat-water frequency offset (Hz) at ``b0``: -3.4 ppm x gamma B0 (about -217 Hz at 1.5 T)."""
    return FAT_SHIFT_PPM * GAMMA_MHZ_PER_T * b0


# --- fat suppression -------------------------------------------------------------------------------
#: Fat-suppression methods. ``min_residual`` is the longitudinal fat magnetisation left at perfect
#: B0/B1; ``bw_hz`` the half-width of the spectral pulse's suppression band; ``b1_sensitive`` whether
#: the saturation angle scales with B1+ (CHESS/SPECIAL) or is adiabatic (SPAIR).
FATSAT_METHODS: dict[str, dict[str, float]] = {
    # GE VIBRANT "SAT_GEMS" = SPECIAL: spectrally selective inversion with the null timed for fat.
    "special": {"min_residual": 0.06, "bw_hz": 150.0, "b1_sensitive": 0.6},
    # Siemens "SFS": SPAIR-type adiabatic spectral inversion, B1-insensitive, B0-sensitive.
    "spair": {"min_residual": 0.04, "bw_hz": 130.0, "b1_sensitive": 0.0},
    # Siemens "FS": quick CHESS saturation, B1- and B0-sensitive, partial T1 recovery between pulses.
    "chess": {"min_residual": 0.12, "bw_hz": 170.0, "b1_sensitive": 1.0},
    "none": {"min_residual": 1.0, "bw_hz": 1.0, "b1_sensitive": 0.0},
}


def fat_residual(method: str, df0_hz, b1) -> np.ndarray:
    """Fraction of fat signal left after spectral fat suppression.

    The spectral pulse acts on spins within ``bw_hz`` of the nominal fat frequency; a local B0 offset
    ``df0_hz`` shifts fat out of the band (Gaussian roll-off) and a B1+ error scales the saturation
    angle of non-adiabatic pulses (residual Mz = |cos(pi/2 * b1)| for a 90-degree CHESS pulse).
    """
    m = FATSAT_METHODS[method]
    if method == "none":
        return np.ones_like(np.asarray(df0_hz, dtype=np.float32))
    in_band = np.exp(-0.5 * (np.asarray(df0_hz, dtype=np.float32) / m["bw_hz"]) ** 2)
    b1_err = np.abs(np.cos(0.5 * np.pi * np.asarray(b1, dtype=np.float32))) * m["b1_sensitive"]
    suppressed = (1.0 - m["min_residual"]) * in_band * (1.0 - b1_err)
    return np.clip(1.0 - suppressed, 0.0, 1.0).astype(np.float32)


def water_saturation(method: str, df0_hz, b0: float) -> np.ndarray:
    """Fraction of water signal lost where the B0 offset pushes water into the fat-suppression band."""
    if method == "none":
        return np.zeros_like(np.asarray(df0_hz, dtype=np.float32))
    m = FATSAT_METHODS[method]
    shift = np.asarray(df0_hz, dtype=np.float32) - fat_offset_hz(b0)
    return (0.9 * np.exp(-0.5 * (shift / m["bw_hz"]) ** 2)).astype(np.float32)


# --- DCE kinetics ----------------------------------------------------------------------------------
#: Phase timing of a DBC-like VIBRANT/TWIST dynamic: each post-contrast phase centre (s after injection).
PHASE_INTERVAL_S = 90.0
FIRST_POST_S = 60.0


def phase_time_s(phase: int) -> float:
    """Time after injection (s) at the k-space centre of a DCE phase; phase 0 is pre-contrast (-inf)."""
    return -np.inf if phase <= 0 else FIRST_POST_S + (phase - 1) * PHASE_INTERVAL_S


def concentration_mM(kind: str, t_s: float, params: dict[str, float]) -> float:
    """Tissue gadolinium concentration (mM) at ``t_s`` seconds after a 0.1 mmol/kg bolus.

    Empirical curves of the breast DCE literature: tumours wash in fast (peak within ~90 s) then wash
    out or plateau; fibroglandular tissue enhances slowly and progressively (background parenchymal
    enhancement); blood follows a bi-exponential plasma curve; fat barely enhances.
    """
    if not np.isfinite(t_s) or t_s <= 0:
        return 0.0
    dose = params.get("dose_scale", 1.0)
    if kind == "blood":  # plasma curve after first pass (Weinmann-like bi-exponential)
        c = 3.99 * np.exp(-0.144 * t_s / 60) + 4.78 * np.exp(-0.0111 * t_s / 60)
        return float(dose * 0.6 * c / (1 + np.exp(-(t_s - 15) / 4)))
    if kind == "tumor":
        a, k_in, k_out = params["tumor_amp"], params["tumor_kin"], params["tumor_kout"]
        return float(dose * a * (1 - np.exp(-k_in * t_s / 60)) * np.exp(-k_out * t_s / 60))
    if kind == "tumor_core":  # necrotic centre: slow, weak
        return float(dose * 0.15 * params["tumor_amp"] * (1 - np.exp(-0.3 * t_s / 60)))
    if kind == "fgt":
        return float(dose * params["bpe_amp"] * (1 - np.exp(-0.25 * t_s / 60)))
    rates = {"muscle": (0.25, 0.4), "skin": (0.35, 0.8), "myocardium": (1.5, 3.0),
             "lung": (0.6, 2.0), "fat": (0.02, 0.5), "bone": (0.02, 0.5),
             "liver": (0.45, 1.5), "csf": (0.0, 1.0), "node": (0.3, 1.5)}
    amp, k = rates.get(kind, (0.0, 1.0))
    return float(dose * amp * (1 - np.exp(-k * t_s / 60)))


def t1_with_agent(t1_ms, r1: float, conc_mM) -> np.ndarray:
    """Post-contrast T1: 1/T1 = 1/T1_0 + r1 C (r1 in mM^-1 s^-1, so divided by 1000 for ms)."""
    return 1.0 / (1.0 / np.asarray(t1_ms) + r1 * np.asarray(conc_mM) / 1000.0)
