"""Population draws of the breast phantom (BI-RADS density, the carcinoma's clinical stage) and the
flat parameters a manifest records per phantom.

Split out of :mod:`mridomain.sim.breast.phantom` (issue 22); the phantom re-exports these names, so
``from mridomain.sim.breast.phantom import draw_stage`` keeps working.
"""
from __future__ import annotations

import numpy as np

#: BI-RADS density classes: population weights (screening populations, FIELD.md section 5:
#: a 10 %, b 40 %, c 40 %, d 10 %) and the fibroglandular volume fraction of the breast interior.
#: The volumetric ranges (fraction of the breast interior) are ordered like BI-RADS a-d; see
#: docs/simulator.md for the reference values they are compared with.
DENSITY_CLASSES: dict[str, tuple[float, tuple[float, float]]] = {
    "fatty": (0.10, (0.04, 0.10)),
    "scattered": (0.40, (0.10, 0.22)),
    "heterogeneous": (0.40, (0.22, 0.40)),
    "extremely dense": (0.10, (0.40, 0.60)),
}


# ---- clinical stage ------------------------------------------------------------------------------
#: AJCC 8th edition T categories by size (mm): T1 <= 20, T2 <= 50, T3 > 50; T4 any size with direct
#: extension to the chest wall (not pectoralis alone) or the skin.
T_SIZE_LIMITS_MM = (20.0, 50.0)
#: Nodal positivity rises with tumour size: ~20-30 % for tumours < 2 cm, ~45 % for 2-5 cm, ~70 %
#: for > 5 cm (Carter, Allen, Henson, Cancer 1989;63:181, 24,740 cases); T4 taken as > 5 cm.
P_NODE_POSITIVE = {1: 0.27, 2: 0.45, 3: 0.70, 4: 0.75}
#: Among node-positive cases N1 (1-3 nodes) dominates; N2 (4-9) and N3 (>= 10 or infraclavicular)
#: make up the rest (assumed split 0.65 / 0.22 / 0.13; no DBC-specific figure is available).
N_SPLIT = (0.65, 0.22, 0.13)
#: de novo metastatic disease: ~6 % of breast cancers at diagnosis (SEER), higher with T4 / N3
P_METASTATIC = {1: 0.02, 2: 0.05, 3: 0.10, 4: 0.20}
#: locally advanced (T4) share of invasive cancers at diagnosis (assumption: a few percent)
P_T4 = 0.04


def t_stage_from(diameter_mm: float, invasion: str) -> int:
    """AJCC T category from the largest diameter and direct chest-wall / skin extension."""
    if invasion:
        return 4
    if diameter_mm <= T_SIZE_LIMITS_MM[0]:
        return 1
    if diameter_mm <= T_SIZE_LIMITS_MM[1]:
        return 2
    return 3


def draw_stage(rng: np.random.Generator) -> dict:
    """Size, invasion, margin, necrosis and kinetics of a carcinoma drawn jointly with its stage.

    Size: log-normal, median 21 mm, sigma 0.55 (gives T1 ~46 %, T2 ~48 %, T3 ~6 %; an assumption in
    the range of cohorts referred for breast MRI). T4 (chest wall or skin extension) in ``P_T4``.
    Larger tumours are more often irregular / spiculated and necrotic (rim enhancing)."""
    diam = float(np.clip(rng.lognormal(np.log(21.0), 0.55), 5.0, 110.0))
    invasion = ""
    if rng.random() < P_T4:
        invasion = "chest wall" if rng.random() < 0.5 else "skin"
        diam = max(diam, float(rng.uniform(25, 60)))
    t = t_stage_from(diam, invasion)
    big = np.clip((diam - 10) / 40, 0, 1)
    p_shape = np.array([0.50, 0.35, 0.15]) * np.array([1 + 0.3 * big, 1 + 0.3 * big, 1 - 0.8 * big])
    shape = str(rng.choice(["irregular", "spiculated", "oval"], p=p_shape / p_shape.sum()))
    necrotic = bool(rng.random() < 0.1 + 0.6 * big)
    n = 0
    if rng.random() < P_NODE_POSITIVE[t]:
        n = 1 + int(rng.choice(3, p=N_SPLIT))
    m = int(rng.random() < P_METASTATIC[t] + (0.1 if n == 3 else 0.0))
    return {"diameter_mm": diam, "invasion": invasion, "t": t, "n": n, "m": m, "shape": shape,
            "necrotic": necrotic}


def draw_density(rng: np.random.Generator) -> str:
    """A BI-RADS density class with the population weights of :data:`DENSITY_CLASSES` (one draw)."""
    names = list(DENSITY_CLASSES)
    w = np.array([DENSITY_CLASSES[n][0] for n in names])
    return names[int(rng.choice(len(names), p=w / w.sum()))]


def phantom_parameters(ph) -> dict:
    """Flat ground-truth parameters of a phantom (:class:`~mridomain.sim.breast.phantom.Phantom`) for the manifest."""
    t = ph.tumor
    return {
        "density": ph.density,
        "fgt_fraction": round(ph.fgt_fraction, 4),
        "weight_kg": round(ph.weight_kg, 1),
        "breast_projection_mm": round(float(np.mean(ph.breast_p)), 1),
        "body_width_mm": round(2 * ph.torso_w, 1),
        "tumor_present": t is not None,
        "tumor_diameter_mm": round(t.diameter_mm, 2) if t is not None else np.nan,
        "tumor_side": t.side if t is not None else "",
        "tumor_shape": t.shape if t is not None else "",
        "tumor_necrotic": bool(t.necrotic) if t is not None else False,
        "tumor_invasion": t.invasion if t is not None else "",
        "t_stage": int(t.t_stage) if t is not None else 0,
        "n_stage": int(t.n_stage) if t is not None else 0,
        "m_stage": int(t.m_stage) if t is not None else 0,
        "tumor_x_mm": float(t.center[0]) if t is not None else np.nan,
        "tumor_y_mm": float(t.center[1]) if t is not None else np.nan,
        "tumor_z_mm": float(t.center[2]) if t is not None else np.nan,
        "tumor_washout": float(ph.kinetics["tumor_kout"]),
    }
