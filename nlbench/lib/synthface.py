"""Procedural, deterministic renderer of small facial-expression (FER-like) images.

What it is for: a license-free, offline stand-in for FER datasets (FER2013, RAF-DB) on which
noisy-label methods can be benchmarked. The images are easy enough for a small CNN to learn but
hard enough that clean-label accuracy stays clearly below 100 %, so label noise has room to hurt.

Parameterisation. Every face is drawn from a small parameter vector with three parts:

* expression (10 numbers): mouth curvature (+ smile / - frown), mouth opening, mouth width,
  visible teeth, brow raise, brow tilt (+ inner ends down = anger, - inner ends up = sadness/fear),
  eye openness, nose-wrinkle strength (disgust), mouth height and lip-corner asymmetry.
  Each class has a prototype vector ``_PROTOTYPES[c]``; a sample is
  ``intensity * blend(prototype) + noise``. Normal samples have intensity in [0.5, 1]. A share
  ``ambiguous_share`` of samples are either weak (intensity 0.1-0.35, so e.g. weak sadness looks
  neutral) or blended 35-50 % towards a confusable partner class (fear<->surprise,
  anger<->disgust, sadness->fear, happiness->surprise, neutral->sadness), so some clean labels are
  genuinely uncertain -- the intrinsic difficulty of the benchmark.
* identity (always on): eye spacing/size, brow/mouth/nose placement, face aspect, hair, clothes.
* nuisance (scaled by ``nuisance``): head translation, scale, roll, crude yaw (features shifted
  and foreshortened horizontally), skin tone, directional lighting, textured background, glasses or
  sunglasses, a hand-like occluder, box blur and gaussian sensor noise.

Rendering uses signed-distance fields evaluated on the pixel grid, vectorised over a chunk of the
batch, with coverage ``clip(0.5 - d / pixel_width, 0, 1)`` as cheap anti-aliasing so features
remain visible at 24-48 px (cues are 1-3 px at 32 px). All randomness for sample ``i`` comes from
``np.random.default_rng([seed, i])``, so an image depends only on (seed, i, label_i, size, options):
rendering a prefix of the labels gives the same first images.

Difficulty knobs: ``ambiguous_share`` (label ambiguity; 0.15 by default) and ``nuisance`` (0 gives
centred, frontal, clean, unoccluded faces on grey; 1 is this function's default; >1 is allowed and
harsher; the ``synthfer`` dataset uses 0.25). Faces are cropped tightly (:data:`FACE_SCALE`), like
FER2013 and aligned RAF-DB crops. How hard the result is for a randomly initialised ResNet-18 is
measured by ``benchmarks/synthfer_testbed.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CLASS_NAMES: tuple[str, ...] = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear")

# Default class frequencies: roughly RAF-DB/FER2013-like (happiness dominant, disgust/fear rare).
_DEFAULT_WEIGHTS = np.array([0.20, 0.30, 0.12, 0.15, 0.10, 0.06, 0.07])

# Expression parameters (face units: the face oval is about 1.2 wide and 1.6 tall).
_EXPR = ("curv", "open", "width", "teeth", "raise", "tilt", "eye", "wrinkle", "mouth_y", "asym")
_PROTOTYPES = np.array([
    # curv   open   width  teeth  raise  tilt   eye    wrinkle mouth_y asym
    [0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00],    # neutral
    [0.13, 0.04, 0.22, 0.70, 0.01, 0.00, -0.25, 0.00, 0.00, 0.00],   # happiness
    [0.00, 0.15, -0.30, 0.00, 0.11, 0.00, 0.55, 0.00, 0.02, 0.00],   # surprise
    [-0.11, 0.00, -0.05, 0.00, 0.02, -0.11, -0.20, 0.00, 0.02, 0.00],  # sadness
    [-0.04, 0.02, -0.08, 0.30, -0.06, 0.12, -0.35, 0.00, 0.00, 0.00],  # anger
    [-0.05, 0.02, 0.00, 0.25, -0.04, 0.05, -0.35, 1.00, -0.05, 0.06],  # disgust
    [-0.03, 0.08, 0.22, 0.40, 0.07, -0.07, 0.50, 0.00, 0.02, 0.00],   # fear
], dtype=np.float64)
# Per-parameter noise so that classes overlap a little even at full intensity.
_EXPR_SIGMA = np.array([0.025, 0.015, 0.06, 0.10, 0.025, 0.025, 0.12, 0.10, 0.015, 0.015])
# Confusable partner used for blended ambiguous samples (index into CLASS_NAMES).
_PARTNER = np.array([3, 2, 6, 6, 5, 4, 2])

# Head size relative to the image (1 = the face oval's height spans 80% of the frame): a tight
# crop like FER2013's and aligned RAF-DB's, so the expression cues cover several pixels even at
# 48 px. With a loose crop (0.86) a randomly initialised ResNet-18 on 1,000 clean faces at
# nuisance 0.25 reached 66% test accuracy after 8 epochs; at 1.15, 82%.
FACE_SCALE = 1.15

_N_UNIFORM = 48   # uniforms drawn per sample, in a fixed order
_N_NORMAL = 32    # standard normals drawn per sample
_CHUNK_PIXELS = 150_000  # pixels per rendered chunk: keeps temporaries cache-sized (~3x faster)


def sample_labels(n: int, seed: int, class_weights: Sequence[float] | None = None) -> np.ndarray:
    """Draw n class indices (int64) with FER-like imbalance unless class_weights is given."""
    w = _DEFAULT_WEIGHTS if class_weights is None else np.asarray(class_weights, dtype=np.float64)
    if w.shape != (len(CLASS_NAMES),) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"class_weights must be {len(CLASS_NAMES)} non-negative numbers, not all zero")
    rng = np.random.default_rng(seed)
    return rng.choice(len(CLASS_NAMES), size=int(n), p=w / w.sum()).astype(np.int64)


def _cover(d: np.ndarray, px: np.ndarray) -> np.ndarray:
    """Turn a signed distance (negative inside) into anti-aliased pixel coverage in [0, 1]."""
    c = 0.5 - d / px
    return np.clip(c, 0.0, 1.0, out=c)


def _sd_ellipse(u: np.ndarray, v: np.ndarray, cx, cy, a, b) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipse (first-order, good near the edge)."""
    du, dv = (u - cx) / a, (v - cy) / b
    k = np.sqrt(du * du + dv * dv) + 1e-6
    grad = np.sqrt((du / a) ** 2 + (dv / b) ** 2) / k + 1e-6
    return (k - 1.0) / grad


