"""Tissue parameters and signal equations of a brain glioma protocol: T1, T1Gd, T2 and FLAIR.

Relaxation times and proton densities are the values of ``shared/FIELD.md`` section 6 (Stanisz et
al., MRM 2005; Wansapura et al., JMRI 1999; typical lesion values), taken at the middle of each range
given there; values between 1.5 T and 3 T are interpolated linearly in B0 as in
:mod:`mridomain.sim.physics`. The spoiled gradient echo equation, gadolinium relaxivity and the
T1 shortening ``1/T1 = 1/T1_0 + r1 C`` are reused from :mod:`mridomain.sim.physics`; spin echo and
inversion recovery are added here. docs/synth.md lists every value with its source.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mridomain.sim.physics import relaxivity, spgr_signal, t1_with_agent

__all__ = ["BRAIN_TISSUES", "BrainTissue", "BRAIN_TISSUE_PROPS", "SequenceProtocol", "PROTOCOLS",
           "tissue_values", "spin_echo_signal", "inversion_recovery_signal", "csf_null_ti",
           "sequence_signal", "GD_AGENT"]

#: Tissue classes, in the order of the fraction stack the anatomy returns.
BRAIN_TISSUES: tuple[str, ...] = ("csf", "gm", "wm", "edema", "enhancing", "necrosis")


@dataclass(frozen=True)
class BrainTissue:
    """T1 / T2 (ms) at 1.5 T and 3 T and relative proton density."""

    t1_15: float
    t1_30: float
    t2_15: float
    t2_30: float
    pd: float


# FIELD.md section 6: GM T1 1100-1200 / 1600-1820, T2 95-100 / 99; WM T1 650-800 / 1080, T2 70-80 / 69;
# CSF T1 4000-4500 / 4200-4500, T2 ~2000; edema T1 1.3-1.6 x WM, T2 100-200; necrosis T1
# 2000-3000, T2 300-1000, PD 0.9-1.0; enhancing tumour (pre-contrast) T1 1.2-1.5 x GM, T2 100-140, PD 0.85.
# Range midpoints; the lesion T1s are the midpoint multiple (1.45 x WM, 1.35 x GM) at each field.
# Vasogenic edema (docs/simulator.md, brain section): PD is its water content, WM's 0.70 plus the 5-8
# points (midpoint 6.5) microgravimetry measured in the peritumoural white matter of glioblastomas; its
# T1 (1051 ms at 1.5 T) is above the 850 ms that in-vivo relaxometry set as the threshold of WM oedema
# (>= 75 % water). The former PD 0.85 (uncited) made edema iso-intense to WM on T1 (0.297 vs 0.297).
EDEMA_WATER_CONTENT = 0.70 + 0.065
BRAIN_TISSUE_PROPS: dict[str, BrainTissue] = {
    "csf": BrainTissue(4250, 4350, 2000, 2000, 1.00),
    "gm": BrainTissue(1150, 1710, 97.5, 99, 0.80),
    "wm": BrainTissue(725, 1080, 75, 69, 0.70),
    "edema": BrainTissue(1.45 * 725, 1.45 * 1080, 150, 150, EDEMA_WATER_CONTENT),
    "enhancing": BrainTissue(1.35 * 1150, 1.35 * 1710, 120, 120, 0.85),
    "necrosis": BrainTissue(2500, 2500, 650, 650, 0.95),
}

#: Gadobutrol (Gadavist), r1 5.2 / 5.0 mM^-1 s^-1 at 1.5 / 3 T (FIELD.md section 4).
GD_AGENT = "GADAVIST"


@dataclass(frozen=True)
class SequenceProtocol:
    """Timing of one sequence. ``kind``: ``spgr`` (spoiled gradient echo), ``se`` (fast spin echo,
    signal at the effective TE) or ``ir`` (inversion recovery; ``ti`` None = null CSF)."""

    name: str
    kind: str
    tr: float
    te: float
    flip: float = 90.0
    ti: float | None = None
    contrast: bool = False


# FIELD.md section 6: T1 spoiled GRE (TR 8-2000 ms), T2 fast spin echo TR 3000-5000 / TE 80-120,
# FLAIR TR ~9000 / TE ~120 with TI nulling CSF. BraTS (Menze et al., IEEE TMI 2015) acquires the
# native T1 as a 2D T1-weighted scan and T1Gd as a 3D 1 mm acquisition: native T1 here is a T1-weighted
# spin echo (TR 500 ms, TE 12 ms, within clinical SE T1 timing), T1Gd a 3D spoiled GRE (TR 9 ms, TE 4 ms,
# 20 degrees, above white matter's Ernst angle of about 8 degrees).
PROTOCOLS: dict[str, SequenceProtocol] = {
    "t1": SequenceProtocol("t1", "se", tr=500.0, te=12.0),
    "t1ce": SequenceProtocol("t1ce", "spgr", tr=9.0, te=4.0, flip=20.0, contrast=True),
    "t2": SequenceProtocol("t2", "se", tr=4000.0, te=100.0),
    "flair": SequenceProtocol("flair", "ir", tr=9000.0, te=120.0, ti=None),
}


def _interp(v15: float, v30: float, b0: float) -> float:
    return float(v15 + (v30 - v15) * (b0 - 1.5) / 1.5)


def tissue_values(b0: float) -> dict[str, tuple[float, float, float]]:
    """``{tissue: (T1 ms, T2 ms, PD)}`` at field strength ``b0`` (tesla)."""
    return {name: (_interp(p.t1_15, p.t1_30, b0), _interp(p.t2_15, p.t2_30, b0), p.pd)
            for name, p in BRAIN_TISSUE_PROPS.items()}


def spin_echo_signal(pd, t1, t2, tr: float, te: float):
    """Spin echo (FIELD.md section 6): ``S = PD (1 - exp(-TR/T1)) exp(-TE/T2)``."""
    return pd * (1.0 - np.exp(-tr / np.asarray(t1))) * np.exp(-te / np.asarray(t2))


def inversion_recovery_signal(pd, t1, t2, tr: float, te: float, ti: float):
    """Magnitude inversion recovery (FIELD.md section 6):
    ``S = PD |1 - 2 exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2)``."""
    t1 = np.asarray(t1)
    return pd * np.abs(1.0 - 2.0 * np.exp(-ti / t1) + np.exp(-tr / t1)) * np.exp(-te / np.asarray(t2))


def csf_null_ti(t1_csf: float, tr: float) -> float:
    """The inversion time that zeroes CSF: ``1 - 2 e^(-TI/T1) + e^(-TR/T1) = 0``, i.e.
    ``TI = T1 ln(2 / (1 + e^(-TR/T1)))`` (``T1 ln 2`` for TR >> T1)."""
    return float(t1_csf * np.log(2.0 / (1.0 + np.exp(-tr / t1_csf))))


def sequence_signal(protocol: SequenceProtocol, pd, t1, t2, b0: float, gd_mM=0.0):
    """Signal of tissue(s) with ``pd``, ``t1``, ``t2`` (arrays broadcast) for one protocol.

    ``gd_mM``: gadolinium concentration, used only by contrast-enhanced protocols. The SPGR echo
    decays with T2* = T2 here (R2' of brain tissue at TE 4 ms changes the signal by < 10%).
    """
    if protocol.contrast:
        t1 = t1_with_agent(t1, relaxivity(GD_AGENT, b0), gd_mM)
    if protocol.kind == "spgr":
        return spgr_signal(pd, t1, t2, protocol.tr, protocol.te, protocol.flip)
    if protocol.kind == "se":
        return spin_echo_signal(pd, t1, t2, protocol.tr, protocol.te)
    if protocol.kind == "ir":
        ti = protocol.ti if protocol.ti is not None else csf_null_ti(tissue_values(b0)["csf"][0], protocol.tr)
        return inversion_recovery_signal(pd, t1, t2, protocol.tr, protocol.te, ti)
    raise ValueError(f"unknown sequence kind {protocol.kind!r}")
