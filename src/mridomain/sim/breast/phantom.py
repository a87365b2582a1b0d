"""Procedural prone bilateral breast phantoms: 3-D anatomy evaluated lazily on any slice grid.

Coordinates are DICOM patient coordinates (LPS, mm): +x towards the patient's left, +y posterior,
+z towards the head. The anterior surface of the torso passes through y = 0 at the midline and the
(prone, pendant) breasts hang towards -y. Everything is a function of (x, y, z), so every slice of
a series cuts the same 3-D body:

- **body**: a superellipse torso whose outline and layers (skin, subcutaneous fat, muscle, ribs and
  intercostal muscle, thoracic cavity) are measured by depth below the skin; breasts are pendant
  superquadrics attached to the curved chest by a smooth union (a fillet, no straight cut), with a
  nipple and a thicker areola;
- **chest**: pectoralis major (a crescent following the chest wall, widening towards the axilla in
  cranial slices) and minor, ribs sloping caudally towards the sternum (fatty marrow, dark cortex,
  costal cartilage anteriorly) with intercostal muscle between them, sternum, vertebra with spinal
  canal and paraspinal muscles, lungs, the heart left of the midline, the descending aorta left of
  the spine, ascending aorta and pulmonary trunk above the heart, the liver on the right in caudal
  slices and axillary fat with lymph nodes in cranial ones, so every slice carries left-right cues;
- **fibroglandular tissue**: a power-law Gaussian random field (slice spectrum 1/f^1.8, the breast-CT
  value of Chen et al. 2012) sampled in coordinates that converge on the nipple (structures run
  along lines to the nipple and shrink towards it), weighted towards the central glandular cone and
  thresholded to the patient's FGT fraction, plus lactiferous ducts from the nipple and Cooper's
  ligaments as thin sheets (zero sets of a smooth field) in the fat;
- **tumour**: lobulated / spiculated / oval lesion whose size, margin, necrosis, kinetics and
  chest-wall or skin invasion are drawn jointly with its AJCC stage (see :func:`draw_stage`).

Nothing is drawn as a marker: every label reaches the image through this geometry and physics.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import special

from mridomain.errors import InvalidArgumentError
from mridomain.sim.breast.shapes import (_band, _box, _ellipse, _smin, _soft, _soft_level, _unit,  # noqa: F401
                                         tumor_fraction)
from mridomain.sim.breast.staging import (DENSITY_CLASSES, N_SPLIT, P_METASTATIC, P_NODE_POSITIVE,  # noqa: F401
                                          P_T4, T_SIZE_LIMITS_MM, draw_density, draw_stage, phantom_parameters,
                                          t_stage_from)
from mridomain.sim.breast.texture import (ANATOMICAL_BETA, TEXTURE_MM, TEXTURE_N, _texture_lookup,  # noqa: F401
                                          texture_field)
from mridomain.sim.physics import TISSUES

TI = {t: i for i, t in enumerate(TISSUES)}

@dataclass
class Tumor:
    """A breast carcinoma. Sizes in mm, centre in patient coordinates, stage by AJCC rules."""

    center: np.ndarray
    diameter_mm: float
    side: str                  # "L" | "R"
    shape: str                 # "irregular" | "spiculated" | "oval"
    lobe_dirs: np.ndarray      # (K, 3) unit vectors
    lobe_amp: np.ndarray       # (K,)
    lobe_freq: np.ndarray      # (K,)
    lobe_phase: np.ndarray     # (K,)
    spike_dirs: np.ndarray     # (J, 3) unit vectors
    spike_len: np.ndarray      # (J,) in units of the radius
    necrotic: bool
    t_stage: int = 1           # AJCC T: 1 <= 20 mm, 2 <= 50 mm, 3 > 50 mm, 4 chest wall / skin
    n_stage: int = 0           # regional nodes 0-3
    m_stage: int = 0           # distant metastasis 0 / 1
    invasion: str = ""         # "" | "chest wall" | "skin" (T4a / T4b)

    @property
    def radius(self) -> float:
        """Half the lesion's diameter (mm)."""
        return 0.5 * self.diameter_mm

    @property
    def extent_mm(self) -> float:
        """Radius of a sphere enclosing the lesion including spicules."""
        spikes = float(self.spike_len.max()) if len(self.spike_len) else 0.0
        return self.radius * (1.0 + float(self.lobe_amp.sum()) + spikes) + 1.0


@dataclass
class Breast:
    """One pendant breast: a superquadric hanging from the chest (mm, patient coordinates)."""

    side: int                  # -1 right, +1 left
    cx: float                  # |x| of the base centre
    zc: float                  # z of the base centre
    rx: float                  # lateral half-width at the base
    rz: float                  # cranio-caudal half-height at the base
    proj: float                # projection in front of the chest (base -> nipple)
    shape_k: float             # depth exponent: 2 = half ellipsoid, lower = more pendant / conical
    tilt: float                # lateral deviation of the axis (rad): nipples point outwards
    droop: float               # caudal deviation of the axis (rad)
    nipple_r: float
    nipple_len: float
    areola_r: float
    tex_offset: np.ndarray     # texture-field offset (voxels) of this breast
    tex_rot: float             # rotation of the texture about the breast axis
    ducts: np.ndarray          # (K, 2) lactiferous duct directions in nipple-cone coordinates
    vessels: np.ndarray        # (V, 2) vessel directions in nipple-cone coordinates