def _sd_segment(u: np.ndarray, v: np.ndarray, ax, ay, bx, by, r) -> np.ndarray:
    """Signed distance to a capsule (a thick line segment from a to b with radius r)."""
    pu, pv, eu, ev = u - ax, v - ay, bx - ax, by - ay
    t = np.clip((pu * eu + pv * ev) / (eu * eu + ev * ev + 1e-9), 0.0, 1.0)
    return np.sqrt((pu - t * eu) ** 2 + (pv - t * ev) ** 2) - r


def _paint(canvas: np.ndarray, alpha: np.ndarray, color: np.ndarray) -> None:
    """Alpha-composite a per-sample colour (n, 3) onto canvas (n, 3, S, S) in place."""
    # In-place form of canvas + alpha * (color - canvas): avoids three full-size temporaries.
    c = np.asarray(color, np.float32)[:, :, None, None]
    canvas -= c
    canvas *= (1.0 - alpha)[:, None]
    canvas += c


def _col(x: np.ndarray) -> np.ndarray:
    """Reshape a per-sample vector to (n, 1, 1) for broadcasting against pixel grids."""
    return np.asarray(x, dtype=np.float32).reshape(-1, 1, 1)


def _expression(labels: np.ndarray, uni: np.ndarray, nrm: np.ndarray, ambiguous_share: float) -> np.ndarray:
    """Expression parameters (n, 10): prototype scaled by intensity, maybe blended, plus noise."""
    proto = _PROTOTYPES[labels]
    intensity = 0.5 + 0.5 * uni[:, 0]
    ambiguous = uni[:, 1] < ambiguous_share
    weak = ambiguous & (uni[:, 2] < 0.5)
    blended = ambiguous & ~weak
    intensity = np.where(weak, 0.10 + 0.25 * uni[:, 3], intensity)
    w = np.where(blended, 0.35 + 0.15 * uni[:, 4], 0.0)[:, None]
    proto = (1.0 - w) * proto + w * _PROTOTYPES[_PARTNER[labels]]
    expr = intensity[:, None] * proto + _EXPR_SIGMA * nrm[:, :10]
    expr[:, 9] *= np.where(uni[:, 5] < 0.5, -1.0, 1.0)  # which lip corner is raised
    expr[:, 7] = np.clip(expr[:, 7], 0.0, 1.0)
    expr[:, 3] = np.clip(expr[:, 3], 0.0, 1.0)
    expr[:, 1] = np.maximum(expr[:, 1], 0.0)
    return expr


