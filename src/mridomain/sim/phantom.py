"""Procedural prone bilateral breast phantoms, evaluated lazily on any slice grid.

Coordinates are DICOM patient coordinates (LPS, mm): +x towards the patient's left, +y posterior,
+z towards the head. The anterior surface of the chest wall passes through y = 0 at the midline and
the (prone, pendant) breasts hang towards -y. The heart sits left of the midline (+x), so a stored
image that is mirrored left-right (HFP vs FFP) is physically distinguishable.

Smooth anatomy (body outline, breasts, chest wall, thorax, tumour) is analytic and evaluated at the
pixel grid asked for; fine texture (fibroglandular tissue, vessels) lives on a per-patient 3D grid
(``grid_mm``) that is box-filtered along z for each slice thickness and then interpolated, so slice
thickness acts as true partial-volume averaging.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from mridomain.sim.physics import TISSUES

#: BI-RADS-like density classes: population weights and fibroglandular volume fraction of the breast
#: interior (fatty <25 %, scattered 25-50 %, heterogeneous 50-75 %, extremely dense >75 % of the
#: glandular zone; expressed here as fraction of the whole breast interior).
DENSITY_CLASSES: dict[str, tuple[float, tuple[float, float]]] = {
    "fatty": (0.10, (0.04, 0.10)),
    "scattered": (0.40, (0.10, 0.22)),
    "heterogeneous": (0.40, (0.22, 0.40)),
    "extremely dense": (0.10, (0.40, 0.60)),
}


@dataclass
class Tumor:
    """An irregular or spiculated lesion. Radii in mm, centre in patient coordinates."""

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

    @property
    def radius(self) -> float:
        return 0.5 * self.diameter_mm

    @property
    def extent_mm(self) -> float:
        """Radius of a sphere enclosing the lesion including spicules."""
        spikes = float(self.spike_len.max()) if len(self.spike_len) else 0.0
        return self.radius * (1.0 + float(self.lobe_amp.sum()) + spikes) + 1.0


@dataclass
class Phantom:
    """One patient's anatomy and physiology (all sizes in mm). Build with :func:`make_phantom`."""

    patient_index: int
    seed: int
    density: str
    fgt_fraction: float
    torso_w: float          # half-width of the torso
    torso_ty: float         # half AP depth of the torso
    breast_cx: float        # |x| of each breast centre
    breast_rx: tuple[float, float]   # (right, left) lateral radius
    breast_p: tuple[float, float]    # (right, left) anterior projection
    breast_rz: float        # cranio-caudal radius
    skin_mm: float
    subcut_mm: float        # subcutaneous fat over the chest and inside the breast skin
    retro_mm: float         # retromammary fat in front of the pectoralis
    pec_mm: float           # pectoralis thickness
    chestwall_mm: float     # ribs + intercostal muscle
    heart_c: tuple[float, float, float]
    heart_r: tuple[float, float, float]
    weight_kg: float
    tumor: Tumor | None
    kinetics: dict[str, float]
    b0_coef: np.ndarray     # shim residual polynomial (ppm): 1, x, y, z, x^2, y^2, xy
    b0_suscept_ppm: float   # off-resonance at the breast tip from tissue-air susceptibility
    b1_coef: np.ndarray     # transmit field shape: L-R gradient, AP gradient, quadratic
    grid_mm: float = 1.5
    _grid: dict = field(default_factory=dict, repr=False)

    # ---- geometry -----------------------------------------------------------------------------
    @property
    def z_extent(self) -> tuple[float, float]:
        """Cranio-caudal extent of the breasts (mm)."""
        return -self.breast_rz, self.breast_rz

    def torso_surface_y(self, x):
        """Anterior surface of the torso (y) at lateral position x: an ellipse through y = 0."""
        u = np.clip(np.abs(x) / self.torso_w, 0, 0.999)
        return self.torso_ty * (1 - np.sqrt(1 - u * u))

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
        center = float(self.tumor.center[2]) if self.tumor is not None else 0.0
        # one slice passes through the lesion centre whenever the slab can stay inside the breasts
        lo = center - spacing * ((n_slices - 1) // 2)
        lo_c = float(np.clip(lo, zmin + 2, max(zmin + 2, zmax - 2 - span)))
        if lo_c != lo:
            lo = lo_c + ((center - lo_c) % spacing if self.tumor is not None and span > 0 else 0.0)
            lo = lo if lo + span <= zmax + spacing else lo_c
        return (lo + spacing * np.arange(n_slices)).astype(np.float64)

    # ---- 3D texture grid ----------------------------------------------------------------------
    def _texture(self) -> dict:
        if self._grid:
            return self._grid
        h = self.grid_mm
        rng = np.random.default_rng([self.seed, self.patient_index, 7])
        xr = self.breast_cx + max(self.breast_rx) + 10
        pmax = max(self.breast_p) + 10
        x = np.arange(-xr, xr + h, h, dtype=np.float32)
        y = np.arange(-pmax, self.torso_surface_y(self.breast_cx + max(self.breast_rx)) + 8 + h, h,
                      dtype=np.float32)
        z = np.arange(-self.breast_rz - 3, self.breast_rz + 3 + h, h, dtype=np.float32)
        Z, Y, X = np.meshgrid(z, y, x, indexing="ij")
        inner = self._breast_inner(X, Y, Z)
        # fibroglandular texture: fine ductal-lobular structure elongated towards the nipple plus
        # a coarse component that clusters tissue in the central / subareolar breast
        fine = ndimage.gaussian_filter(rng.standard_normal(X.shape, dtype=np.float32),
                                       sigma=(1.6 / h, 3.5 / h, 1.6 / h))
        # the coarse component is smooth: draw it on a 4x coarser grid and interpolate (cheap)
        small = tuple(max(s // 4, 2) for s in X.shape)
        coarse = ndimage.gaussian_filter(rng.standard_normal(small, dtype=np.float32),
                                         sigma=(9 / h / 4, 12 / h / 4, 9 / h / 4))
        coarse = ndimage.zoom(coarse, [a / b for a, b in zip(X.shape, small)], order=1,
                              mode="nearest")[:X.shape[0], :X.shape[1], :X.shape[2]]
        fine /= fine.std() + 1e-6
        coarse /= coarse.std() + 1e-6
        score = 0.65 * fine + 0.5 * coarse + 1.6 * inner
        sel = inner > 0.05
        thr = np.quantile(score[sel], 1 - self.fgt_fraction) if sel.any() else 1e9
        fgt = (1.0 / (1.0 + np.exp(-(score - thr) / 0.12))).astype(np.float32) * (inner > 0)
        vessels = self._vessels(rng, x, y, z)
        self._grid = {"x": x, "y": y, "z": z, "fgt": fgt, "vessel": vessels, "filtered": {}}
        return self._grid

    def _breast_inner(self, X, Y, Z) -> np.ndarray:
        """0..1 closeness to the breast axis inside the glandular zone, 0 outside it."""
        out = np.zeros(X.shape, dtype=np.float32)
        for k, s in enumerate((-1, 1)):
            rx, p = self.breast_rx[k] - self.subcut_mm, self.breast_p[k] - self.subcut_mm
            f = np.sqrt(np.clip(1 - (Z / (self.breast_rz - self.subcut_mm)) ** 2, 0, 1))
            # the glandular zone ends at the retromammary fat, which follows the curved chest wall
            ya = self.torso_surface_y(X) - self.retro_mm
            lv = ((X - s * self.breast_cx) / (rx * f + 1e-3)) ** 2 + \
                 (np.maximum(ya - Y, 0) / (p * f + 1e-3)) ** 2
            inside = (lv < 1) & (Y < ya)
            out = np.maximum(out, np.where(inside, 1 - np.sqrt(np.minimum(lv, 1)), 0))
        return out.astype(np.float32)

    def _vessels(self, rng, x, y, z) -> np.ndarray:
        h = self.grid_mm
        acc = np.zeros((len(z), len(y), len(x)), dtype=np.float32)
        sig = 1.1 / h  # vessel radius ~1.1-1.5 mm as a Gaussian tube
        ds = 0.5
        for k, s in enumerate((-1, 1)):
            for _ in range(int(rng.integers(4, 9))):
                ya = self.torso_surface_y(s * self.breast_cx)
                p0 = np.array([s * self.breast_cx + rng.uniform(-0.6, 0.6) * self.breast_rx[k],
                               ya - 2, rng.uniform(-0.6, 0.6) * self.breast_rz])
                p1 = np.array([s * self.breast_cx + rng.uniform(-0.25, 0.25) * self.breast_rx[k],
                               ya - rng.uniform(0.5, 0.9) * self.breast_p[k],
                               p0[2] * rng.uniform(0.2, 0.7)])
                length = float(np.linalg.norm(p1 - p0))
                t = np.linspace(0, 1, max(int(length / ds), 2))[:, None]
                wig = rng.uniform(3, 8) * np.sin(np.pi * t * rng.uniform(1, 3) + rng.uniform(0, 6))
                pts = p0 + (p1 - p0) * t
                pts[:, 0] += wig[:, 0]
                pts[:, 2] += 0.5 * wig[:, 0]
                iz = np.clip(np.round((pts[:, 2] - z[0]) / h).astype(int), 0, len(z) - 1)
                iy = np.clip(np.round((pts[:, 1] - y[0]) / h).astype(int), 0, len(y) - 1)
                ix = np.clip(np.round((pts[:, 0] - x[0]) / h).astype(int), 0, len(x) - 1)
                np.add.at(acc, (iz, iy, ix), 1.0)
        acc = ndimage.gaussian_filter(acc, sig)
        # a line of linear density 1/ds (per mm) blurred by a 3D Gaussian peaks at h/(ds 2 pi sig^2)
        peak = h / (ds * 2 * np.pi * sig * sig)
        return np.clip(2.0 * acc / peak - 0.6, 0, 1).astype(np.float32)

    def _filtered(self, key: str, thickness: float) -> np.ndarray:
        """Texture grid box-averaged along z over a slice of ``thickness`` mm (partial volume)."""
        g = self._texture()
        cache_key = (key, round(thickness, 4))
        if cache_key not in g["filtered"]:
            h = self.grid_mm
            zs = np.linspace(-thickness / 2, thickness / 2, 65) / h
            half = int(np.ceil(thickness / (2 * h))) + 1
            kern = np.zeros(2 * half + 1)
            lo = np.floor(zs).astype(int)
            fr = zs - lo
            np.add.at(kern, lo + half, 1 - fr)
            np.add.at(kern, lo + 1 + half, fr)
            kern /= kern.sum()
            g["filtered"][cache_key] = ndimage.convolve1d(g[key], kern[::-1], axis=0, mode="nearest")
        return g["filtered"][cache_key]

    def _sample_grid(self, vol: np.ndarray, X, Y, z: float) -> np.ndarray:
        """Trilinear sample of a texture grid on the slice plane (z-lerp, then 2D bilinear)."""
        g = self._texture()
        h = self.grid_mm
        fz = (z - g["z"][0]) / h
        i0 = int(np.floor(fz))
        if i0 < -1 or i0 > vol.shape[0] - 1:
            return np.zeros(X.shape, dtype=np.float32)
        w = np.float32(fz - i0)
        lo = vol[i0] if 0 <= i0 < vol.shape[0] else 0.0
        hi = vol[i0 + 1] if 0 <= i0 + 1 < vol.shape[0] else 0.0
        plane = np.asarray((1 - w) * lo + w * hi, dtype=np.float32)
        if plane.ndim == 0:
            return np.zeros(X.shape, dtype=np.float32)
        # pixel grids are axis-aligned: interpolate separably on the 1-D row / column coordinates
        ys = (Y[:, 0] - g["y"][0]) / h
        xs = (X[0, :] - g["x"][0]) / h
        return _bilinear_separable(plane, ys, xs)

    # ---- rendering ----------------------------------------------------------------------------
    def render(self, X: np.ndarray, Y: np.ndarray, z: float, thickness: float,
               pixel_mm: float, n_sub: int | None = None) -> np.ndarray:
        """Tissue fractions (len(TISSUES), *X.shape), float32, summing to <= 1 (air = remainder).

        ``X``, ``Y``: in-plane patient coordinates of the pixel centres (mm); ``z`` the slice centre;
        smooth anatomy is averaged over ``n_sub`` positions through the slice, texture over the exact
        slice profile; edges are anti-aliased over one pixel (``pixel_mm``).
        """
        if n_sub is None:
            # large smooth structures change little within a slice; two samples suffice for thick ones
            n_sub = 2 if thickness > 1.5 else 1
        zs = z + thickness * ((np.arange(n_sub) + 0.5) / n_sub - 0.5)
        acc = np.zeros((len(TISSUES),) + X.shape, dtype=np.float32)
        for zz in zs:
            acc += self._render_smooth(X, Y, float(zz), pixel_mm)
        acc /= n_sub
        ti = {t: i for i, t in enumerate(TISSUES)}
        # texture inside the breast: glandular and vascular fractions of the breast-fat compartment
        breast_fat = acc[ti["fat"]] * self._breast_weight(X, Y, z)
        fgt = self._sample_grid(self._filtered("fgt", thickness), X, Y, z)
        ves = self._sample_grid(self._filtered("vessel", thickness), X, Y, z)
        v = breast_fat * ves
        gl = (breast_fat - v) * fgt
        acc[ti["fat"]] -= v + gl
        acc[ti["blood"]] += v
        acc[ti["fgt"]] += gl
        if self.tumor is not None:
            self._render_tumor(acc, X, Y, z, thickness, pixel_mm, ti)
        return acc

    def _breast_weight(self, X, Y, z):
        """1 where the breast-fat compartment lies (in front of the chest wall), 0 in the torso."""
        return (Y < self.torso_surface_y(X) + 2).astype(np.float32)

    @staticmethod
    def _soft(level, radius, pixel_mm, inset: float = 0.0):
        """Area fraction inside an implicit ellipse-like level set (level = (r/R)^2), 1-pixel ramp.

        ``radius`` converts the level to an approximate signed distance (mm); ``inset`` moves the
        boundary inwards by that many mm (skin and wall layers)."""
        d = (np.sqrt(np.maximum(level, 0)) - 1.0) * radius + inset
        return np.clip(0.5 - d / pixel_mm, 0, 1).astype(np.float32)

    def _render_smooth(self, X, Y, z: float, pix: float) -> np.ndarray:
        ti = {t: i for i, t in enumerate(TISSUES)}
        out = np.zeros((len(TISSUES),) + X.shape, dtype=np.float32)
        W, T = self.torso_w, self.torso_ty
        # torso: ellipse (W, T) centred at (0, T); anterior surface through y = 0
        tl = (X / W) ** 2 + ((Y - T) / T) ** 2
        torso = self._soft(tl, min(W, T), pix)
        torso_in = self._soft(tl, min(W, T), pix, self.skin_mm)
        body, body_in = torso, torso_in
        for k, s in enumerate((-1, 1)):
            f = np.sqrt(max(0.0, 1 - (z / self.breast_rz) ** 2))
            if f <= 0.02:
                continue
            rx, p = self.breast_rx[k] * f, self.breast_p[k] * f
            ya = self.torso_surface_y(s * self.breast_cx) + 5
            lv = ((X - s * self.breast_cx) / rx) ** 2 + (np.maximum(ya - Y, 0) / p) ** 2
            r_eff = min(rx, p)
            b = self._soft(lv, r_eff, pix) * (Y < ya + 10)
            bi = self._soft(lv, r_eff, pix, self.skin_mm) * (Y < ya + 10)
            body = np.maximum(body, b)
            body_in = np.maximum(body_in, bi)
        skin = np.clip(body - body_in, 0, 1)
        out[ti["skin"]] = skin
        # inside the torso: layers by depth below the anterior surface
        d = Y - self.torso_surface_y(X)
        lateral = np.abs(X) / W
        sub = self.subcut_mm
        pec = ((d > sub) & (d < sub + self.pec_mm) & (lateral > 0.12) & (lateral < 0.75))
        cw0, cw1 = sub + self.pec_mm, sub + self.pec_mm + self.chestwall_mm
        cwall = (d > cw0 - (lateral <= 0.12) * self.pec_mm) & (d < cw1)
        # ribs: ~2 cm pitch along z, marrow is fatty, cortex dark
        rib = 0.5 + 0.5 * np.cos(2 * np.pi * (z / 24.0 + 0.3 * lateral))
        rib_frac = np.float32(np.clip((rib - 0.55) * 4, 0, 1))
        thorax = d >= cw1
        # thorax contents: lungs either side, heart left-anterior, mediastinal fat between
        hx, hy, hz = self.heart_c
        rhx, rhy, rhz = self.heart_r
        fh = np.sqrt(max(0.0, 1 - ((z - hz) / rhz) ** 2))
        heart = np.zeros_like(X)
        pool = np.zeros_like(X)
        if fh > 0.05:
            hl = ((X - hx) / (rhx * fh)) ** 2 + ((Y - (cw1 + hy)) / (rhy * fh)) ** 2
            heart = self._soft(hl, rhy * fh, pix)
            pool = self._soft(hl, rhy * fh, pix, 9.0)
        lung = np.zeros_like(X)
        for s in (-1, 1):
            ll = ((X - s * 0.52 * W) / (0.36 * W)) ** 2 + ((Y - (cw1 + 0.75 * T)) / (0.72 * T)) ** 2
            lung = np.maximum(lung, self._soft(ll, 0.36 * W, pix))
        lung = lung * (1 - heart)
        aorta = self._soft(((X - 22) / 12) ** 2 + ((Y - 1.55 * T) / 12) ** 2, 12, pix)
        spine = self._soft((X / 20) ** 2 + ((Y - 1.72 * T) / 18) ** 2, 18, pix)
        ima = sum(self._soft(((X - s * 28) / 2.0) ** 2 + ((Y - cw1 - 2) / 2.0) ** 2, 2.0, pix)
                  for s in (-1, 1))  # internal mammary vessels behind the sternum edge
        inner = torso_in
        tissue_muscle = inner * (pec | (cwall & (lateral > 0.12)) | (thorax & (lateral > 0.85)))
        tissue_cw = inner * cwall
        out[ti["muscle"]] += tissue_muscle * np.where(cwall, 1 - rib_frac, 1)
        out[ti["bone"]] += tissue_cw * rib_frac * 0.5 + inner * thorax * spine * 0.4
        th = inner * thorax * (lateral <= 0.85)
        out[ti["lung"]] += th * lung * (1 - aorta) * (1 - spine)
        out[ti["myocardium"]] += th * (heart - pool)
        out[ti["blood"]] += th * (pool + aorta * (1 - heart)) + inner * ima * (d < cw1 + 6)
        used = out.sum(axis=0)
        # remaining interior is fat (subcutaneous, breast, mediastinal, marrow)
        out[ti["fat"]] += np.clip(body - skin - used, 0, 1)
        # the breast part of the body in front of the torso is breast fat (refined by texture later)
        return out

    def _render_tumor(self, acc, X, Y, z, thickness, pix, ti) -> None:
        tm = self.tumor
        ext = tm.extent_mm
        cx, cy, cz = tm.center
        if abs(z - cz) > ext + thickness:
            return
        sel = (np.abs(X - cx) < ext + pix) & (np.abs(Y - cy) < ext + pix)
        if not sel.any():
            return
        rows = np.where(sel.any(axis=1))[0]
        cols = np.where(sel.any(axis=0))[0]
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        xs, ys = X[r0:r1, c0:c1], Y[r0:r1, c0:c1]
        n_sub = 5
        frac = np.zeros(xs.shape, dtype=np.float32)
        core = np.zeros(xs.shape, dtype=np.float32)
        for zz in z + thickness * ((np.arange(n_sub) + 0.5) / n_sub - 0.5):
            f, c = tumor_fraction(tm, xs, ys, float(zz), pix)
            frac += f
            core += c
        frac /= n_sub
        core /= n_sub
        region = acc[:, r0:r1, c0:c1]
        # the lesion displaces whatever breast tissue was there
        host = region[[ti["fat"], ti["fgt"], ti["blood"]]].sum(axis=0) + 1e-6
        take = np.minimum(frac, host)
        for t in ("fat", "fgt", "blood"):
            region[ti[t]] -= region[ti[t]] / host * take
        core_take = np.minimum(core, take)
        region[ti["tumor"]] += take - core_take
        region[ti["tumor_core"]] += core_take


def _bilinear_separable(plane: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of ``plane`` at the outer product of row coords ``ys`` and column
    coords ``xs`` (grid units); zero outside."""
    def weights(c, n):
        i = np.floor(c).astype(np.int64)
        f = (c - i).astype(np.float32)
        valid0 = (i >= 0) & (i < n)
        valid1 = (i + 1 >= 0) & (i + 1 < n)
        return np.clip(i, 0, n - 1), np.clip(i + 1, 0, n - 1), (1 - f) * valid0, f * valid1
    r0, r1, wr0, wr1 = weights(ys, plane.shape[0])
    c0, c1, wc0, wc1 = weights(xs, plane.shape[1])
    rows = plane[r0] * wr0[:, None] + plane[r1] * wr1[:, None]
    return (rows[:, c0] * wc0[None, :] + rows[:, c1] * wc1[None, :]).astype(np.float32)


def tumor_fraction(tm: Tumor, X, Y, z: float, pix: float) -> tuple[np.ndarray, np.ndarray]:
    """In-plane area fraction of the lesion and of its necrotic core at height z."""
    dx, dy, dz = X - tm.center[0], Y - tm.center[1], np.float32(z - tm.center[2])
    r = np.sqrt(dx * dx + dy * dy + dz * dz) + 1e-6
    u = np.stack([dx / r, dy / r, np.broadcast_to(dz / r, r.shape)], axis=-1)
    rad = np.ones_like(r)
    # lobulation: smooth radial modulation along a few random directions
    cosang = u @ tm.lobe_dirs.T  # (..., K)
    rad += (tm.lobe_amp * np.cos(tm.lobe_freq * cosang * np.pi + tm.lobe_phase)).sum(axis=-1)
    if len(tm.spike_dirs):
        c = np.clip(u @ tm.spike_dirs.T, 0, 1)
        rad += (tm.spike_len * c ** 300).sum(axis=-1)  # narrow needles (angular width ~0.06 rad)
    rad *= tm.radius
    frac = np.clip(0.5 + (rad - r) / pix, 0, 1).astype(np.float32)
    core = np.zeros_like(frac)
    if tm.necrotic:
        core = np.clip(0.5 + (0.45 * tm.radius - r) / pix, 0, 1).astype(np.float32)
    return frac, core


def _unit(rng, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def make_phantom(rng: np.random.Generator, patient_index: int = 0, seed: int = 0,
                 density: str | None = None, tumor: bool | None = None,
                 tumor_diameter_mm: float | None = None, grid_mm: float = 1.5) -> Phantom:
    """Draw one patient's anatomy from ``rng`` (deterministic given the generator state).

    ``density``, ``tumor`` and ``tumor_diameter_mm`` force those properties (for controlled studies);
    otherwise they are drawn: density from BI-RADS-like frequencies, a lesion in 90 % of patients
    with a log-normal diameter clipped to 5-40 mm.
    """
    names = list(DENSITY_CLASSES)
    if density is None:
        w = np.array([DENSITY_CLASSES[n][0] for n in names])
        density = names[int(rng.choice(len(names), p=w / w.sum()))]
    if density not in DENSITY_CLASSES:
        raise ValueError(f"unknown density class {density!r}; use one of {names}")
    lo, hi = DENSITY_CLASSES[density][1]
    fgt_fraction = float(rng.uniform(lo, hi))
    weight = float(np.clip(rng.normal(75, 14), 48, 120))
    size = (weight / 75) ** 0.5
    torso_w = float(np.clip(rng.normal(160, 12) * size ** 0.6, 130, 200))
    torso_ty = float(np.clip(rng.normal(105, 9) * size ** 0.5, 85, 135))
    # fattier breasts are larger on average (breast volume correlates with BMI and with lower density)
    fat_boost = {"fatty": 1.15, "scattered": 1.05, "heterogeneous": 0.95, "extremely dense": 0.85}[density]
    rx = float(np.clip(rng.normal(68, 9) * size ** 0.5 * fat_boost, 45, 95))
    p = float(np.clip(rng.normal(95, 22) * size * fat_boost, 45, 170))
    asym = rng.uniform(0.93, 1.07, size=2)
    breast_rx = (rx * asym[0], rx / asym[0])
    breast_p = (p * asym[1], p / asym[1])
    breast_cx = float(np.clip(rng.normal(0.58 * torso_w, 6), 70, 125))
    breast_rz = float(np.clip(rng.normal(75, 9) * size ** 0.4, 55, 100))
    skin = float(rng.uniform(1.4, 2.4))
    subcut = float(rng.uniform(4, 10)) * size
    pec = float(rng.uniform(8, 16))
    cw = float(rng.uniform(10, 15))
    heart_c = (float(rng.uniform(25, 50)), float(rng.uniform(50, 70)), float(rng.uniform(-45, -15)))
    heart_r = (float(rng.uniform(48, 60)), float(rng.uniform(38, 48)), float(rng.uniform(55, 70)))
    kin = {
        "tumor_amp": float(rng.uniform(0.35, 0.8)),
        "tumor_kin": float(rng.uniform(1.5, 4.0)),
        # washout (type III), plateau (II) or persistent (I) curve
        "tumor_kout": float(rng.choice([rng.uniform(0.08, 0.2), rng.uniform(0.0, 0.04), -0.03],
                                       p=[0.55, 0.35, 0.10])),
        "bpe_amp": float(rng.uniform(0.03, 0.2)),
    }
    b0_coef = rng.normal(0, [0.0, 0.25, 0.25, 0.15, 0.3, 0.2, 0.15]).astype(np.float32)
    b0_sus = float(rng.uniform(0.6, 1.6))
    b1_coef = rng.normal(0, 1, size=3).astype(np.float32)
    tm = None
    has_tumor = bool(rng.random() < 0.9) if tumor is None else bool(tumor)
    # the lesion is drawn regardless so the remaining draws do not depend on the tumour switch
    diam = float(np.clip(rng.lognormal(np.log(18), 0.45), 5, 40))
    if tumor_diameter_mm is not None:
        diam = float(tumor_diameter_mm)
    side = "L" if rng.random() < 0.5 else "R"
    k = 1 if side == "L" else 0
    s = 1 if side == "L" else -1
    # inside the glandular zone: 25-65 % of the projection in front of the chest wall
    ya = breast_p[k] * rng.uniform(0.25, 0.6)
    center = np.array([s * breast_cx + rng.uniform(-0.35, 0.35) * breast_rx[k],
                       -ya + 0.0, rng.uniform(-0.45, 0.45) * breast_rz])
    shape = str(rng.choice(["irregular", "spiculated", "oval"], p=[0.5, 0.35, 0.15]))
    nl = 6
    lobe_amp = rng.uniform(0.04, 0.12 if shape != "oval" else 0.04, size=nl) / 2
    spikes = int(rng.integers(6, 14)) if shape == "spiculated" else 0
    tm_obj = Tumor(center=center, diameter_mm=diam, side=side, shape=shape,
                   lobe_dirs=_unit(rng, nl).astype(np.float32), lobe_amp=lobe_amp.astype(np.float32),
                   lobe_freq=rng.uniform(1, 3, nl).astype(np.float32),
                   lobe_phase=rng.uniform(0, 2 * np.pi, nl).astype(np.float32),
                   spike_dirs=_unit(rng, spikes).astype(np.float32),
                   spike_len=rng.uniform(0.5, 1.3, spikes).astype(np.float32),
                   necrotic=bool(diam > 25 and rng.random() < 0.6))
    if has_tumor:
        tm = tm_obj
    ph = Phantom(patient_index=patient_index, seed=seed, density=density, fgt_fraction=fgt_fraction,
                 torso_w=torso_w, torso_ty=torso_ty, breast_cx=breast_cx, breast_rx=breast_rx,
                 breast_p=breast_p, breast_rz=breast_rz, skin_mm=skin, subcut_mm=subcut,
                 retro_mm=float(rng.uniform(3, 7)), pec_mm=pec, chestwall_mm=cw, heart_c=heart_c,
                 heart_r=heart_r, weight_kg=weight, tumor=tm, kinetics=kin, b0_coef=b0_coef,
                 b0_suscept_ppm=b0_sus, b1_coef=b1_coef, grid_mm=grid_mm)
    # the tumour sits in front of the chest wall: shift its y to the attachment of its breast
    if tm is not None:
        tm.center[1] = ph.torso_surface_y(tm.center[0]) - ph.retro_mm - ya
    return ph

    
def phantom_parameters(ph: Phantom) -> dict:
    """Flat ground-truth parameters of a phantom for the manifest."""
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
        "tumor_x_mm": float(t.center[0]) if t is not None else np.nan,
        "tumor_y_mm": float(t.center[1]) if t is not None else np.nan,
        "tumor_z_mm": float(t.center[2]) if t is not None else np.nan,
        "tumor_washout": float(ph.kinetics["tumor_kout"]),
    }
