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
from scipy import ndimage, optimize, special

from mridomain.sim.physics import TISSUES
from mridomain.errors import InvalidArgumentError

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
    _smooth: dict = field(default_factory=dict, repr=False)

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
    # The texture (fibroglandular tissue, vessels) is defined on a 1.5 mm 3D grid but only the grid
    # planes a slice profile touches are ever built: the fine noise has one random stream per plane
    # and a separable Gaussian filter, so any plane can be made without the rest of the volume.
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
        # coarse component (central clustering of glandular tissue): smooth, so drawn on a 4x
        # coarser grid spanning the same extent and interpolated linearly per plane
        small = (max(len(z) // 4, 2), max(len(y) // 4, 2), max(len(x) // 4, 2))
        coarse = ndimage.gaussian_filter(rng.standard_normal(small, dtype=np.float32),
                                         sigma=(9 / h / 4, 12 / h / 4, 9 / h / 4))
        coarse /= coarse.std() + 1e-6
        cz = np.linspace(z[0], z[-1], small[0], dtype=np.float32)
        cy = np.linspace(y[0], y[-1], small[1], dtype=np.float32)
        cx = np.linspace(x[0], x[-1], small[2], dtype=np.float32)
        # fine ductal-lobular component elongated towards the nipple (1.6 x 3.5 x 1.6 mm)
        kz, ky, kx = (_gauss_kernel(s / h) for s in (1.6, 3.5, 1.6))
        fine_std = float(np.sqrt((kz ** 2).sum() * (ky ** 2).sum() * (kx ** 2).sum()))
        # threshold so that the expected glandular share of the breast interior is fgt_fraction:
        # the fine field is N(0, 1) at every voxel, so P(score > thr) = Phi((0.5 c + 1.6 inner - thr)
        # / 0.65), averaged over the breast interior sampled on the coarse grid
        CZ, CY, CX = np.meshgrid(cz, cy, cx, indexing="ij")
        inner_c = self._breast_inner(CX, CY, CZ)
        sel = inner_c > 0.05
        if sel.any():
            base = (0.5 * coarse[sel] + 1.6 * inner_c[sel]).astype(np.float64)
            target = self.fgt_fraction
            thr = optimize.brentq(lambda t: special.ndtr((base - t) / 0.65).mean() - target, -20, 20,
                                  xtol=1e-5)
        else:
            thr = 1e9
        vessels = self._vessel_points(rng, x, y, z)
        self._grid = {"x": x, "y": y, "z": z, "coarse": coarse, "cz": cz, "cy": cy, "cx": cx,
                      "kernels": (kz, ky, kx), "fine_std": fine_std, "thr": float(thr),
                      "vessel_pts": vessels, "noise": {}, "planes": {}}
        return self._grid

    def _noise_plane(self, iz: int) -> np.ndarray:
        """White noise of grid plane ``iz``, padded in-plane by the fine filter radius."""
        g = self._grid
        if iz not in g["noise"]:
            _, ky, kx = g["kernels"]
            shape = (len(g["y"]) + len(ky) - 1, len(g["x"]) + len(kx) - 1)
            rng = np.random.default_rng([self.seed, self.patient_index, 8, iz + 100000])
            g["noise"][iz] = rng.standard_normal(shape, dtype=np.float32)
        return g["noise"][iz]

    def _plane(self, iz: int) -> np.ndarray:
        """(fgt, vessel) fractions of the breast-fat compartment on texture grid plane ``iz``."""
        g = self._texture()
        if iz in g["planes"]:
            return g["planes"][iz]
        x, y, z = g["x"], g["y"], g["z"]
        out = np.zeros((2, len(y), len(x)), dtype=np.float32)
        if 0 <= iz < len(z):
            zz = np.float32(z[iz])
            inner = self._breast_inner(x[None, :], y[:, None], zz)
            if (inner > 0).any():
                kz, ky, kx = g["kernels"]
                rz = len(kz) // 2
                acc = np.zeros_like(self._noise_plane(iz))
                for k, w in enumerate(kz):
                    acc += np.float32(w) * self._noise_plane(iz + k - rz)
                # valid-mode separable in-plane filter: the padding holds real noise, no edge effects
                acc = ndimage.correlate1d(acc, ky, axis=0, mode="constant")[len(ky) // 2:len(ky) // 2 + len(y)]
                fine = ndimage.correlate1d(acc, kx, axis=1, mode="constant")[:, len(kx) // 2:len(kx) // 2 + len(x)]
                fine *= np.float32(1.0 / g["fine_std"])
                fz = float(np.interp(zz, g["cz"], np.arange(len(g["cz"]))))
                i0 = min(int(fz), len(g["cz"]) - 2) if len(g["cz"]) > 1 else 0
                wz = np.float32(fz - i0)
                cplane = (1 - wz) * g["coarse"][i0] + wz * g["coarse"][min(i0 + 1, len(g["cz"]) - 1)]
                ys = np.interp(y, g["cy"], np.arange(len(g["cy"]), dtype=np.float32))
                xs = np.interp(x, g["cx"], np.arange(len(g["cx"]), dtype=np.float32))
                coarse = _bilinear_separable(cplane[None], ys, xs)[0]
                score = 0.65 * fine + 0.5 * coarse + 1.6 * inner
                out[0] = special.expit((score - np.float32(g["thr"])) / np.float32(0.12)) * (inner > 0)
            out[1] = self._vessel_plane(iz)
        g["planes"][iz] = out
        return out

    def _breast_inner(self, X, Y, Z) -> np.ndarray:
        """0..1 closeness to the breast axis inside the glandular zone, 0 outside it (broadcasts)."""
        out = None
        for k, s in enumerate((-1, 1)):
            rx, p = self.breast_rx[k] - self.subcut_mm, self.breast_p[k] - self.subcut_mm
            f = np.sqrt(np.clip(1 - (Z / np.float32(self.breast_rz - self.subcut_mm)) ** 2, 0, 1))
            # the glandular zone ends at the retromammary fat, which follows the curved chest wall
            ya = self.torso_surface_y(X) - np.float32(self.retro_mm)
            lv = ((X - np.float32(s * self.breast_cx)) / (rx * f + np.float32(1e-3))) ** 2 + \
                 (np.maximum(ya - Y, 0) / (p * f + np.float32(1e-3))) ** 2
            inside = (lv < 1) & (Y < ya)
            v = np.where(inside, 1 - np.sqrt(np.minimum(lv, 1)), 0)
            out = v if out is None else np.maximum(out, v)
        return out.astype(np.float32)

    def _vessel_points(self, rng, x, y, z) -> np.ndarray:
        """Grid indices (iz, iy, ix) of points along random vessel centre lines, sorted by iz."""
        h = self.grid_mm
        ds = 0.5
        pts_all = []
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
                pts_all.append(np.stack([iz, iy, ix], axis=1))
        idx = np.concatenate(pts_all)
        return idx[np.argsort(idx[:, 0], kind="stable")]

    def _vessel_plane(self, iz: int) -> np.ndarray:
        """Vessel fraction on plane ``iz``: the centre lines blurred by a 3D Gaussian tube profile."""
        g = self._grid
        h = self.grid_mm
        sig = 1.1 / h  # vessel radius ~1.1-1.5 mm as a Gaussian tube
        ds = 0.5
        kern = _gauss_kernel(sig)
        r = len(kern) // 2
        pts = g["vessel_pts"]
        lo, hi = np.searchsorted(pts[:, 0], [iz - r, iz + r + 1])
        acc = np.zeros((len(g["y"]), len(g["x"])), dtype=np.float32)
        if hi > lo:
            p = pts[lo:hi]
            np.add.at(acc, (p[:, 1], p[:, 2]), kern[p[:, 0] - iz + r].astype(np.float32))
            acc = ndimage.correlate1d(acc, kern, axis=0, mode="constant")
            acc = ndimage.correlate1d(acc, kern, axis=1, mode="constant")
        # a line of linear density 1/ds (per mm) blurred by a 3D Gaussian peaks at h/(ds 2 pi sig^2)
        peak = h / (ds * 2 * np.pi * sig * sig)
        return np.clip(2.0 * acc / np.float32(peak) - np.float32(0.6), 0, 1)

    def _texture_slice(self, X, Y, z: float, thickness: float) -> tuple[np.ndarray, np.ndarray]:
        """(fgt, vessel) fractions on the pixel grid, averaged over the slice profile (partial volume).

        The profile is a box of ``thickness`` mm; the grid field is linear between planes, so each
        plane's weight is the exact integral of its hat function over the box.
        """
        g = self._texture()
        h = self.grid_mm
        zc = (z - float(g["z"][0])) / h  # slice centre in plane units
        half = max(thickness, 1e-3) / (2 * h)
        js = np.arange(int(np.floor(zc - half)) - 1, int(np.ceil(zc + half)) + 2)
        w = (_hat_integral(zc + half - js) - _hat_integral(zc - half - js)) / (2 * half)
        keep = w > 1e-7
        plane = np.zeros((2, len(g["y"]), len(g["x"])), dtype=np.float32)
        for j, wj in zip(js[keep], w[keep]):
            if 0 <= j < len(g["z"]):
                plane += np.float32(wj) * self._plane(int(j))
        # pixel grids are axis-aligned: interpolate separably on the 1-D row / column coordinates
        ys = (Y[:, 0] - g["y"][0]) / h
        xs = (X[0, :] - g["x"][0]) / h
        out = _bilinear_separable(plane, ys, xs)
        return out[0], out[1]

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
            self._render_smooth(X, Y, float(zz), pixel_mm, out=acc, weight=1.0 / n_sub)
        ti = {t: i for i, t in enumerate(TISSUES)}
        # texture inside the breast: glandular and vascular fractions of the breast-fat compartment
        breast_fat = acc[ti["fat"]] * self._smooth_static(X[0, :], Y[:, 0], pixel_mm)["breast_w"]
        fgt, ves = self._texture_slice(X, Y, z, thickness)
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

    def _smooth_static(self, x: np.ndarray, y: np.ndarray, pix: float) -> dict:
        """The z-independent part of the smooth anatomy on one pixel grid (torso, chest wall layers,
        lungs, great vessels, spine), combined into the per-tissue terms :meth:`_render_smooth` needs.
        Cached per grid: every slice of a series shares it."""
        key = (len(x), len(y), float(x[0]), float(x[-1]), float(y[0]), float(y[-1]), float(pix))
        if key in self._smooth:
            return self._smooth[key]
        X, Y = x[None, :], y[:, None]
        W, T = self.torso_w, self.torso_ty
        # torso: ellipse (W, T) centred at (0, T); anterior surface through y = 0
        tl = (X / W) ** 2 + ((Y - T) / T) ** 2
        torso = self._soft(tl, min(W, T), pix)
        torso_in = self._soft(tl, min(W, T), pix, self.skin_mm)
        # inside the torso: layers by depth below the anterior surface
        surf = self.torso_surface_y(x)
        d = Y - surf[None, :]
        lateral = np.abs(x) / W
        sub = self.subcut_mm
        pec = (d > sub) & (d < sub + self.pec_mm) & ((lateral > 0.12) & (lateral < 0.75))[None, :]
        cw0, cw1 = sub + self.pec_mm, sub + self.pec_mm + self.chestwall_mm
        cwall = (d > cw0 - (lateral <= 0.12)[None, :] * self.pec_mm) & (d < cw1)
        thorax = d >= cw1
        lung = np.zeros(d.shape, dtype=np.float32)
        for s in (-1, 1):
            ll = ((X - s * 0.52 * W) / (0.36 * W)) ** 2 + ((Y - (cw1 + 0.75 * T)) / (0.72 * T)) ** 2
            lung = np.maximum(lung, self._soft(ll, 0.36 * W, pix))
        aorta = self._soft(((X - 22) / 12) ** 2 + ((Y - 1.55 * T) / 12) ** 2, 12, pix)
        spine = self._soft((X / 20) ** 2 + ((Y - 1.72 * T) / 18) ** 2, 18, pix)
        ima = sum(self._soft(((X - s * 28) / 2.0) ** 2 + ((Y - cw1 - 2) / 2.0) ** 2, 2.0, pix)
                  for s in (-1, 1))  # internal mammary vessels behind the sternum edge
        inner = torso_in
        muscle = inner * (pec | (cwall & (lateral > 0.12)[None, :]) | (thorax & (lateral > 0.85)[None, :]))
        muscle_cw = muscle * cwall       # the part of the muscle that ribs replace
        half_cw = 0.5 * inner * cwall    # rib bone fraction per unit rib_frac
        bone = inner * thorax * spine * 0.4
        th = inner * thorax * (lateral <= 0.85)[None, :]
        lung_t = th * lung * (1 - aorta) * (1 - spine)
        blood = th * aorta + inner * ima * (d < cw1 + 6)
        st = {"torso": torso, "torso_in": torso_in, "muscle": muscle, "muscle_cw": muscle_cw,
              "rib_used": half_cw - muscle_cw, "half_cw": half_cw, "bone": bone, "th": th,
              "th_aorta": th * aorta, "lung": lung_t, "blood": blood,
              # what a unit of heart adds to the used fraction: myocardium/pool replace lung and aorta
              "heart_used": th * (1 - aorta) - lung_t,
              "used": muscle + bone + lung_t + blood, "lateral": lateral, "cw1": cw1,
              "breast_w": (Y < surf[None, :] + 2).astype(np.float32)}
        if len(self._smooth) >= 4:  # a few protocols per phantom at most (in-memory studies)
            self._smooth.pop(next(iter(self._smooth)))
        self._smooth[key] = st
        return st

    @staticmethod
    def _box(x: np.ndarray, y: np.ndarray, xlo, xhi, ylo, yhi) -> tuple[slice, slice] | None:
        """Row and column slices of the pixels with xlo < x < xhi and ylo < y < yhi (1-D grids)."""
        cols = np.nonzero((x > xlo) & (x < xhi))[0]
        rows = np.nonzero((y > ylo) & (y < yhi))[0]
        if not len(cols) or not len(rows):
            return None
        return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)

    def _render_smooth(self, X, Y, z: float, pix: float, out: np.ndarray | None = None,
                       weight: float = 1.0) -> np.ndarray:
        """Smooth anatomy at height z (fractions per tissue); added times ``weight`` into ``out``.

        Pixel grids are axis-aligned, so only the row ``X[0]`` and column ``Y[:, 0]`` are used; the
        z-independent anatomy comes from :meth:`_smooth_static`, the breasts and the heart are
        evaluated only inside their bounding boxes."""
        ti = {t: i for i, t in enumerate(TISSUES)}
        x, y = X[0, :], Y[:, 0]
        if out is None:
            out = np.zeros((len(TISSUES),) + X.shape, dtype=np.float32)
        st = self._smooth_static(x, y, pix)
        body, body_in = st["torso"].copy(), st["torso_in"].copy()
        for k, s in enumerate((-1, 1)):
            f = np.sqrt(max(0.0, 1 - (z / self.breast_rz) ** 2))
            if f <= 0.02:
                continue
            rx, p = self.breast_rx[k] * f, self.breast_p[k] * f
            ya = self.torso_surface_y(s * self.breast_cx) + 5
            r_eff = min(rx, p)
            grow = 1 + 2 * pix / r_eff  # the soft edge reaches at most pix/2 beyond the level set
            box = self._box(x, y, s * self.breast_cx - rx * grow - 2 * pix,
                            s * self.breast_cx + rx * grow + 2 * pix, ya - p * grow - 2 * pix, ya + 10)
            if box is None:
                continue
            xb, yb = x[box[1]][None, :], y[box[0]][:, None]
            lv = ((xb - s * self.breast_cx) / rx) ** 2 + (np.maximum(ya - yb, 0) / p) ** 2
            np.maximum(body[box], self._soft(lv, r_eff, pix), out=body[box])
            np.maximum(body_in[box], self._soft(lv, r_eff, pix, self.skin_mm), out=body_in[box])
        skin = np.clip(body - body_in, 0, 1)
        # ribs: ~2 cm pitch along z, marrow is fatty, cortex dark (a function of x only per slice)
        rib = 0.5 + 0.5 * np.cos(2 * np.pi * (z / 24.0 + 0.3 * st["lateral"]))
        rib_frac = np.clip((rib - 0.55) * 4, 0, 1).astype(np.float32)[None, :]
        w = np.float32(weight)
        out[ti["skin"]] += w * skin
        out[ti["muscle"]] += w * (st["muscle"] - st["muscle_cw"] * rib_frac)
        out[ti["bone"]] += w * (st["half_cw"] * rib_frac + st["bone"])
        used = skin + st["used"] + st["rib_used"] * rib_frac
        lung, blood = st["lung"], st["blood"]
        out[ti["lung"]] += w * lung
        out[ti["blood"]] += w * blood
        # thorax contents: heart left-anterior (+x), displacing lung and the aorta's place
        hx, hy, hz = self.heart_c
        rhx, rhy, rhz = self.heart_r
        fh = np.sqrt(max(0.0, 1 - ((z - hz) / rhz) ** 2))
        if fh > 0.05:
            cy = st["cw1"] + hy
            grow = 1 + 2 * pix / (rhy * fh)
            box = self._box(x, y, hx - rhx * fh * grow - 2 * pix, hx + rhx * fh * grow + 2 * pix,
                            cy - rhy * fh * grow - 2 * pix, cy + rhy * fh * grow + 2 * pix)
            if box is not None:
                xb, yb = x[box[1]][None, :], y[box[0]][:, None]
                hl = ((xb - hx) / (rhx * fh)) ** 2 + ((yb - cy) / (rhy * fh)) ** 2
                heart = self._soft(hl, rhy * fh, pix)
                pool = self._soft(hl, rhy * fh, pix, 9.0)
                th = st["th"][box]
                out[ti["lung"]][box] -= w * (lung[box] * heart)
                out[ti["myocardium"]][box] += w * (th * (heart - pool))
                out[ti["blood"]][box] += w * (th * pool - st["th_aorta"][box] * heart)
                used[box] += heart * st["heart_used"][box]
        # remaining interior is fat (subcutaneous, breast, mediastinal, marrow); skin counts twice in
        # ``used`` as it always has (the outer skin layer leaves a thin signal-free rim inside it)
        out[ti["fat"]] += w * np.clip(body - skin - used, 0, 1)
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
    """Bilinear interpolation of ``plane`` (..., H, W) at the outer product of row coords ``ys`` and
    column coords ``xs`` (grid units); zero outside."""
    def weights(c, n):
        i = np.floor(c).astype(np.int64)
        f = (c - i).astype(np.float32)
        valid0 = (i >= 0) & (i < n)
        valid1 = (i + 1 >= 0) & (i + 1 < n)
        return np.clip(i, 0, n - 1), np.clip(i + 1, 0, n - 1), (1 - f) * valid0, f * valid1
    r0, r1, wr0, wr1 = weights(ys, plane.shape[-2])
    c0, c1, wc0, wc1 = weights(xs, plane.shape[-1])
    rows = plane[..., r0, :] * wr0[:, None] + plane[..., r1, :] * wr1[:, None]
    return (rows[..., c0] * wc0 + rows[..., c1] * wc1).astype(np.float32)


def _gauss_kernel(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Normalised 1-D Gaussian weights (the kernel scipy.ndimage.gaussian_filter uses)."""
    r = int(truncate * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return k / k.sum()


def _hat_integral(u: np.ndarray) -> np.ndarray:
    """Antiderivative of the linear-interpolation hat max(0, 1 - |u|), from -inf."""
    u = np.clip(u, -1.0, 1.0)
    return np.where(u < 0, 0.5 * (u + 1) ** 2, 1 - 0.5 * (1 - u) ** 2)


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
        raise InvalidArgumentError(f"unknown density class {density!r}; use one of {names}")
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