def _blur(img: np.ndarray, passes: int) -> np.ndarray:
    """Binomial blur: `passes` separable [1, 2, 1] / 4 filters over the last two axes (edge-padded)."""
    for _ in range(passes):
        p = np.pad(img, ((0, 0), (0, 0), (1, 1), (0, 0)), mode="edge")
        img = 0.25 * (p[:, :, :-2] + p[:, :, 2:]) + 0.5 * p[:, :, 1:-1]
        p = np.pad(img, ((0, 0), (0, 0), (0, 0), (1, 1)), mode="edge")
        img = 0.25 * (p[..., :-2] + p[..., 2:]) + 0.5 * p[..., 1:-1]
    return img


def _render_chunk(labels: np.ndarray, uni: np.ndarray, nrm: np.ndarray, sensor: np.ndarray,
                  size: int, ambiguous_share: float, nuisance: float) -> np.ndarray:
    """Render one chunk of faces from pre-drawn per-sample random numbers; returns float (n,3,S,S)."""
    n, nu = len(labels), float(nuisance)
    e = _expression(labels, uni, nrm, ambiguous_share)
    curv, mopen, mwidth, teeth, braise, btilt, eye, wrinkle, mouth_y, asym = (_col(e[:, k]) for k in range(10))
    # Short accessors for the k-th uniform / normal column keep the formulas below readable.
    U = lambda k: uni[:, k].astype(np.float32)
    Z = lambda k: nrm[:, k].astype(np.float32)

    # Pixel grid in [-1, 1] (y down), then the head's similarity transform (nuisance).
    g = ((np.arange(size, dtype=np.float32) + 0.5) / size) * 2.0 - 1.0
    x, y = g[None, None, :], g[None, :, None]
    scale = _col(FACE_SCALE * np.exp(0.10 * nu * Z(10)))
    tx, ty = _col(0.10 * nu * Z(11)), _col(0.12 - 0.16 * FACE_SCALE + 0.08 * nu * Z(12))
    roll = _col(np.deg2rad(12.0) * nu * Z(13))
    c, s = np.cos(roll), np.sin(roll)
    u = (c * (x - tx) + s * (y - ty)) / scale
    v = (-s * (x - tx) + c * (y - ty)) / scale
    px = 2.0 / size / scale  # width of one pixel in face units

    # Crude yaw: features slide sideways and the far side is foreshortened.
    yaw = _col(0.35 * nu * (2.0 * U(6) - 1.0))
    du = u - 0.22 * yaw
    uf = du / (1.0 - 0.35 * yaw * np.sign(du))

    # Colours: skin tone, hair, clothes, background.
    light = 0.58 + nu * 0.32 * (2.0 * U(7) - 1.0)
    skin = np.stack([light * 1.00 + 0.12, light * 0.78 + 0.05, light * 0.62 + 0.02], 1)
    skin = np.clip(skin + 0.03 * nrm[:, 14:17], 0.05, 1.0).astype(np.float32)
    hair = (np.stack([0.30, 0.20, 0.12]) * (0.15 + 1.6 * U(8)[:, None] ** 2)).astype(np.float32)
    cloth = uni[:, 9:12].astype(np.float32)
    lips = (skin * np.array([0.85, 0.55, 0.55], np.float32)).astype(np.float32)
    bg = (0.5 + nu * (uni[:, 12:15] - 0.5) * 0.8).astype(np.float32)

    # Background: flat colour modulated by a few low-frequency sinusoids.
    tex = np.zeros((n, size, size), np.float32)
    for k in range(3):
        ang, freq, ph = 6.283 * U(15 + k), 1.0 + 2.5 * U(18 + k), 6.283 * U(21 + k)
        proj = np.cos(_col(ang)) * x + np.sin(_col(ang)) * y
        tex += 0.09 * nu * np.sin(_col(freq * 3.1416) * proj + _col(ph))
    canvas = bg[:, :, None, None] * (1.0 + tex[:, None])

    # Identity (not a nuisance): layout jitter of the facial features.
    fa = _col(0.60 + 0.03 * Z(17))                     # face half-width
    ex, ey = _col(0.25 + 0.015 * Z(18)), _col(-0.10 + 0.015 * Z(19))
    ew = _col(0.115 + 0.01 * Z(20))
    by0 = ey - _col(0.15 + 0.015 * Z(21))
    my = _col(0.40 + 0.02 * Z(22)) + mouth_y
    long_hair = _col(U(24) < 0.4)

    # Body, neck, back hair, face, fringe.
    _paint(canvas, _cover(_sd_ellipse(u, v, 0.0, 1.75, 1.05, 0.75), px), cloth)
    _paint(canvas, _cover(np.maximum(np.abs(u) - 0.30, _sd_ellipse(u, v, 0.0, 0.9, 0.4, 0.8)), px), skin * 0.85)
    back = np.maximum(_sd_ellipse(u, v, 0.0, 0.0, fa + 0.14, 0.95), v - 0.30)
    _paint(canvas, long_hair * _cover(back, px), hair)
    _paint(canvas, _cover(_sd_ellipse(u, v, 0.0, 0.0, fa, 0.80), px), skin)
    hairline = -0.50 + _col(0.08 * Z(23)) + 0.25 * (u / fa) ** 2
    fringe = np.maximum(_sd_ellipse(u, v, 0.0, -0.02, fa + 0.05, 0.86), v - hairline)
    _paint(canvas, _cover(fringe, px), hair)

    # Eyes: white ellipse whose height carries openness, iris clipped to it, dark outline.
    # Paired features are drawn once in |u| (mirror symmetry) since they never cross the midline.
    au = np.abs(uf)
    eh = 0.055 * np.maximum(1.0 + eye, 0.15)
    d_eye = _sd_ellipse(au, v, ex, ey, ew, eh)
    _paint(canvas, _cover(d_eye, px), np.full((n, 3), 0.93, np.float32))
    d_iris = np.maximum(_sd_ellipse(au, v, ex, ey, 0.055, 0.055), d_eye)
    _paint(canvas, _cover(d_iris, px), np.full((n, 3), 0.08, np.float32))
    _paint(canvas, _cover(np.abs(d_eye) - 0.012, px) * 0.8, skin * 0.35)
    # Brows: inner end moved by tilt (anger down, sadness/fear up), both ends by raise.
    inner_v, outer_v = by0 - braise + btilt, by0 - braise - 0.3 * btilt
    _paint(canvas, _cover(_sd_segment(au, v, 0.07, inner_v, ex + 0.12, outer_v + 0.02, 0.032), px), hair * 0.7)

    # Nose: bridge line and nostrils; disgust adds wrinkles across and beside the bridge.
    nu_f = uf - 0.06 * yaw
    _paint(canvas, _cover(_sd_segment(nu_f, v, 0.0, -0.02, 0.02, 0.18, 0.016), px) * 0.6, skin * 0.7)
    an = np.abs(nu_f)
    _paint(canvas, _cover(_sd_ellipse(an, v, 0.055, 0.21, 0.035, 0.022), px), skin * 0.45)
    d_wr = np.minimum(_sd_segment(an, v, 0.0, -0.06, 0.07, -0.06, 0.018),
                      _sd_segment(an, v, 0.0, 0.0, 0.07, 0.0, 0.018))
    d_wr = np.minimum(d_wr, _sd_segment(an, v, 0.10, 0.08, 0.20, 0.27, 0.018))
    _paint(canvas, _cover(d_wr, px) * wrinkle, skin * 0.4)

    # Mouth: centre line curved by curv (corners up = smile) and tilted by asym; the opening
    # h(u) is elliptic in u; teeth fill the upper part of the opening.
    mw = _col(0.20 + 0.015 * Z(24)) * (1.0 + mwidth)
    t = np.clip(uf / mw, -1.0, 1.0)
    vc = my - curv * (t * t - 1.0 / 3.0) + asym * t
    slope = np.sqrt(1.0 + ((-2.0 * curv * t + asym) / mw) ** 2)
    h = mopen * np.sqrt(1.0 - t * t)
    dv = v - vc
    ends = au - mw
    _paint(canvas, _cover(np.maximum((np.abs(dv) - h - 0.028) / slope, ends), px), lips)
    _paint(canvas, _cover(np.maximum((np.abs(dv) - h) / slope, ends), px), np.full((n, 3), 0.12, np.float32))
    d_teeth = np.maximum(np.maximum((np.abs(dv) - h) / slope, ends), dv - (-h + 2.0 * h * teeth))
    _paint(canvas, _cover(d_teeth, px) * np.minimum(teeth * 3.0, 1.0), np.full((n, 3), 0.92, np.float32))

    # Occluders: glasses (frames or sunglasses) and a hand-like skin blob over the lower face/side.
    glasses = _col(U(25) < 0.14 * nu)
    sun = _col(U(26) < 0.5)
    q = np.maximum(np.abs(au - ex) - 0.15, np.abs(v - ey) - 0.09)
    q_frame = np.minimum(np.abs(q) - 0.018, _sd_segment(au, v, 0.0, ey - 0.04, ex - 0.15, ey - 0.04, 0.016))
    _paint(canvas, glasses * np.maximum(sun * 0.9 * _cover(q, px), _cover(q_frame, px)),
           np.full((n, 3), 0.05, np.float32))
    hand = _col(U(27) < 0.10 * nu)
    hu, hv = _col(0.9 * (U(28) - 0.5)), _col(0.25 + 0.45 * U(29))
    ha = _col(0.5 * (U(30) - 0.5))
    hx, hy = np.cos(ha) * (u - hu) + np.sin(ha) * (v - hv), -np.sin(ha) * (u - hu) + np.cos(ha) * (v - hv)
    d_hand = _sd_ellipse(hx, hy, 0.0, 0.0, _col(0.22 + 0.12 * U(31)), _col(0.15 + 0.10 * U(32)))
    _paint(canvas, hand * _cover(d_hand - 0.02, px), skin * 0.6)
    _paint(canvas, hand * _cover(d_hand, px), np.clip(skin * 1.08, 0, 1))

    # Global photometric nuisance: directional light ramp and exposure.
    la = _col(6.283 * U(33))
    ramp = 1.0 + _col(0.45 * nu * U(34)) * (np.cos(la) * x + np.sin(la) * y)
    canvas *= (ramp * _col(np.exp(0.15 * nu * Z(25))))[:, None]

    # k binomial passes give sigma = sqrt(k / 2) px; sigma ~ size / 64 blurs away the same facial
    # detail at every size (at least one pass so small images are blurred at all).
    blurred = U(35) < 0.18 * nu
    if blurred.any():
        canvas[blurred] = _blur(canvas[blurred], max(1, round(2.0 * (size / 64.0) ** 2)))
    canvas += _col(0.045 * nu * U(36))[:, None] * sensor
    return canvas


