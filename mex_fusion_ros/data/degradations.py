"""Synthetic degradations of infrared/visible pairs, with labels for the degradation gate.

Pure numpy + OpenCV (no torch, no ROS). Images follow the project conventions: infrared
``float32 (H, W)`` in [0, 1]; visible ``float32 (H, W, 3)`` RGB in [0, 1] or ``(H, W)`` if grey.
Every degradation function returns ``(degraded image, DegradationLabel)``; outputs are float32 in [0, 1].
Randomness comes only from the ``rng`` argument (an ``int`` seed or a ``np.random.Generator``), so
the same seed gives the same image bit for bit.

The degradation protocol follows TG-ECNet (ICML 2025, DeMMI-RF benchmark): visible Gaussian noise
sigma = 15 / 25 / 50 on the 0-255 scale, haze by the atmospheric scattering model with the
atmospheric light set to the mean of the clean image (its Appendix A.1), defocus blur, infrared
stripe noise, their mixture and the degradation-free case; plus the paper's multi-degradation
pairs (its Tables 12-15). Low light and over-exposure are added for the drone cameras. The paper
gives no haze density, blur radius or stripe strength; our values are in ``docs/degradations.md``.

Severity of each type is normalised to [0, 1] (see ``SEVERITY_SCALES``) so one label vector
supervises the network's degradation gate.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import cv2
import numpy as np

#: Degradation types, in the order of ``DegradationLabel.vector()`` (and of the gate's outputs).
DEGRADATION_TYPES: tuple[str, ...] = (
    "vi_noise",
    "vi_haze",
    "vi_defocus",
    "vi_lowlight",
    "vi_overexposure",
    "ir_stripe",
    "ir_noise",
)

#: Order in which steps of a preset are applied: scene (haze) -> optics (defocus) -> exposure
#: (low light / over-exposure) -> sensor read-out noise. Infrared: fixed-pattern stripes, then
#: temporal noise. Physical order matters: noise added before a blur would be smoothed away.
APPLY_ORDER: tuple[str, ...] = (
    "vi_haze",
    "vi_defocus",
    "vi_lowlight",
    "vi_overexposure",
    "vi_noise",
    "ir_stripe",
    "ir_noise",
)

#: Parameter value that maps to severity 1.0 for each type (severity = value / scale, clipped).
#: ``vi_lowlight`` is special: severity = log(1/gain) / log(1/LOWLIGHT_MIN_GAIN).
SEVERITY_SCALES: dict[str, float] = {
    "vi_noise": 50.0,  # sigma on the 0-255 scale; the paper's strongest level is 50
    "vi_haze": 3.0,  # scattering coefficient beta for a depth proxy in [DEPTH_NEAR, 1]
    "vi_defocus": 8.0,  # disk radius in pixels
    "vi_overexposure": 2.0,  # gain - 1 (gain 3 = about 1.6 stops over; most of a scene saturates)
    "ir_stripe": 0.15,  # standard deviation of the per-column offsets on [0, 1]
    "ir_noise": 50.0,  # sigma on the 0-255 scale
}
LOWLIGHT_MIN_GAIN = 0.05

#: The nearest point of the haze depth proxy: even the foreground gets a little haze.
DEPTH_NEAR = 0.2

_REQUIRED_PARAMS: dict[str, tuple[str, ...]] = {
    "vi_noise": ("sigma",),
    "vi_haze": ("beta",),
    "vi_defocus": ("radius",),
    "vi_lowlight": ("gain", "gamma"),
    "vi_overexposure": ("gain",),
    "ir_stripe": ("sigma",),
    "ir_noise": ("sigma",),
}
_OPTIONAL_PARAMS: dict[str, tuple[str, ...]] = {
    "vi_noise": ("mono",),
    "vi_haze": ("airlight", "depth_mix"),
    "vi_defocus": ("gaussian",),
    "vi_lowlight": ("full_well", "read_sigma"),
    "ir_stripe": ("gain_ratio",),
}

SeedLike = int | np.random.Generator | None


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DegradationLabel:
    """Which degradations an image pair carries and how strong each is (severity in [0, 1]).

    ``severities`` holds only the types present (severity > 0); absent types are clean.
    """

    severities: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        cleaned: dict[str, float] = {}
        for name, value in self.severities.items():
            if name not in DEGRADATION_TYPES:
                raise ValueError(f"unknown degradation type {name!r}; valid: {', '.join(DEGRADATION_TYPES)}")
            value = float(value)
            if not 0.0 <= value <= 1.0 or math.isnan(value):
                raise ValueError(f"severity of {name!r} must be in [0, 1], got {value}")
            if value > 0.0:
                cleaned[name] = value
        # Canonical order, so equal labels compare and print equal.
        object.__setattr__(self, "severities", {n: cleaned[n] for n in DEGRADATION_TYPES if n in cleaned})

    @classmethod
    def from_vector(cls, vector: np.ndarray | list[float]) -> DegradationLabel:
        """Inverse of ``vector()``: a length-T sequence of severities in ``DEGRADATION_TYPES`` order."""
        values = np.asarray(vector, dtype=np.float64).reshape(-1)
        if values.size != len(DEGRADATION_TYPES):
            raise ValueError(f"label vector needs {len(DEGRADATION_TYPES)} entries, got {values.size}")
        return cls(dict(zip(DEGRADATION_TYPES, values.tolist())))

    def __hash__(self) -> int:
        return hash(tuple(self.severities.items()))

    def severity(self, name: str) -> float:
        """Severity of one type (0.0 when absent)."""
        if name not in DEGRADATION_TYPES:
            raise ValueError(f"unknown degradation type {name!r}; valid: {', '.join(DEGRADATION_TYPES)}")
        return self.severities.get(name, 0.0)

    def vector(self) -> np.ndarray:
        """Severities as ``float32 (T,)`` in ``DEGRADATION_TYPES`` order (0 where absent)."""
        return np.array([self.severities.get(name, 0.0) for name in DEGRADATION_TYPES], dtype=np.float32)

    def present(self) -> tuple[str, ...]:
        """Names of the types present, in ``DEGRADATION_TYPES`` order (empty for a clean pair)."""
        return tuple(self.severities)

    def present_mask(self) -> np.ndarray:
        """``float32 (T,)``: 1 where the type is present, else 0."""
        return np.array([name in self.severities for name in DEGRADATION_TYPES], dtype=np.float32)

    @property
    def is_clean(self) -> bool:
        return not self.severities

    def merge(self, other: DegradationLabel) -> DegradationLabel:
        """Union of two labels; a type in both keeps the larger severity."""
        merged = dict(self.severities)
        for name, value in other.severities.items():
            merged[name] = max(merged.get(name, 0.0), value)
        return DegradationLabel(merged)

    def __str__(self) -> str:
        if self.is_clean:
            return "clean"
        return " ".join(f"{name}={value:.2f}" for name, value in self.severities.items())


def severity_from_params(kind: str, params: Mapping[str, float]) -> float:
    """Normalised severity in [0, 1] of one degradation step with these parameters."""
    if kind == "vi_lowlight":
        gain = float(params["gain"])
        return float(np.clip(math.log(1.0 / gain) / math.log(1.0 / LOWLIGHT_MIN_GAIN), 0.0, 1.0))
    if kind == "vi_overexposure":
        return float(np.clip((float(params["gain"]) - 1.0) / SEVERITY_SCALES[kind], 0.0, 1.0))
    key = _REQUIRED_PARAMS[kind][0]
    return float(np.clip(float(params[key]) / SEVERITY_SCALES[kind], 0.0, 1.0))


def _label(kind: str, params: Mapping[str, float]) -> DegradationLabel:
    return DegradationLabel({kind: severity_from_params(kind, params)})


# --------------------------------------------------------------------------------------------
# Input checks and helpers
# --------------------------------------------------------------------------------------------
def _as_generator(rng: SeedLike) -> np.random.Generator:
    return np.random.default_rng(rng)


def _check_image(image: np.ndarray, what: str, *, allow_colour: bool = True) -> np.ndarray:
    """Float32 view of ``image`` after checking it follows the image conventions."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{what} must be a numpy array, got {type(image).__name__}")
    colour_ok = allow_colour and image.ndim == 3 and image.shape[2] == 3
    if image.ndim != 2 and not colour_ok:
        expected = "(H, W) or (H, W, 3)" if allow_colour else "(H, W)"
        raise ValueError(f"{what} must have shape {expected}, got {image.shape}")
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(
            f"{what} must be a float image in [0, 1], got dtype {image.dtype} (divide by 255 first)"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{what} is empty (shape {image.shape})")
    return image.astype(np.float32, copy=False)


def _clip01(image: np.ndarray) -> np.ndarray:
    return np.clip(image, 0.0, 1.0, out=image)


def _luminance(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image
    # ITU-R BT.601 luma weights (RGB order).
    return image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Visible degradations
# --------------------------------------------------------------------------------------------
def add_gaussian_noise(
    image: np.ndarray, sigma: float, rng: SeedLike = None, *, modality: str = "visible", mono: float = 0.0
) -> tuple[np.ndarray, DegradationLabel]:
    """Additive white Gaussian noise of standard deviation ``sigma`` on the 0-255 scale.

    ``image``: ``(H, W)`` or ``(H, W, 3)`` float in [0, 1] (noise is independent per channel, as in
    the denoising benchmarks TG-ECNet follows). ``modality`` ("visible" or "infrared") picks the
    label type ``vi_noise`` or ``ir_noise``. ``mono`` in [0, 1]: share of the noise variance common
    to the three channels (1 = grey noise, as from a luminance-only noise model or a demosaiced
    sensor); the per-pixel standard deviation stays ``sigma``.
    """
    if not 0.0 <= mono <= 1.0:
        raise ValueError(f"noise mono share must be in [0, 1], got {mono}")
    kind = {"visible": "vi_noise", "infrared": "ir_noise"}.get(modality)
    if kind is None:
        raise ValueError(f"modality must be 'visible' or 'infrared', got {modality!r}")
    if sigma < 0:
        raise ValueError(f"noise sigma must be >= 0, got {sigma}")
    image = _check_image(image, modality, allow_colour=modality == "visible")
    generator = _as_generator(rng)
    noise = generator.standard_normal(image.shape, dtype=np.float32)
    if mono > 0.0 and image.ndim == 3:
        common = generator.standard_normal(image.shape[:2], dtype=np.float32)[:, :, None]
        noise = np.float32(math.sqrt(1.0 - mono)) * noise + np.float32(math.sqrt(mono)) * common
    noise *= np.float32(sigma / 255.0)
    return _clip01(image + noise), _label(kind, {"sigma": sigma})


def depth_proxy(image: np.ndarray) -> np.ndarray:
    """A pseudo depth map ``float32 (H, W)`` in [DEPTH_NEAR, 1] (1 = far) for synthetic haze.

    Single images have no depth, so we use two cues that hold for road and most outdoor scenes:
    rows nearer the top are farther away (ground plane seen from a camera above it), and bright,
    smooth regions are mostly sky or distant background. ``0.7 * (1 - row / (H - 1))
    + 0.3 * blurred luminance`` is blurred at a quarter of the image size (cheap and free of
    texture, as real depth is), then rescaled to [DEPTH_NEAR, 1].
    """
    image = _check_image(image, "visible")
    height, width = image.shape[:2]
    luminance = _luminance(image)
    small_w, small_h = max(1, width // 4), max(1, height // 4)
    small = cv2.resize(luminance, (small_w, small_h), interpolation=cv2.INTER_AREA)
    # Blur scale ~ 1/16 of the image: removes object texture but keeps the sky/ground split.
    sigma = max(1.0, max(small_w, small_h) / 16.0)
    small = cv2.GaussianBlur(small, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)
    rows = np.linspace(1.0, 0.0, small_h, dtype=np.float32)[:, None]
    proxy = 0.7 * rows + 0.3 * small
    low, high = float(proxy.min()), float(proxy.max())
    proxy = (proxy - low) / (high - low) if high - low > 1e-6 else np.ones_like(proxy)
    proxy = cv2.resize(proxy.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return (DEPTH_NEAR + (1.0 - DEPTH_NEAR) * np.clip(proxy, 0.0, 1.0)).astype(np.float32)


def add_haze(
    image: np.ndarray, beta: float, *, depth: np.ndarray | None = None, airlight: float | None = None,
    depth_mix: float = 1.0,
) -> tuple[np.ndarray, DegradationLabel]:
    """Haze by the atmospheric scattering model ``I = J * t + A * (1 - t)``, ``t = exp(-beta * d)``.

    ``image`` (J): ``(H, W)`` or ``(H, W, 3)`` float in [0, 1]. The atmospheric light A is the mean
    of the clean image per channel (TG-ECNet Appendix A.1: it keeps the hazy image from turning
    white and gives the slight colour cast of real haze). ``depth`` d: ``(H, W)`` in [0, 1]
    (default ``depth_proxy(image)``). Larger ``beta`` = denser haze = lower contrast.
    ``airlight``: a grey atmospheric light instead of the image mean (fog lit by a bright sky is
    near white); ``depth_mix`` in [0, 1] blends the depth with a constant 1 (0 = uniform haze, the
    usual model of other synthesis code).
    """
    if not 0.0 <= depth_mix <= 1.0:
        raise ValueError(f"haze depth_mix must be in [0, 1], got {depth_mix}")
    if beta < 0:
        raise ValueError(f"haze beta must be >= 0, got {beta}")
    image = _check_image(image, "visible")
    if depth is None:
        depth = depth_proxy(image)
    elif depth.shape != image.shape[:2]:
        raise ValueError(f"depth map shape {depth.shape} does not match image {image.shape[:2]}")
    depth = depth_mix * depth.astype(np.float32) + np.float32(1.0 - depth_mix)
    transmission = np.exp(-float(beta) * depth)
    if airlight is not None:
        airlight = np.full(image.shape[2] if image.ndim == 3 else (), airlight, dtype=np.float32)
    else:
        airlight = image.reshape(-1, image.shape[2]).mean(axis=0) if image.ndim == 3 else np.float32(image.mean())
    if image.ndim == 3:
        transmission = transmission[:, :, None]
    hazy = image * transmission + airlight.astype(np.float32) * (1.0 - transmission)
    return _clip01(hazy.astype(np.float32)), _label("vi_haze", {"beta": beta})


def disk_kernel(radius: float) -> np.ndarray:
    """Normalised anti-aliased disk (pill-box) kernel ``float32 (2R+1, 2R+1)``, R = ceil(radius).

    The edge pixels get their covered fraction, so the blur strength varies smoothly with a
    non-integer radius (needed for randomised severities).
    """
    if radius < 0:
        raise ValueError(f"defocus radius must be >= 0, got {radius}")
    half = max(1, math.ceil(radius + 0.5))
    ys, xs = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    weights = np.clip(radius + 0.5 - np.hypot(xs, ys), 0.0, 1.0)
    weights[half, half] = max(weights[half, half], 1.0)
    return (weights / weights.sum()).astype(np.float32)


def defocus_blur(image: np.ndarray, radius: float, *, gaussian: bool = False) -> tuple[np.ndarray, DegradationLabel]:
    """Defocus blur: convolution with a disk of ``radius`` pixels (the geometric-optics circle of
    confusion). ``image``: ``(H, W)`` or ``(H, W, 3)`` float in [0, 1]; borders are reflected.
    ``gaussian``: a Gaussian of standard deviation ``radius / 2`` instead (the same spread of the
    light; real lenses lie between the two, and other synthesis code often uses the Gaussian)."""
    image = _check_image(image, "visible")
    if gaussian:
        sigma = max(radius, 1e-3) / 2.0
        blurred = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)
        return _clip01(blurred), _label("vi_defocus", {"radius": radius})
    blurred = cv2.filter2D(image, -1, disk_kernel(radius), borderType=cv2.BORDER_REFLECT)
    return _clip01(blurred), _label("vi_defocus", {"radius": radius})


def low_light(
    image: np.ndarray,
    gain: float,
    gamma: float,
    rng: SeedLike = None,
    *,
    full_well: float = 500.0,
    read_sigma: float = 2.0,
) -> tuple[np.ndarray, DegradationLabel]:
    """Under-exposure: ``J ** gamma * gain`` then signal-dependent Poisson-Gaussian sensor noise.

    ``gamma`` > 1 darkens the mid-tones more than the highlights (a dim scene through the camera's
    tone curve); ``gain`` < 1 is the exposure deficit. The noise is the heteroscedastic Gaussian
    approximation of Poisson-Gaussian noise (Foi et al., 2008): variance ``x / full_well +
    (read_sigma / 255)^2`` for a dark signal x in [0, 1], ``full_well`` photo-electrons at full
    scale. ``image``: ``(H, W)`` or ``(H, W, 3)`` float in [0, 1].
    """
    if not 0.0 < gain <= 1.0:
        raise ValueError(f"low-light gain must be in (0, 1], got {gain}")
    if gamma <= 0 or full_well <= 0 or read_sigma < 0:
        raise ValueError(
            f"invalid low-light parameters gamma={gamma}, full_well={full_well}, read_sigma={read_sigma}"
        )
    image = _check_image(image, "visible")
    dark = np.power(image, np.float32(gamma)) * np.float32(gain)
    std = np.sqrt(dark / np.float32(full_well) + np.float32((read_sigma / 255.0) ** 2))
    noisy = dark + std * _as_generator(rng).standard_normal(image.shape, dtype=np.float32)
    return _clip01(noisy.astype(np.float32)), _label("vi_lowlight", {"gain": gain, "gamma": gamma})


def over_exposure(image: np.ndarray, gain: float) -> tuple[np.ndarray, DegradationLabel]:
    """Over-exposure: ``J * gain`` clipped at 1 (highlights saturate and lose their texture).

    ``image``: ``(H, W)`` or ``(H, W, 3)`` float in [0, 1]; ``gain`` >= 1.
    """
    if gain < 1.0:
        raise ValueError(f"over-exposure gain must be >= 1, got {gain}")
    image = _check_image(image, "visible")
    return _clip01(image * np.float32(gain)), _label("vi_overexposure", {"gain": gain})


# --------------------------------------------------------------------------------------------
# Infrared degradations
# --------------------------------------------------------------------------------------------
def stripe_pattern(
    width: int, sigma: float, rng: SeedLike = None, *, gain_ratio: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Per-column ``(gains, offsets)``, each ``float32 (W,)``, of focal-plane-array stripe noise.

    Each detector column of an uncooled microbolometer has its own read-out amplifier, so the
    non-uniformity is a gain and an offset per column, constant along the column. Offsets have
    standard deviation ``sigma`` (on [0, 1]); gains are ``1 + N(0, gain_ratio * sigma)``.
    """
    if sigma < 0 or gain_ratio < 0:
        raise ValueError(f"stripe sigma and gain_ratio must be >= 0, got {sigma}, {gain_ratio}")
    generator = _as_generator(rng)
    offsets = generator.standard_normal(width, dtype=np.float32) * np.float32(sigma)
    gains = 1.0 + generator.standard_normal(width, dtype=np.float32) * np.float32(gain_ratio * sigma)
    return gains.astype(np.float32), offsets.astype(np.float32)


def add_stripe_noise(
    image: np.ndarray, sigma: float, rng: SeedLike = None, *, gain_ratio: float = 0.5
) -> tuple[np.ndarray, DegradationLabel]:
    """Column stripe noise ``I[:, c] = gain[c] * J[:, c] + offset[c]`` (see ``stripe_pattern``).

    ``image``: infrared ``(H, W)`` float in [0, 1]; ``sigma``: offset std on [0, 1].
    """
    image = _check_image(image, "infrared", allow_colour=False)
    gains, offsets = stripe_pattern(image.shape[1], sigma, rng, gain_ratio=gain_ratio)
    striped = image * gains[None, :] + offsets[None, :]
    return _clip01(striped.astype(np.float32)), _label("ir_stripe", {"sigma": sigma})


# --------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Degradation:
    """One degradation step: a type of ``DEGRADATION_TYPES`` and its parameters.

    Parameters per type: ``vi_noise``/``ir_noise``: sigma (0-255 scale); ``vi_haze``: beta;
    ``vi_defocus``: radius (px); ``vi_lowlight``: gain, gamma [, full_well, read_sigma];
    ``vi_overexposure``: gain; ``ir_stripe``: sigma (offset std on [0, 1]) [, gain_ratio].
    """

    kind: str
    params: Mapping[str, float]

    def __post_init__(self) -> None:
        if self.kind not in DEGRADATION_TYPES:
            raise ValueError(f"unknown degradation type {self.kind!r}; valid: {', '.join(DEGRADATION_TYPES)}")
        required = _REQUIRED_PARAMS[self.kind]
        allowed = set(required) | set(_OPTIONAL_PARAMS.get(self.kind, ()))
        missing = [key for key in required if key not in self.params]
        unknown = sorted(set(self.params) - allowed)
        if missing or unknown:
            raise ValueError(
                f"degradation {self.kind!r}: missing parameters {missing}, unknown {unknown}; "
                f"expects {sorted(allowed)}"
            )
        object.__setattr__(self, "params", {key: float(value) for key, value in self.params.items()})

    def __hash__(self) -> int:
        return hash((self.kind, tuple(sorted(self.params.items()))))

    def severity(self) -> float:
        """Normalised severity in [0, 1] of this step (see ``SEVERITY_SCALES``)."""
        return severity_from_params(self.kind, self.params)

    def apply(self, image: np.ndarray, rng: SeedLike = None) -> tuple[np.ndarray, DegradationLabel]:
        """Apply this step to one image (visible for ``vi_*``, infrared for ``ir_*``)."""
        return _APPLY[self.kind](image, self.params, rng)


def _optional(kind: str, params: Mapping[str, float]) -> dict[str, float]:
    return {key: params[key] for key in _OPTIONAL_PARAMS.get(kind, ()) if key in params}


_StepFunction = Callable[[np.ndarray, Mapping[str, float], SeedLike], tuple[np.ndarray, DegradationLabel]]
_APPLY: dict[str, _StepFunction] = {
    "vi_noise": lambda im, p, rng: add_gaussian_noise(im, p["sigma"], rng, modality="visible",
                                                      mono=p.get("mono", 0.0)),
    "vi_haze": lambda im, p, rng: add_haze(im, p["beta"], airlight=p.get("airlight"),
                                           depth_mix=p.get("depth_mix", 1.0)),
    "vi_defocus": lambda im, p, rng: defocus_blur(im, p["radius"], gaussian=bool(p.get("gaussian", 0.0))),
    "vi_lowlight": lambda im, p, rng: low_light(
        im, p["gain"], p["gamma"], rng, **_optional("vi_lowlight", p)
    ),
    "vi_overexposure": lambda im, p, rng: over_exposure(im, p["gain"]),
    "ir_stripe": lambda im, p, rng: add_stripe_noise(im, p["sigma"], rng, **_optional("ir_stripe", p)),
    "ir_noise": lambda im, p, rng: add_gaussian_noise(im, p["sigma"], rng, modality="infrared"),
}


@dataclass(frozen=True)
class Preset:
    """A named composition of degradation steps (at most one per type), applied in ``APPLY_ORDER``."""

    name: str
    steps: tuple[Degradation, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        kinds = [step.kind for step in self.steps]
        duplicates = sorted({kind for kind in kinds if kinds.count(kind) > 1})
        if duplicates:
            raise ValueError(f"preset {self.name!r} repeats degradation types {duplicates}")
        if "vi_lowlight" in kinds and "vi_overexposure" in kinds:
            raise ValueError(f"preset {self.name!r} cannot be both under- and over-exposed")
        object.__setattr__(self, "steps", tuple(sorted(self.steps, key=lambda s: APPLY_ORDER.index(s.kind))))

    def label(self) -> DegradationLabel:
        """The label every pair degraded by this preset gets (independent of the image)."""
        return DegradationLabel({step.kind: step.severity() for step in self.steps})

    def params(self, kind: str) -> Mapping[str, float] | None:
        """Parameters of the step of this type, or None when the preset does not include it."""
        return next((step.params for step in self.steps if step.kind == kind), None)


@dataclass
class DegradedPair:
    """A degraded pair: ``ir`` ``float32 (H, W)``, ``vi`` ``float32 (H, W, 3)`` or ``(H, W)``."""

    ir: np.ndarray
    vi: np.ndarray
    label: DegradationLabel
    preset: str = ""


class UnknownPresetError(ValueError, KeyError):
    """A preset name that is not in ``PRESETS``; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would quote the message; keep it readable.
        return str(self.args[0]) if self.args else ""


def _step(kind: str, **params: float) -> Degradation:
    return Degradation(kind, params)


# Fixed settings of the named presets (see docs/degradations.md for the reasoning).
HAZE_BETA = 1.5
DEFOCUS_RADIUS = 4.0
STRIPE_SIGMA = 0.06
LOWLIGHT_GAIN = 0.2
LOWLIGHT_GAMMA = 1.5
OVEREXPOSURE_GAIN = 1.8


def _noise(sigma: float) -> Degradation:
    return _step("vi_noise", sigma=sigma)


_HAZE = _step("vi_haze", beta=HAZE_BETA)
_DEFOCUS = _step("vi_defocus", radius=DEFOCUS_RADIUS)
_STRIPE = _step("ir_stripe", sigma=STRIPE_SIGMA)


def _preset(name: str, description: str, *steps: Degradation) -> tuple[str, Preset]:
    return name, Preset(name, tuple(steps), description)


#: Named evaluation presets. TG-ECNet single tasks, its mixed and degradation-free cases, its
#: multi-degradation pairs (Tables 12-15), and the exposure cases of this project.
PRESETS: dict[str, Preset] = dict(
    [
        _preset("clean", "no degradation (TG-ECNet 'degradation-free')"),
        _preset("noise15", "visible Gaussian noise sigma=15", _noise(15)),
        _preset("noise25", "visible Gaussian noise sigma=25", _noise(25)),
        _preset("noise50", "visible Gaussian noise sigma=50", _noise(50)),
        _preset("haze", "visible haze (atmospheric scattering, A = mean(J))", _HAZE),
        _preset("defocus", "visible defocus blur (disk kernel)", _DEFOCUS),
        _preset("stripe", "infrared column stripe noise", _STRIPE),
        _preset(
            "mixed", "noise50 + haze + defocus (visible) + stripe (infrared), TG-ECNet Table 2",
            _noise(50), _HAZE, _DEFOCUS, _STRIPE,
        ),
        _preset("defocus_haze", "defocus + haze (TG-ECNet Table 12)", _DEFOCUS, _HAZE),
        _preset(
            "noise50_haze_stripe", "noise50 + haze + stripe (TG-ECNet Table 12)", _noise(50), _HAZE, _STRIPE
        ),
        _preset("noise15_defocus", "noise15 + defocus (TG-ECNet Table 13)", _noise(15), _DEFOCUS),
        _preset("noise15_haze", "noise15 + haze (TG-ECNet Table 13)", _noise(15), _HAZE),
        _preset("noise25_defocus", "noise25 + defocus (TG-ECNet Table 14)", _noise(25), _DEFOCUS),
        _preset("noise25_haze", "noise25 + haze (TG-ECNet Table 14)", _noise(25), _HAZE),
        _preset("noise50_defocus", "noise50 + defocus (TG-ECNet Table 15)", _noise(50), _DEFOCUS),
        _preset("noise50_haze", "noise50 + haze (TG-ECNet Table 15)", _noise(50), _HAZE),
        _preset("haze_stripe", "haze (visible) + stripe (infrared)", _HAZE, _STRIPE),
        _preset("ir_noise", "infrared Gaussian noise sigma=15", _step("ir_noise", sigma=15)),
        _preset(
            "lowlight", "visible low light: gamma 1.5, gain 0.2, Poisson-Gaussian noise",
            _step("vi_lowlight", gain=LOWLIGHT_GAIN, gamma=LOWLIGHT_GAMMA),
        ),
        _preset(
            "overexposure", "visible over-exposure: gain 1.8, clipped",
            _step("vi_overexposure", gain=OVEREXPOSURE_GAIN),
        ),
    ]
)


def get_preset(name_or_preset: str | Preset) -> Preset:
    """The preset of this name (or the preset itself); ``UnknownPresetError`` for a bad name."""
    if isinstance(name_or_preset, Preset):
        return name_or_preset
    try:
        return PRESETS[name_or_preset]
    except (KeyError, TypeError):
        raise UnknownPresetError(
            f"unknown degradation preset {name_or_preset!r}; valid presets: {', '.join(PRESETS)}"
        ) from None


def apply_preset(
    name_or_preset: str | Preset, ir: np.ndarray, vi: np.ndarray, seed: SeedLike = None
) -> DegradedPair:
    """Degrade a clean pair with a preset.

    ``ir``: ``(H, W)`` float in [0, 1]; ``vi``: ``(H, W, 3)`` or ``(H, W)`` float in [0, 1] (the two
    may differ in size). ``seed``: int or Generator; the same seed gives the same output. Each type
    draws from its own child stream, so e.g. the noise of ``noise50`` and of ``noise50_haze`` is the
    same for one seed. Returns new float32 arrays clipped to [0, 1]; the inputs are not modified.
    """
    preset = get_preset(name_or_preset)
    ir_out = _check_image(ir, "infrared", allow_colour=False).copy()
    vi_out = _check_image(vi, "visible").copy()
    streams = dict(zip(DEGRADATION_TYPES, _as_generator(seed).spawn(len(DEGRADATION_TYPES))))
    for step in preset.steps:
        if step.kind.startswith("vi_"):
            vi_out, _ = step.apply(vi_out, streams[step.kind])
        else:
            ir_out, _ = step.apply(ir_out, streams[step.kind])
    return DegradedPair(ir=ir_out, vi=vi_out, label=preset.label(), preset=preset.name)


# --------------------------------------------------------------------------------------------
# Training sampler
# --------------------------------------------------------------------------------------------
#: Probabilities of the sampler's branches; the rest of the mass goes to compositions of 2-3 types.
P_CLEAN = 0.12
P_MIXED = 0.12
P_SINGLE = 0.46


def _random_step(kind: str, rng: np.random.Generator) -> Degradation:
    """One step of this type with a severity drawn over its useful range.

    Half of the noise, haze and defocus steps also vary the model itself (grey or partly shared
    noise; uniform or depth-dependent haze with a grey airlight; a Gaussian blur kernel), so the
    degradation estimate learns the degradation, not one synthesis code's version of it.
    """
    varied = rng.random() < 0.5
    if kind == "vi_noise":
        sigma = rng.uniform(5.0, 50.0)
        return _step(kind, sigma=sigma, mono=rng.uniform(0.0, 1.0)) if varied else _step(kind, sigma=sigma)
    if kind == "ir_noise":
        return _step(kind, sigma=rng.uniform(5.0, 40.0))
    if kind == "vi_haze":
        beta = rng.uniform(0.5, 3.0)
        if varied:
            return _step(kind, beta=beta, airlight=rng.uniform(0.6, 1.0), depth_mix=rng.uniform(0.0, 1.0))
        return _step(kind, beta=beta)
    if kind == "vi_defocus":
        radius = rng.uniform(1.0, 8.0)
        return _step(kind, radius=radius, gaussian=1.0) if varied else _step(kind, radius=radius)
    if kind == "vi_lowlight":
        # Log-uniform gain: each halving of the light is equally likely.
        gain = math.exp(rng.uniform(math.log(LOWLIGHT_MIN_GAIN), math.log(0.5)))
        return _step(kind, gain=gain, gamma=rng.uniform(1.0, 2.2))
    if kind == "vi_overexposure":
        return _step(kind, gain=rng.uniform(1.3, 3.0))
    if kind == "ir_stripe":
        return _step(kind, sigma=rng.uniform(0.02, 0.15))
    raise ValueError(f"unknown degradation type {kind!r}")


def sample_training_preset(rng: SeedLike) -> Preset:
    """A random preset for training the restoration network and its degradation gate.

    Branches: clean (12 %), TG-ECNet ``mixed`` with random severities (12 %), one random type
    (46 %, uniform over ``DEGRADATION_TYPES``), or 2-3 random types (30 %, never low light and
    over-exposure together). Severities are drawn uniformly over each type's useful range, so the
    gate sees every type, alone and combined, at every strength.
    """
    generator = _as_generator(rng)
    branch = generator.random()
    if branch < P_CLEAN:
        return Preset("sampled:clean")
    if branch < P_CLEAN + P_MIXED:
        # The paper's mixture always has noise, at least at its mildest level (sigma 15).
        noise = _step("vi_noise", sigma=generator.uniform(15.0, 50.0))  # per-channel, as the preset
        others = tuple(_random_step(kind, generator) for kind in ("vi_haze", "vi_defocus", "ir_stripe"))
        return Preset("sampled:mixed", (noise, *others))
    if branch < P_CLEAN + P_MIXED + P_SINGLE:
        kinds: list[str] = [DEGRADATION_TYPES[generator.integers(len(DEGRADATION_TYPES))]]
    else:
        count = int(generator.integers(2, 4))
        kinds = []
        for index in generator.permutation(len(DEGRADATION_TYPES)):
            kind = DEGRADATION_TYPES[index]
            exposure_clash = {kind, *kinds} >= {"vi_lowlight", "vi_overexposure"}
            if not exposure_clash:
                kinds.append(kind)
            if len(kinds) == count:
                break
    steps = [_random_step(kind, generator) for kind in kinds]
    preset = Preset("sampled", tuple(steps))
    return Preset("sampled:" + "+".join(step.kind for step in preset.steps), preset.steps)


def quantize(image: np.ndarray, bits: int) -> np.ndarray:
    """Round a float image in [0, 1] to ``bits`` (8 or 16) bits and back to float32, as a camera
    or an image file would deliver it; ``bits`` 0 returns the image unchanged."""
    if bits == 0:
        return image
    if bits not in (8, 16):
        raise ValueError(f"input bits must be 8, 16 or 0 (float), got {bits}")
    peak = np.float32(255.0 if bits == 8 else 65535.0)
    return (np.rint(np.clip(image, 0.0, 1.0) * peak) / peak).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Camera variation (training augmentation; not a degradation)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CameraVariation:
    """Ranges of the camera-to-camera differences that :func:`vary_camera` draws from.

    Each property is varied with probability ``p`` per modality. These are what another camera of
    the same kind looks like, not degradations: the varied image is still the clean target (label
    clean), so the degradation estimate learns not to call a darker, flatter or slightly grainy
    camera hazy, low-lit or noisy. Sensor noise stays well below the weakest synthetic noise
    (sigma 5 in training, 15 in the presets).
    """

    p: float = 0.5
    gamma: tuple[float, float] = (0.7, 1.4)
    contrast: tuple[float, float] = (0.7, 1.2)
    brightness: tuple[float, float] = (-0.08, 0.08)
    #: Per-channel gain of the visible image (white balance).
    colour_gain: tuple[float, float] = (0.9, 1.1)
    #: Gaussian sensor noise, sigma on the 0-255 scale.
    sensor_noise: tuple[float, float] = (0.5, 2.5)


def vary_camera(image: np.ndarray, rng: SeedLike, variation: CameraVariation | None = None) -> np.ndarray:
    """One random camera look of a clean ``(H, W)`` or ``(H, W, 3)`` float image in [0, 1].

    Gamma, contrast about the mean, brightness offset, white balance (colour only) and faint sensor
    noise, each with probability ``variation.p``; the result is clipped to [0, 1], float32.
    """
    v = variation or CameraVariation()
    generator = _as_generator(rng)
    out = _check_image(image, "image").astype(np.float32, copy=True)
    if generator.random() < v.p:
        low, high = math.log(v.gamma[0]), math.log(v.gamma[1])
        out = np.power(out, np.float32(math.exp(generator.uniform(low, high))))
    if generator.random() < v.p:
        mean = out.mean(axis=(0, 1), keepdims=True)
        out = (out - mean) * np.float32(generator.uniform(*v.contrast)) + mean
    if generator.random() < v.p:
        out = out + np.float32(generator.uniform(*v.brightness))
    if out.ndim == 3 and generator.random() < v.p:
        out = out * generator.uniform(*v.colour_gain, size=3).astype(np.float32)
    if generator.random() < v.p:
        sigma = generator.uniform(*v.sensor_noise) / 255.0
        out = out + generator.standard_normal(out.shape, dtype=np.float32) * np.float32(sigma)
    return _clip01(out)