@dataclass
class Phantom:
    """One patient's anatomy and physiology (all sizes in mm). Build with :func:`make_phantom`.

    The phantom is a deterministic function of the generator it was drawn from and never of the
    protocol that images it: :func:`mridomain.sim.patient_phantom` (seed, i) gives patient i.
    """

    patient_index: int
    seed: int
    density: str
    fgt_fraction: float
    torso_w: float           # half-width of the torso
    torso_ty: float          # half AP depth of the torso
    torso_p: float           # superellipse exponent of the torso outline
    breasts: tuple[Breast, Breast]
    skin_mm: float
    subcut_mm: float         # subcutaneous fat over the chest; premammary fat in the breast
    retro_mm: float          # retromammary fat in front of the pectoralis
    pec_mm: float            # pectoralis major maximal thickness
    pec_minor_mm: float
    chestwall_mm: float      # ribs + intercostal muscle
    lat_muscle_mm: float     # serratus / latissimus over the lateral ribs
    heart_c: tuple[float, float, float]   # x, depth behind the chest wall, z
    heart_r: tuple[float, float, float]
    heart_angle: float       # long axis rotation towards the left-anterior apex (rad)
    aorta_x: float           # descending aorta, left of the spine
    aorta_r: float
    liver_dome_z: float      # right hemidiaphragm dome height
    vertebra_r: float
    weight_kg: float
    tumor: Tumor | None
    nodes: np.ndarray        # (K, 5): x, y, z, radius, malignant (axillary lymph nodes)
    kinetics: dict[str, float]
    b0_coef: np.ndarray      # shim residual polynomial (ppm): 1, x, y, z, x^2, y^2, xy
    b0_suscept_ppm: float    # off-resonance at the breast tip from tissue-air susceptibility
    b1_coef: np.ndarray      # transmit field shape: L-R gradient, AP gradient, quadratic
    _texture_thr: tuple[float, float] | None = field(default=None, repr=False)
    _static: dict = field(default_factory=dict, repr=False)

    @property
    def texture_thr(self) -> tuple[float, float]:
        """Glandular score threshold per breast (right, left), computed on first use: only
        rendering needs it, so drawing a phantom for its parameters stays cheap."""
        if self._texture_thr is None:
            self._texture_thr = tuple(
                _fgt_threshold(self, b, self.fgt_fraction,
                               np.random.default_rng([self.seed, self.patient_index, 7, k]))
                for k, b in enumerate(self.breasts))
        return self._texture_thr

    # ---- geometry -----------------------------------------------------------------------------
    @property
    def breast_cx(self) -> float:
        """Mean lateral offset ``|x|`` of the two breasts' base centres (mm), about which the coils and
        the B1 map are laid out."""
        return float(np.mean([b.cx for b in self.breasts]))

    @property
    def breast_p(self) -> tuple[float, float]:
        """(right, left) projection of the breasts in front of the chest (nipple included)."""
        return tuple(b.proj + b.nipple_len for b in self.breasts)

    @property
    def breast_rz(self) -> float:
        """Cranio-caudal reach of the breasts from ``z = 0`` (mm): the largest ``rz + |zc|`` of the two."""
        return float(max(b.rz + abs(b.zc) for b in self.breasts))

    @property
    def z_extent(self) -> tuple[float, float]:
        """Cranio-caudal extent of the breasts (mm)."""
        lo = min(b.zc - b.rz for b in self.breasts)
        hi = max(b.zc + b.rz for b in self.breasts)
        return float(lo), float(hi)

    def torso_surface_y(self, x):
        """Anterior surface of the torso (y) at lateral position x (superellipse through y = 0)."""
        u = np.clip(np.abs(x) / self.torso_w, 0, 0.999)
        p = self.torso_p
        return self.torso_ty * (1 - (1 - u ** p) ** (1 / p))

    def slab(self, n_slices: int, thickness: float, spacing: float | None = None,
             mode: str = "spread") -> np.ndarray:
        """Slice centre z positions (mm, ascending).

        ``mode="spread"`` (default, :meth:`default_slab`): contiguous once the slab covers the
        breasts, else spread over 80 % of their height with one slice through the lesion centre.
        ``mode="tumor"``: ``n_slices`` contiguous slices (spacing = thickness unless given) centred
        on the lesion (the breast centre without one): a slab through the tumour, e.g. the 5 slices
        of a 47 x 47 x 5 crop.
        """
        if mode == "spread":
            return self.default_slab(n_slices, thickness, spacing)
        if mode != "tumor":
            raise InvalidArgumentError(f"unknown slab mode {mode!r}; use 'spread' or 'tumor'")
        spacing = thickness if spacing is None else spacing
        center = float(self.tumor.center[2]) if self.tumor is not None else float(np.mean(self.z_extent))
        return (center + spacing * (np.arange(n_slices) - (n_slices - 1) / 2)).astype(np.float64)

    def default_slab(self, n_slices: int, thickness: float, spacing: float | None = None) -> np.ndarray:
        """Slice centre z positions (mm, ascending) covering the lesion (or the breast centre).

        Slices are contiguous (spacing = thickness) once ``n_slices * thickness`` covers the breasts;
        fewer slices are spread over 80 % of the breast height so a small series still samples the
        whole organ (SpacingBetweenSlices then exceeds SliceThickness).
        """
        zmin, zmax = self.z_extent
        if spacing is None:
            spacing = max(thickness, 0.8 * (zmax - zmin) / max(n_slices, 1))
        span = spacing * (n_slices - 1)
        center = float(self.tumor.center[2]) if self.tumor is not None else 0.5 * (zmin + zmax)
        lo = center - spacing * ((n_slices - 1) // 2)
        lo_c = float(np.clip(lo, zmin + 2, max(zmin + 2, zmax - 2 - span)))
        if lo_c != lo:
            lo = lo_c + ((center - lo_c) % spacing if self.tumor is not None and span > 0 else 0.0)
            lo = lo if lo + span <= zmax + spacing else lo_c
        return (lo + spacing * np.arange(n_slices)).astype(np.float64)

    # ---- implicit shapes ----------------------------------------------------------------------
    def _torso_sd(self, X, Y):
        """Approximate signed distance (mm, negative inside) to the torso outline."""
        W, T, p = self.torso_w, self.torso_ty, self.torso_p
        ax, ay = np.abs(X) / W, np.abs(Y - T) / T
        F = ax ** p + ay ** p
        gx = p * ax ** (p - 1) / W
        gy = p * ay ** (p - 1) / T
        return (F - 1) / (np.sqrt(gx * gx + gy * gy) + 1e-6)

    def _breast_frame(self, b: Breast, X, Y, z: float):
        """(t, u, w): depth in front of the chest surface, lateral and cranio-caudal offsets from
        the (tilted, drooping) breast axis."""
        t = self.torso_surface_y(X) - Y
        tp = np.maximum(t, 0)
        u = X - b.side * (b.cx + tp * np.tan(b.tilt))
        w = np.asarray(z - b.zc, dtype=np.float32) + tp * np.float32(np.tan(b.droop))
        return t, u, w

    def _breast_sd(self, b: Breast, X, Y, z: float):
        """Signed distance (mm) to one breast's surface and its frame (t, u, w)."""
        t, u, w = self._breast_frame(b, X, Y, z)
        tp = np.maximum(t, 0) / b.proj
        k = b.shape_k
        F = (u / b.rx) ** 2 + (w / b.rz) ** 2 + tp ** k
        g2 = (2 * u / b.rx ** 2) ** 2 + (2 * w / b.rz ** 2) ** 2 + (k * tp ** (k - 1) / b.proj) ** 2
        return (F - 1) / (np.sqrt(g2) + 1e-6), t, u, w

    def _nipple(self, b: Breast, z: float):
        """Patient coordinates of the nipple tip base (where the nipple leaves the breast mound)."""
        t = b.proj
        xn = b.side * (b.cx + t * np.tan(b.tilt))
        zn = b.zc - t * np.tan(b.droop)
        yn = float(self.torso_surface_y(xn)) - t
        return xn, yn, zn

    # ---- texture ------------------------------------------------------------------------------
    def _texture_coords(self, b: Breast, X, Y, z: float):
        """Texture-field coordinates (voxels) in nipple-converging coordinates, and the distance
        from the nipple along the axis (mm). Lines through the nipple map to lines of constant
        lateral coordinate, so the structures run towards the nipple and converge on it."""
        xn, yn, zn = self._nipple(b, z)
        dn = np.maximum(Y - yn, 0) + 1e-3                 # depth behind the nipple
        scale = (b.proj + 15.0) / (dn + 15.0)             # 1 at the chest, > 1 towards the nipple
        u = (X - xn) * scale
        w = np.asarray(z - zn, dtype=np.float32) * scale
        c, s = np.cos(b.tex_rot), np.sin(b.tex_rot)
        ur, wr = c * u - s * w, s * u + c * w
        # elongated 2.5x along the duct direction (ductal-lobular units line up towards the nipple)
        return np.stack([wr / TEXTURE_MM + b.tex_offset[0], dn / (2.5 * TEXTURE_MM) + b.tex_offset[1],
                         ur / TEXTURE_MM + b.tex_offset[2]]), dn, u, w

    def _gland_score(self, b: Breast, X, Y, z: float, sd, t):
        """Glandular score (field + anatomical prior) and Cooper-ligament sheet fraction."""
        coords, dn, u, w = self._texture_coords(b, X, Y, z)
        g, lig = _texture_lookup(coords)
        # prior: glandular tissue fills a cone behind the nipple and thins towards the
        # subcutaneous and retromammary fat
        inner = np.clip(-sd / np.float32(0.35 * min(b.rx, b.rz, b.proj)), 0, 1)
        cone = np.exp(-((u * u + w * w) / np.float32((0.55 * max(b.rx, b.rz)) ** 2)))
        prior = 1.2 * inner + 0.8 * cone
        return g + prior, lig

    # ---- static anatomy (z-independent, per pixel grid) ---------------------------------------
    def _static_maps(self, x: np.ndarray, y: np.ndarray, pix: float) -> dict:
        key = (len(x), len(y), float(x[0]), float(x[-1]), float(y[0]), float(y[-1]), float(pix))
        if key in self._static:
            return self._static[key]
        X, Y = x[None, :], y[:, None]
        W, T = self.torso_w, self.torso_ty
        sd = self._torso_sd(X, Y)
        depth = -sd                                         # mm below the skin
        theta = np.arctan2(X, T - Y)                        # 0 anterior midline, +-pi posterior
        ath = np.abs(theta)
        skin, sub = self.skin_mm, self.subcut_mm
        # muscle layer thickness by angle: pectoralis major crescent anteriorly (thin at the
        # sternal border, thickest over the upper ribs, thinning towards the axilla), serratus /
        # latissimus laterally, thin trapezius posteriorly
        ax = np.abs(X) / W
        pec = self.pec_mm * np.clip(np.sin(np.pi * np.clip((ax - 0.1) / 0.62, 0, 1)), 0, 1) ** 0.7
        lat = self.lat_muscle_mm * np.clip((ath - 0.7) / 0.5, 0, 1) * np.clip((2.6 - ath) / 0.4, 0, 1)
        post = 6.0 * np.clip((ath - 2.4) / 0.3, 0, 1)
        mus = np.where(ath < 1.0, pec, 0) + lat + post
        l0 = skin + sub
        l1 = l0 + mus
        l2 = l1 + self.chestwall_mm
        cav = _band(depth, l2, 1e9, pix)                  # thoracic cavity (lungs, mediastinum)
        layer_sub = _band(depth, skin, l0, pix)
        layer_mus = _band(depth, l0, l1, pix)
        layer_cw = _band(depth, l1, l2, pix)
        body = _soft(sd, pix)
        body_in = _soft(sd + skin, pix)
        st = {"sd": sd, "depth": depth, "theta": theta, "body": body, "body_in": body_in,
              "sub": layer_sub, "mus": layer_mus, "cw": layer_cw, "cav": cav, "l1": l1, "l2": l2}
        # sternum: midline, in the chest-wall band and the (absent) muscle layer above it
        ster = (np.abs(X) < 16) * _band(depth, l0, l0 + 13, pix) * (ath < 0.5)
        st["sternum"] = ster
        # spine: vertebral body, canal (CSF) and posterior elements; paraspinal muscles
        yv = 2 * T - 62.0                                   # vertebral body centre
        rv = self.vertebra_r
        vb = _ellipse(X, Y, 0.0, yv, rv, 0.9 * rv, pix)
        canal = _ellipse(X, Y, 0.0, yv + rv + 8, 7.5, 7.5, pix)
        post_el = _ellipse(X, Y, 0.0, yv + rv + 20, 6.0, 14.0, pix) * (1 - canal)
        para = sum(_ellipse(X, Y, s * 38.0, yv + 26, 24.0, 22.0, pix) for s in (-1, 1))
        st.update(vb=vb, canal=canal, post_el=post_el, para=np.clip(para, 0, 1), yv=yv)
        # descending aorta: left of the spine, anterior-lateral to the vertebral body
        st["aorta_d"] = _ellipse(X, Y, self.aorta_x, yv - 0.6 * rv, self.aorta_r, self.aorta_r, pix)
        # internal mammary vessels along the sternal border, behind the costal cartilages
        st["ima"] = sum(_ellipse(X, Y, s * 24.0, self.torso_surface_y(24.0) + l2 + 2, 2.0, 2.0, pix)
                        for s in (-1, 1))
        # pixels of the rib band (for the per-slice ribs) as flat indices with their angle
        idx = np.flatnonzero(layer_cw.ravel() > 0)
        st["cw_idx"] = idx
        st["cw_theta"] = np.broadcast_to(theta, sd.shape).ravel()[idx]
        # z-independent tissue fractions of the torso (each slice starts from a copy): layers,
        # intercostal muscle over the whole rib band (ribs replace it per slice), sternum, spine,
        # descending aorta, mediastinal fat; the rest of the cavity is lung
        base = np.zeros((len(TISSUES),) + sd.shape, dtype=np.float32)
        base[TI["skin"]] = body - body_in
        base[TI["fat"]] = layer_sub * body_in + ster * 0.65
        base[TI["muscle"]] = (layer_mus * body_in + layer_cw) * (1 - ster)
        base[TI["bone"]] = ster * 0.35
        cav_in = cav * body_in
        spine = np.clip(vb + canal + post_el, 0, 1)
        para_m = st["para"] * (1 - spine)
        base[TI["bone"]] += cav_in * (0.3 * vb + post_el)
        base[TI["fat"]] += cav_in * 0.7 * vb                 # vertebral marrow
        base[TI["csf"]] += cav_in * canal
        base[TI["muscle"]] += cav_in * para_m
        free = cav_in * (1 - spine) * (1 - para_m)
        aorta = st["aorta_d"] * free
        base[TI["blood"]] += aorta + st["ima"] * body_in
        free = free - aorta
        cw_y = self.subcut_mm + self.skin_mm + self.chestwall_mm + 4.0   # inner chest wall, midline
        med = _ellipse(X, Y, 0.0, cw_y + 0.45 * (yv - cw_y), 28.0, 0.5 * (yv - cw_y), pix)
        base[TI["fat"]] += free * med                         # mediastinal fat
        base[TI["lung"]] = free * (1 - med)
        st.update(base=base, free=free, med=np.broadcast_to(med, sd.shape), cw_y=cw_y)
        # liver dome height (the liver fills the lung below it, right of x = 60 mm)
        st["dome"] = (self.liver_dome_z - 0.004 * (X + 70.0) ** 2 - 0.002 * (Y - T) ** 2
                      + np.where(X < 60, 0.0, -1e6)).astype(np.float32)
        st["dome_rows"] = st["dome"].max(axis=1)
        st["dome_cols"] = st["dome"].max(axis=0)
        if len(self._static) >= 4:
            self._static.pop(next(iter(self._static)))
        self._static[key] = st
        return st

    # ---- rendering ----------------------------------------------------------------------------
    def render(self, X: np.ndarray, Y: np.ndarray, z: float, thickness: float,
               pixel_mm: float, n_sub: int | None = None) -> np.ndarray:
        """Tissue fractions (len(TISSUES), *X.shape), float32, summing to <= 1 (air = remainder).

        ``X``, ``Y``: in-plane patient coordinates of the pixel centres (mm, an axis-aligned grid);
        ``z`` the slice centre. The anatomy is averaged over ``n_sub`` planes through the slice
        profile (partial volume along z); edges are anti-aliased over one pixel (``pixel_mm``).
        """
        if n_sub is None:
            n_sub = int(np.clip(np.ceil(thickness / 1.0), 1, 3))  # one texture plane per mm
        # smooth anatomy at the slice centre; the fine glandular texture, which partial volume
        # changes most, averaged over n_sub planes through the slice profile
        zs = z + thickness * ((np.arange(n_sub) + 0.5) / n_sub - 0.5)
        acc = np.zeros((len(TISSUES),) + X.shape, dtype=np.float32)
        self._render_plane(X[0, :], Y[:, 0], float(z), pixel_mm, acc, zs)
        return acc

    def _render_plane(self, x, y, z: float, pix: float, acc: np.ndarray, zs: np.ndarray) -> None:
        st = self._static_maps(x, y, pix)
        X, Y = x[None, :], y[:, None]
        f = {t: acc[TI[t]] for t in TISSUES}             # views: tissues are built in place
        zr = (z - np.mean(self.z_extent)) / max(self.breast_rz, 1.0)  # ~-1 caudal .. +1 cranial
        np.copyto(acc, st["base"])
        # chest wall band: ribs (marrow fat + cortex) or costal cartilage, intercostal muscle between
        self._ribs(st, z, f, pix)
        self._mediastinum(X, Y, z, f, st, pix)
        self._liver(z, f, st)
        # axillary fat with lymph nodes, cranial-lateral (between pectoralis and latissimus)
        self._axilla(X, Y, z, zr, f, st, pix)
        # breasts on the anterior chest
        for b in self.breasts:
            self._breast(b, x, y, z, f, st, pix, zs)
        if self.tumor is not None:
            self._render_tumor(f, X, Y, z, pix, st)
        np.clip(acc, 0, 1, out=acc)

    def _ribs(self, st, z: float, f, pix: float) -> None:
        """Ribs cut obliquely by the axial plane: each rib descends ~45 mm from its vertebral end
        to the costal cartilage, so a slice meets short segments of several ribs; their cross
        section is ~13 mm tall along z (dark cortex, fatty marrow) with intercostal muscle between."""
        idx, th = st["cw_idx"], st["cw_theta"]
        cw = st["cw"].ravel()[idx]
        ath = np.abs(th)
        zr = z + 45.0 * (1 - ath / np.pi) ** 1.2          # rib height rises towards the spine
        pitch = 24.0
        ph = (zr / pitch + 0.31 * (th < 0)) % 1.0          # left and right ribs are offset slightly
        dz = np.abs(ph - 0.5) * pitch                     # mm from the nearest rib centre line
        rib = np.clip((6.5 - dz) / max(pix, 0.5) + 0.5, 0, 1).astype(np.float32)
        cart = (ath < 0.45).astype(np.float32)             # costal cartilage near the sternum
        bone_part = rib * cw * (1 - cart)
        # costal cartilage (muscle relaxation: no FIELD.md value) and intercostal muscle stay muscle
        f["muscle"].ravel()[idx] -= bone_part
        f["bone"].ravel()[idx] += 0.3 * bone_part
        f["fat"].ravel()[idx] += 0.7 * bone_part           # rib marrow

    def _mediastinum(self, X, Y, z, f, st, pix) -> None:
        """Heart (left of the midline, caudal) and great vessels (cranial) in the mediastinum."""
        cw_y = st["cw_y"]
        hx, hd, hz = self.heart_c
        rhx, rhy, rhz = self.heart_r
        fh = np.sqrt(max(0.0, 1 - ((z - hz) / rhz) ** 2))
        top = hz + rhz
        has_heart, has_vessels = fh > 0.05, z > top - 15
        if not (has_heart or has_vessels):
            return
        cy = cw_y + hd
        xlo, xhi, ylo, yhi = 1e9, -1e9, 1e9, -1e9
        if has_heart:
            r = rhx * fh + 8
            xlo, xhi, ylo, yhi = hx - r, hx + r, cy - r, cy + r
        if has_vessels:
            xlo, xhi = min(xlo, -46.0), max(xhi, 30.0)
            ylo, yhi = min(ylo, cw_y + 5), max(yhi, cw_y + 52)
        box = _box(X[0], Y[:, 0], xlo, xhi, ylo, yhi)
        if box is None:
            return
        xb, yb = X[0, box[1]][None, :], Y[box[0], 0][:, None]
        free, med = st["free"][box], st["med"][box]
        heart = np.zeros(free.shape, dtype=np.float32)
        if has_heart:
            c, s = np.cos(self.heart_angle), np.sin(self.heart_angle)
            u, v = c * (xb - hx) + s * (yb - cy), -s * (xb - hx) + c * (yb - cy)
            hl = (u / (rhx * fh)) ** 2 + (v / (rhy * fh)) ** 2
            heart = _soft_level(hl, rhy * fh, pix)
            pool = _soft_level(hl, rhy * fh, pix, 10.0)
            f["myocardium"][box] += free * (heart - pool)
            f["blood"][box] += free * pool
        vessels = np.zeros_like(heart)
        if has_vessels:  # ascending aorta (right of the midline), pulmonary trunk (left), SVC
            a = _ellipse(xb, yb, -12.0, cw_y + 30, 15.0, 15.0, pix)
            pt = _ellipse(xb, yb, 14.0, cw_y + 22, 13.0, 13.0, pix) * (z < top + 25)
            svc = _ellipse(xb, yb, -34.0, cw_y + 40, 9.0, 9.0, pix)
            vessels = np.clip(a + pt + svc, 0, 1) * (1 - heart)
            f["blood"][box] += free * vessels
        medf = np.clip(med - heart - vessels, 0, 1)
        f["fat"][box] += free * (medf - med)
        f["lung"][box] = free * (1 - np.clip(heart + vessels + medf, 0, 1))

    def _liver(self, z, f, st) -> None:
        """Liver under the right hemidiaphragm: the dome rises highest on the right (-x) side."""
        if z > self.liver_dome_z + 2:
            return
        rows = np.flatnonzero(st["dome_rows"] > z - 2)
        cols = np.flatnonzero(st["dome_cols"] > z - 2)
        if not len(rows) or not len(cols):
            return
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        liver = np.clip((st["dome"][box] - z) / 2.0 + 0.5, 0, 1)
        take = f["lung"][box] * liver
        f["liver"][box] += take
        f["lung"][box] -= take

    def _axilla(self, X, Y, z, zr, f, st, pix) -> None:
        """Axillary fat pads bulging lateral to the chest wall in cranial slices, with lymph nodes."""
        grow = float(np.clip((zr + 0.1) / 0.9, 0, 1))
        if grow <= 0:
            return
        W, T = self.torso_w, self.torso_ty
        for s in (-1, 1):
            cx, cy = s * 0.86 * W, 0.62 * T
            rx, ry = 0.16 * W * grow + 1, 0.30 * T * grow + 1
            box = _box(X[0], Y[:, 0], cx - rx - 2, cx + rx + 2, cy - ry - 2, cy + ry + 2)
            if box is None:
                continue
            xb, yb = X[0, box[1]][None, :], Y[box[0], 0][:, None]
            inside = _ellipse(xb, yb, cx, cy, rx, ry, pix) * st["body_in"][box]
            for t in ("muscle", "lung", "bone", "blood", "csf", "myocardium", "liver", "fat"):
                f[t][box] *= 1 - inside
            f["fat"][box] += inside
            for nd in self.nodes:
                if np.sign(nd[0]) != s or abs(z - nd[2]) > nd[3]:
                    continue
                rz = np.sqrt(max(nd[3] ** 2 - (z - nd[2]) ** 2, 0.0))
                node = _ellipse(xb, yb, nd[0], nd[1], rz, 0.7 * rz, pix) * inside
                hilum = _ellipse(xb, yb, nd[0] - s * 0.3 * rz, nd[1], 0.45 * rz, 0.3 * rz, pix) * (nd[4] < 0.5)
                cortex = node * (1 - hilum)
                f["fat"][box] -= cortex
                f["node"][box] += cortex

    def _breast(self, b: Breast, x, y, z: float, f, st, pix: float, zs: np.ndarray) -> None:
        """Breast mound (fat, glandular tissue, ducts, vessels, ligaments), skin, nipple, areola."""
        zlo, zhi = b.zc - b.rz - 6, b.zc + b.rz + 6
        if not (zlo < z < zhi + b.proj * np.tan(abs(b.droop)) + 6):
            return
        xn, yn, zn = self._nipple(b, z)
        reach = b.rx + b.proj * abs(np.tan(b.tilt)) + 14
        box = _box(x, y, b.side * b.cx - reach, b.side * b.cx + reach, yn - b.nipple_len - 6,
                   float(self.torso_surface_y(b.cx)) + 25)
        if box is None:
            return
        X = x[box[1]][None, :]
        Y = y[box[0]][:, None]
        sd_b, t, u, w = self._breast_sd(b, X, Y, z)
        # nipple: a rounded papilla (half-ellipsoid) on the tip, blended into the areola
        hl = 0.5 * b.nipple_len + 2.0
        ln = ((X - xn) / b.nipple_r) ** 2 + ((Y - (yn - b.nipple_len + hl)) / hl) ** 2 + \
            (np.float32(z - zn) / b.nipple_r) ** 2
        sd_n = (np.sqrt(ln) - 1.0) * min(b.nipple_r, hl)
        sd_torso = st["sd"][box]
        sd = _smin(_smin(sd_torso, sd_b, 12.0), sd_n, 3.0)
        # skin: 1.5-2.5 mm, thickened over the areola (and by tumour edema for T4b)
        dn = np.sqrt((X - xn) ** 2 + (Y - yn) ** 2 + np.float32(z - zn) ** 2)
        skin = self.skin_mm + 1.2 * np.exp(-(dn / b.areola_r) ** 4)
        tm = self.tumor
        if tm is not None and tm.invasion == "skin" and (tm.side == "L") == (b.side > 0):
            de = np.sqrt((X - tm.center[0]) ** 2 + (Y - tm.center[1]) ** 2 + np.float32(z - tm.center[2]) ** 2)
            skin = skin + 3.5 * np.exp(-(de / (tm.radius + 20.0)) ** 2)
        body = _soft(sd, pix)
        body_in = _soft(sd + skin, pix)
        # replace the torso's outer layers inside the box by the union's
        old_in = st["body_in"][box]
        extra = np.clip(body_in - old_in, 0, 1)            # breast tissue in front of the chest
        fs = {k: v[box] for k, v in f.items()}
        fs["skin"][...] = np.clip(body - body_in, 0, 1)
        nip = _soft(sd_n + 0.3, pix) * extra                # nipple: dense dermis / smooth muscle
        region = extra - nip
        fs["skin"] += nip
        if not region.any():
            return
        # glandular zone: behind the premammary fat and in front of the retromammary fat
        gland_w = _soft(sd_b + self.subcut_mm, pix) * np.clip((t - self.retro_mm) / 2.0 + 0.5, 0, 1)
        sel = np.flatnonzero((region.ravel() > 0))
        fgt = np.zeros(region.shape, dtype=np.float32)
        lig = np.zeros(region.shape, dtype=np.float32)
        ves = np.zeros(region.shape, dtype=np.float32)
        if len(sel):
            Xs = np.broadcast_to(X, region.shape).ravel()[sel]
            Ys = np.broadcast_to(Y, region.shape).ravel()[sel]
            thr = np.float32(self.texture_thr[0 if b.side < 0 else 1])
            gw = gland_w.ravel()[sel]
            sds, ts = sd_b.ravel()[sel], t.ravel()[sel]
            g = np.zeros(len(sel), dtype=np.float32)
            sheet = np.zeros(len(sel), dtype=np.float32)
            for zz in zs:  # partial volume of the texture over the slice profile
                score, sh = self._gland_score(b, Xs, Ys, float(zz), sds, ts)
                g += special.expit((score - thr) / np.float32(0.08)).astype(np.float32)
                sheet += sh
            g *= gw / np.float32(len(zs))
            sheet /= np.float32(len(zs))
            # lactiferous ducts: tubes from the nipple along the nipple-cone directions
            _, dnip, uu, ww = self._texture_coords(b, Xs, Ys, z)
            scale = (b.proj + 15.0) / (dnip + 15.0)
            near = np.flatnonzero(dnip < 0.6 * b.proj)
            duct = np.zeros_like(g)
            if len(near):
                du = (uu[near, None] - b.ducts[None, :, 0] * b.rx) ** 2 + (ww[near, None] - b.ducts[None, :, 1] * b.rz) ** 2
                dist = np.sqrt(du.min(axis=1)) / scale[near]
                duct[near] = np.clip(1.2 - dist / 0.9, 0, 1)
            far = np.flatnonzero(dnip > 0.25 * b.proj)
            if len(far):
                dv = (uu[far, None] - b.vessels[None, :, 0] * b.rx) ** 2 + (ww[far, None] - b.vessels[None, :, 1] * b.rz) ** 2
                dist = np.sqrt(dv.min(axis=1)) / scale[far]
                ves.ravel()[sel[far]] = np.clip(1.3 - dist / 0.8, 0, 1)
            g = np.maximum(g, duct.astype(np.float32))
            fgt.ravel()[sel] = g
            lig.ravel()[sel] = sheet * (1 - g)
        ves = ves * (1 - fgt) * region
        fgt = fgt * region
        lig = np.clip(lig * region - ves, 0, 1)
        fs["fgt"] += fgt + lig                               # Cooper's ligaments: fibrous stroma
        fs["blood"] += ves
        fs["fat"] += np.clip(region - fgt - lig - ves, 0, 1)
        for k in f:
            f[k][box] = fs[k]

    def _render_tumor(self, f, X, Y, z, pix, st) -> None:
        tm = self.tumor
        ext = tm.extent_mm
        cx, cy, cz = tm.center
        if abs(z - cz) > ext:
            return
        box = _box(X[0], Y[:, 0], cx - ext - pix, cx + ext + pix, cy - ext - pix, cy + ext + pix)
        if box is None:
            return
        xs, ys = X[0, box[1]][None, :], Y[box[0], 0][:, None]
        xs, ys = np.broadcast_arrays(xs, ys)
        frac, core = tumor_fraction(tm, xs, ys, z, pix)
        # the lesion displaces breast tissue; an invasive (T4) one also the chest wall or skin
        hosts = ["fat", "fgt", "blood"]
        if tm.invasion == "chest wall":
            hosts += ["muscle", "bone"]
        elif tm.invasion == "skin":
            hosts += ["skin"]
        host = sum(f[t][box] for t in hosts) + 1e-6
        take = np.minimum(frac, host)
        for t in hosts:
            f[t][box] -= f[t][box] / host * take
        core_take = np.minimum(core, take)
        f["tumor"][box] += take - core_take
        f["tumor_core"][box] += core_take


# ---- drawing a patient ---------------------------------------------------------------------------
def make_phantom(rng: np.random.Generator, patient_index: int = 0, seed: int = 0,
                 density: str | None = None, tumor: bool | None = None,
                 tumor_diameter_mm: float | None = None, tumor_invasion: str | None = None,
                 forced_stage: dict | None = None) -> Phantom:
    """Draw one patient's anatomy from ``rng`` (deterministic given the generator state).

    ``density``, ``tumor``, ``tumor_diameter_mm`` and ``tumor_invasion`` ("", "chest wall", "skin")
    force those properties (for controlled studies); otherwise they are drawn: density from the
    BI-RADS frequencies, a carcinoma in 90 % of patients with its stage (:func:`draw_stage`).
    The number of draws never depends on the forced values, so forcing one leaves the rest alone.
    ``forced_stage``: a whole :func:`draw_stage` result (size, invasion, margin, necrosis, N, M)
    used instead of the one drawn here (a cohort sampled by stage: ``mridomain.sim.breast.simulate``).
    """
    names = list(DENSITY_CLASSES)
    drawn_density = draw_density(rng)
    density = drawn_density if density is None else density
    if density not in DENSITY_CLASSES:
        raise InvalidArgumentError(f"unknown density class {density!r}; use one of {names}")
    lo, hi = DENSITY_CLASSES[density][1]
    fgt_fraction = float(rng.uniform(lo, hi))
    weight = float(np.clip(rng.normal(75, 14), 48, 120))
    size = (weight / 75) ** 0.5
    torso_w = float(np.clip(rng.normal(160, 12) * size ** 0.6, 130, 200))
    torso_ty = float(np.clip(rng.normal(105, 9) * size ** 0.5, 85, 135))
    torso_p = float(rng.uniform(2.05, 2.45))
    # fattier breasts are larger on average (breast volume correlates with BMI and lower density)
    fat_boost = {"fatty": 1.15, "scattered": 1.05, "heterogeneous": 0.95, "extremely dense": 0.85}[density]
    rx = float(np.clip(rng.normal(60, 7) * size ** 0.5 * fat_boost, 42, 85))
    rz = float(np.clip(rng.normal(66, 8) * size ** 0.4, 50, 90))
    proj = float(np.clip(rng.normal(100, 22) * size * fat_boost, 50, 170))
    shape_k = float(rng.uniform(1.3, 2.0))
    cx = float(np.clip(rng.normal(0.55 * torso_w, 6), 68, 120))
    asym = rng.uniform(0.94, 1.06, size=3)
    breasts = []
    for k, s in enumerate((-1, 1)):
        a = asym if k == 0 else 1 / asym
        breasts.append(Breast(
            side=s, cx=cx, zc=float(rng.uniform(-8, 4)), rx=rx * a[0], rz=rz * a[2], proj=proj * a[1],
            shape_k=shape_k, tilt=float(np.deg2rad(rng.uniform(3, 10))), droop=float(np.deg2rad(rng.uniform(0, 12))),
            nipple_r=float(rng.uniform(4.0, 6.5)), nipple_len=float(rng.uniform(3.0, 8.0)),
            areola_r=float(rng.uniform(15, 24)),
            tex_offset=rng.uniform(0, TEXTURE_N, 3).astype(np.float32), tex_rot=float(rng.uniform(0, 2 * np.pi)),
            ducts=rng.uniform(-0.35, 0.35, (int(rng.integers(8, 14)), 2)).astype(np.float32),
            vessels=rng.uniform(-0.7, 0.7, (int(rng.integers(4, 8)), 2)).astype(np.float32)))
    skin = float(rng.uniform(1.5, 2.5))
    subcut = float(rng.uniform(4, 10)) * size
    retro = float(rng.uniform(3, 7))
    pec = float(rng.uniform(8, 16))
    pec_minor = float(rng.uniform(4, 8))
    cw = float(rng.uniform(11, 16))
    lat_m = float(rng.uniform(7, 13))
    heart_c = (float(rng.uniform(30, 50)), float(rng.uniform(48, 62)), float(rng.uniform(-60, -25)))
    heart_r = (float(rng.uniform(50, 60)), float(rng.uniform(36, 44)), float(rng.uniform(50, 62)))
    heart_angle = float(np.deg2rad(rng.uniform(-45, -25)))  # long axis towards the left-anterior apex
    aorta_x = float(rng.uniform(14, 26))
    aorta_r = float(rng.uniform(10, 13))
    liver_dome = float(rng.uniform(-75, -25))
    vert_r = float(rng.uniform(15, 19))
    kin = {
        "tumor_amp": float(rng.uniform(0.35, 0.8)),
        "tumor_kin": float(rng.uniform(1.5, 4.0)),
        # washout (type III) 57 %, plateau (II) 34 %, persistent (I) 9 % of cancers (Kuhl 1999)
        "tumor_kout": float(rng.choice([rng.uniform(0.08, 0.2), rng.uniform(0.0, 0.04), -0.03],
                                       p=[0.57, 0.34, 0.09])),
        "bpe_amp": float(rng.uniform(0.03, 0.2)),
    }
    b0_coef = rng.normal(0, [0.0, 0.25, 0.25, 0.15, 0.3, 0.2, 0.15]).astype(np.float32)
    b0_sus = float(rng.uniform(0.6, 1.6))
    b1_coef = rng.normal(0, 1, size=3).astype(np.float32)
    # the carcinoma (drawn regardless, so later draws do not depend on the tumour switch)
    has_tumor = bool(rng.random() < 0.9)
    has_tumor = has_tumor if tumor is None else bool(tumor)
    stage = draw_stage(rng)
    if forced_stage is not None:
        stage = dict(forced_stage)
    if tumor_invasion is not None:
        stage["invasion"] = tumor_invasion
    if tumor_diameter_mm is not None:
        stage["diameter_mm"] = float(tumor_diameter_mm)
    diam = stage["diameter_mm"]
    side = "L" if rng.random() < 0.5 else "R"
    bi = breasts[1 if side == "L" else 0]
    depth_frac = float(rng.uniform(0.25, 0.6))
    lat_off = float(rng.uniform(-0.35, 0.35))
    z_off = float(rng.uniform(-0.4, 0.4))
    nl = 6
    shape = stage["shape"]
    lobe_amp = rng.uniform(0.04, 0.12 if shape != "oval" else 0.04, size=nl) / 2
    spikes = int(rng.integers(6, 14)) if shape == "spiculated" else 0
    tm_obj = Tumor(center=np.zeros(3), diameter_mm=diam, side=side, shape=shape,
                   lobe_dirs=_unit(rng, nl).astype(np.float32), lobe_amp=lobe_amp.astype(np.float32),
                   lobe_freq=rng.uniform(1, 3, nl).astype(np.float32),
                   lobe_phase=rng.uniform(0, 2 * np.pi, nl).astype(np.float32),
                   spike_dirs=_unit(rng, spikes).astype(np.float32),
                   spike_len=rng.uniform(0.5, 1.3, spikes).astype(np.float32),
                   necrotic=stage["necrotic"], t_stage=t_stage_from(diam, stage["invasion"]),
                   n_stage=stage["n"], m_stage=stage["m"], invasion=stage["invasion"])
    # axillary lymph nodes: a few normal ones per side (small, fatty hilum); node-positive patients
    # have enlarged (>= 10 mm short axis), hilum-less nodes on the tumour side
    node_rows = []
    for s in (-1, 1):
        for _ in range(int(rng.integers(2, 5))):
            node_rows.append([s * torso_w * rng.uniform(0.80, 0.92), torso_ty * rng.uniform(0.45, 0.8),
                              rng.uniform(0.45, 0.95) * rz, rng.uniform(3.0, 5.0), 0.0])
    n_bad = {0: 0, 1: int(rng.integers(1, 4)), 2: int(rng.integers(4, 7)), 3: int(rng.integers(6, 9))}[stage["n"]]
    s_t = 1 if side == "L" else -1
    for _ in range(9):  # fixed number of draws
        row = [s_t * torso_w * rng.uniform(0.80, 0.92), torso_ty * rng.uniform(0.45, 0.8),
               rng.uniform(0.4, 0.95) * rz, rng.uniform(6.0, 11.0), 1.0]
        if has_tumor and n_bad > 0:
            node_rows.append(row)
            n_bad -= 1
    ph = Phantom(patient_index=patient_index, seed=seed, density=density, fgt_fraction=fgt_fraction,
                 torso_w=torso_w, torso_ty=torso_ty, torso_p=torso_p, breasts=tuple(breasts),
                 skin_mm=skin, subcut_mm=subcut, retro_mm=retro, pec_mm=pec, pec_minor_mm=pec_minor,
                 chestwall_mm=cw, lat_muscle_mm=lat_m, heart_c=heart_c, heart_r=heart_r,
                 heart_angle=heart_angle, aorta_x=aorta_x, aorta_r=aorta_r, liver_dome_z=liver_dome,
                 vertebra_r=vert_r, weight_kg=weight, tumor=None, nodes=np.asarray(node_rows, dtype=np.float64).reshape(-1, 5),
                 kinetics=kin, b0_coef=b0_coef, b0_suscept_ppm=b0_sus, b1_coef=b1_coef)
    # lesion centre: inside the glandular zone of its breast; T4 lesions reach the chest wall or skin
    t_c = bi.proj * depth_frac
    if tm_obj.invasion == "chest wall":
        t_c = 0.45 * tm_obj.radius                        # straddles retromammary fat and pectoralis
    xb = bi.side * (bi.cx + t_c * np.tan(bi.tilt)) + lat_off * bi.rx * 0.6
    zb = bi.zc - t_c * np.tan(bi.droop) + z_off * bi.rz * 0.6
    if tm_obj.invasion == "skin":
        # towards the skin: the lesion reaches the surface of the breast at its widest point
        t_c = bi.proj * 0.35
        prof = (1 - (t_c / bi.proj) ** bi.shape_k) ** 0.5
        xb = bi.side * (bi.cx + t_c * np.tan(bi.tilt)) + np.sign(lat_off or 1) * (bi.rx * prof - 0.6 * tm_obj.radius)
        zb = bi.zc - t_c * np.tan(bi.droop)
    tm_obj.center = np.array([xb, float(ph.torso_surface_y(xb)) - t_c, zb])
    if has_tumor:
        ph.tumor = tm_obj
    return ph


def _fgt_threshold(ph: Phantom, b: Breast, fraction: float, rng: np.random.Generator) -> float:
    """Score threshold that makes ``fraction`` of the breast interior glandular: a Monte Carlo
    estimate over points of the breast volume, with the soft threshold as rendered."""
    m = 6000
    t = rng.uniform(0, b.proj, m)
    u = rng.uniform(-1.1, 1.1, m) * b.rx
    w = rng.uniform(-1.1, 1.1, m) * b.rz
    z = (b.zc + w - t * np.tan(b.droop)).astype(np.float32)
    xb = (b.side * (b.cx + t * np.tan(b.tilt)) + u).astype(np.float32)
    yb = (ph.torso_surface_y(xb) - t).astype(np.float32)
    sd, tt, _, _ = ph._breast_sd(b, xb, yb, z)
    inside = sd < -ph.skin_mm
    if not inside.any():
        return 1e9
    gw = _soft(sd[inside] + ph.subcut_mm, 1.0) * np.clip((tt[inside] - ph.retro_mm) / 2.0 + 0.5, 0, 1)
    sc, _ = ph._gland_score(b, xb[inside], yb[inside], z[inside], sd[inside], tt[inside])

    def share(thr):
        return float((special.expit((sc - thr) / 0.08) * gw).mean()) - fraction

    lo, hi = -10.0, 10.0
    for _ in range(40):  # bisection: share() decreases with the threshold
        mid = 0.5 * (lo + hi)
        if share(mid) > 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)