def render_faces(labels: np.ndarray, size: int, seed: int, *, ambiguous_share: float = 0.15,
                 nuisance: float = 1.0) -> np.ndarray:
    """Render one face per label; returns uint8 array (N, 3, size, size). Deterministic in (labels, size, seed, options).

    ``seed`` must be a non-negative integer; image i depends only on (seed, i, labels[i], size, options).
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
        raise ValueError("labels must be class indices in [0, 7)")
    if not 8 <= int(size) <= 512:
        raise ValueError("size must be between 8 and 512 pixels")
    if not 0.0 <= ambiguous_share <= 1.0 or nuisance < 0.0:
        raise ValueError("ambiguous_share must be in [0, 1] and nuisance >= 0")
    size, n = int(size), len(labels)
    out = np.empty((n, 3, size, size), dtype=np.uint8)
    chunk = max(4, _CHUNK_PIXELS // (size * size))
    for start in range(0, n, chunk):
        idx = range(start, min(n, start + chunk))
        uni = np.empty((len(idx), _N_UNIFORM))
        nrm = np.empty((len(idx), _N_NORMAL))
        sensor = np.empty((len(idx), 3, size, size), np.float32)
        for j, i in enumerate(idx):
            # Per-sample stream keyed by (seed, i): image i does not depend on the batch length.
            rng = np.random.default_rng([int(seed), i])
            uni[j] = rng.random(_N_UNIFORM)
            nrm[j] = rng.standard_normal(_N_NORMAL)
            sensor[j] = rng.standard_normal((3, size, size), dtype=np.float32)
        img = _render_chunk(labels[start:start + len(idx)], uni, nrm, sensor, size,
                            float(ambiguous_share), float(nuisance))
        out[start:start + len(idx)] = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out


#: Version of :func:`face_landmarks`' point definition (it enters the id of runs that train on landmarks).
LANDMARKS_VERSION = "1"


def _warp(uf: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """Feature-plane horizontal coordinate -> face coordinate: the renderer's crude yaw, inverted."""
    return 0.22 * yaw + uf * (1.0 - 0.35 * yaw * np.sign(uf))


def face_landmarks(labels: np.ndarray, seed: int, *, ambiguous_share: float = 0.15,
                   nuisance: float = 1.0) -> np.ndarray:
    """The 19 AFLW-style points of the faces :func:`render_faces` draws, (N, 19, 2) float32.

    Points are (x, y) as fractions of the image side, edge convention (0: the left or top edge of
    the first pixel, 1: the right or bottom edge of the last), computed analytically from each
    sample's own draws (the same streams as its image), so they hold at every rendered size. Order
    (image-left first): brows 0-2 outer, middle, inner and 5-3; eyes 6-8 outer corner, centre,
    inner corner and 11-9; nose 12-14 (left nostril, tip, right nostril); mouth 15-17 (left
    corner, centre, right corner); chin 18.
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    n, nu = len(labels), float(nuisance)
    uni, nrm = np.empty((n, _N_UNIFORM)), np.empty((n, _N_NORMAL))
    for i in range(n):  # the renderer's per-sample streams, without the sensor noise drawn after them
        rng = np.random.default_rng([int(seed), i])
        uni[i] = rng.random(_N_UNIFORM)
        nrm[i] = rng.standard_normal(_N_NORMAL)
    e = _expression(labels, uni, nrm, ambiguous_share)
    curv, braise, btilt, mouth_y, asym, mwidth = e[:, 0], e[:, 4], e[:, 5], e[:, 8], e[:, 9], e[:, 2]
    scale = FACE_SCALE * np.exp(0.10 * nu * nrm[:, 10])
    tx, ty = 0.10 * nu * nrm[:, 11], 0.12 - 0.16 * FACE_SCALE + 0.08 * nu * nrm[:, 12]
    roll = np.deg2rad(12.0) * nu * nrm[:, 13]
    yaw = 0.35 * nu * (2.0 * uni[:, 6] - 1.0)
    ex, ey, ew = 0.25 + 0.015 * nrm[:, 18], -0.10 + 0.015 * nrm[:, 19], 0.115 + 0.01 * nrm[:, 20]
    by0 = ey - (0.15 + 0.015 * nrm[:, 21])
    my = 0.40 + 0.02 * nrm[:, 22] + mouth_y
    mw = (0.20 + 0.015 * nrm[:, 24]) * (1.0 + mwidth)
    inner_v, outer_v = by0 - braise + btilt, by0 - braise - 0.3 * btilt
    zero = np.zeros(n)
    # (feature-plane u, v) of each point; "nose" points sit in the nose plane (shifted by 0.06 yaw).
    brow_outer, brow_inner = (ex + 0.12, outer_v + 0.02), (np.full(n, 0.07), inner_v)
    brow_mid = ((brow_outer[0] + brow_inner[0]) / 2, (brow_outer[1] + brow_inner[1]) / 2)
    feature = [(-brow_outer[0], brow_outer[1]), (-brow_mid[0], brow_mid[1]), (-brow_inner[0], brow_inner[1]),
               brow_inner, brow_mid, brow_outer,
               (-(ex + ew), ey), (-ex, ey), (-(ex - ew), ey), (ex - ew, ey), (ex, ey), (ex + ew, ey)]
    nose = [(np.full(n, -0.055), np.full(n, 0.21)), (zero, np.full(n, 0.18)), (np.full(n, 0.055), np.full(n, 0.21))]
    mouth = [(-mw, my - 2 / 3 * curv - asym), (zero, my + curv / 3), (mw, my - 2 / 3 * curv + asym)]
    u = np.stack([_warp(a, yaw) for a, _ in feature] + [_warp(a + 0.06 * yaw, yaw) for a, _ in nose]
                 + [_warp(a, yaw) for a, _ in mouth] + [zero], axis=1)
    v = np.stack([b for _, b in feature + nose + mouth] + [np.full(n, 0.80)], axis=1)
    # Face coordinates -> image coordinates in [-1, 1]: the inverse of the renderer's similarity.
    c, s = np.cos(roll)[:, None], np.sin(roll)[:, None]
    x = tx[:, None] + scale[:, None] * (c * u - s * v)
    y = ty[:, None] + scale[:, None] * (s * u + c * v)
    return (np.stack([x, y], axis=-1) + 1.0).astype(np.float32) / 2.0
