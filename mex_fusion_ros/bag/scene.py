"""A synthetic thermal + RGB street scene for the built-in demo (ROS-free, deterministic by seed).

The scene is drawn, not captured: a static background (sky, buildings with windows, trees, a
sidewalk and a two-lane road, each with its own noise texture) and moving warm objects
(pedestrians on the sidewalk, vehicles on the road). Every object has a colour in RGB and a
temperature in thermal, so the two modalities carry complementary information the way a real
rig does: people stand out in thermal, road markings and paint colours only exist in RGB.
The light goes from day to dusk over the sequence: the RGB image darkens and warms, headlights
and windows switch on, while the thermal image barely changes (heat does not need light).

Frames are clean; ``mex_fusion_ros.bag.timeline`` adds the degradations that switch over time.
Images follow the project conventions: infrared ``float32 (H, W)``, visible ``float32 (H, W, 3)``
RGB, both in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: Object classes drawn in the scene (names follow COCO so a detector's labels can be compared).
SCENE_CLASSES = ("person", "car")


@dataclass(frozen=True)
class SceneConfig:
    """Size, length and content of the synthetic sequence."""

    width: int = 320
    height: int = 256
    num_frames: int = 300
    #: Frame rate the motion is computed for (the RGB camera rate of the bag).
    fps: float = 30.0
    seed: int = 0
    num_pedestrians: int = 5
    num_vehicles: int = 3

    def __post_init__(self) -> None:
        if self.width < 64 or self.height < 48:
            raise ValueError(f"scene size must be at least 64x48, got {self.width}x{self.height}")
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.num_pedestrians < 0 or self.num_vehicles < 0:
            raise ValueError("object counts must be >= 0")


@dataclass(frozen=True)
class SceneObject:
    """One object visible in a frame: class name and box ``(x0, y0, x1, y1)`` in pixels."""

    label: str
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class SceneFrame:
    """One clean frame of the scene."""

    index: int
    #: Seconds since the start of the sequence.
    time_s: float
    #: 0 = full day, 1 = dusk.
    dusk: float
    ir: np.ndarray
    vi: np.ndarray
    objects: tuple[SceneObject, ...]


def value_noise(
    shape: tuple[int, int], rng: np.random.Generator, octaves: int = 4, base_cells: int = 4
) -> np.ndarray:
    """Smooth fractal noise ``float32 (H, W)`` in [0, 1]: bicubic-upsampled random grids, summed."""
    height, width = shape
    total = np.zeros(shape, np.float32)
    amplitude, norm = 1.0, 0.0
    for octave in range(octaves):
        cells = base_cells * 2**octave
        grid = rng.random((max(2, cells * height // width), cells)).astype(np.float32)
        total += amplitude * cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
        norm += amplitude
        amplitude *= 0.5
    total /= norm
    return np.clip((total - total.min()) / max(1e-6, float(np.ptp(total))), 0.0, 1.0)


@dataclass
class _Walker:
    x0: float
    speed_px_s: float
    height_px: int
    foot_y: int
    shirt: tuple[float, float, float]
    trousers: tuple[float, float, float]
    body_temp: float
    phase: float


@dataclass
class _Vehicle:
    x0: float
    speed_px_s: float
    length_px: int
    height_px: int
    base_y: int
    paint: tuple[float, float, float]
    engine_temp: float


class DemoScene:
    """Renders frame ``index`` of the scene on demand; the same config always gives the same frames."""

    def __init__(self, config: SceneConfig | None = None) -> None:
        self.config = config or SceneConfig()
        c = self.config
        rng = np.random.default_rng(c.seed)
        h = c.height
        # Layout (fractions of the height): horizon, sidewalk band, road band.
        self.horizon_y = int(0.42 * h)
        self.sidewalk_y = (int(0.58 * h), int(0.66 * h))
        self.road_y = (self.sidewalk_y[1], h)
        self._build_background(rng)
        self._walkers = [self._new_walker(rng) for _ in range(c.num_pedestrians)]
        self._vehicles = [self._new_vehicle(rng, lane=i % 2) for i in range(c.num_vehicles)]

    # ------------------------------------------------------------------ background
    def _build_background(self, rng: np.random.Generator) -> None:
        c = self.config
        h, w = c.height, c.width
        yy = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
        vi = np.zeros((h, w, 3), np.float32)
        ir = np.zeros((h, w), np.float32)
        # Windows and headlights light up at dusk: kept as masks, applied per frame.
        self._window_mask = np.zeros((h, w), np.float32)

        # Sky: a vertical gradient, cold in thermal (clear sky radiates little).
        sky = slice(0, self.horizon_y)
        vi[sky] = (0.55 + 0.25 * yy[sky, :, None]) * np.array([0.55, 0.72, 1.0], np.float32)
        ir[sky] = 0.08 + 0.08 * yy[sky]

        # Trees: a noisy canopy band in front of the skyline, mid-cool in thermal.
        canopy_top = value_noise((1, w), rng, octaves=3, base_cells=6)[0]
        tree_texture = value_noise((h, w), rng, octaves=5, base_cells=8)
        tree_top = (self.horizon_y - (0.10 + 0.12 * canopy_top) * h).astype(int)

        # Buildings: rectangles of random width/height with a grid of windows.
        wall_texture = value_noise((h, w), rng, octaves=4, base_cells=10)
        x = 0
        while x < w:
            bw = int(rng.integers(w // 8, w // 4))
            top = int(self.horizon_y - rng.uniform(0.15, 0.38) * h)
            tone = rng.uniform(0.35, 0.75)
            tint = np.array([tone, tone * rng.uniform(0.85, 1.0), tone * rng.uniform(0.75, 0.95)], np.float32)
            region = (slice(max(0, top), self.horizon_y), slice(x, min(w, x + bw)))
            vi[region] = tint * (0.85 + 0.15 * wall_texture[region])[..., None]
            ir[region] = 0.30 + 0.06 * wall_texture[region]
            win = max(3, bw // 8)
            for wy in range(top + win, self.horizon_y - win, 2 * win):
                for wx in range(x + win // 2, min(w, x + bw) - win, 2 * win):
                    vi[wy : wy + win, wx : wx + win] = (0.20, 0.25, 0.32)
                    ir[wy : wy + win, wx : wx + win] = 0.36
                    self._window_mask[wy : wy + win, wx : wx + win] = float(rng.random() < 0.6)
            x += bw + int(rng.integers(0, w // 20 + 1))

        # Gaps between trees come in runs of columns (a 1-D noise threshold), not single columns.
        has_tree = value_noise((1, w), rng, octaves=2, base_cells=5)[0] > 0.3
        for col in np.flatnonzero(has_tree):
            top = max(0, tree_top[col])
            t = tree_texture[top : self.horizon_y, col]
            vi[top : self.horizon_y, col] = np.stack([0.10 + 0.15 * t, 0.30 + 0.30 * t, 0.08 + 0.10 * t], -1)
            ir[top : self.horizon_y, col] = 0.22 + 0.10 * t
            self._window_mask[top : self.horizon_y, col] = 0.0  # windows behind a tree stay hidden

        # Sidewalk and grass strip between horizon and road.
        ground = slice(self.horizon_y, self.sidewalk_y[0])
        grass = value_noise((h, w), rng, octaves=5, base_cells=12)
        vi[ground] = np.stack(
            [0.20 + 0.1 * grass[ground], 0.45 + 0.2 * grass[ground], 0.15 + 0.05 * grass[ground]], -1
        )
        ir[ground] = 0.28 + 0.06 * grass[ground]
        walk = slice(*self.sidewalk_y)
        paving = value_noise((h, w), rng, octaves=5, base_cells=20)
        vi[walk] = (0.62 + 0.12 * paving[walk])[..., None] * np.array([1.0, 0.97, 0.92], np.float32)
        ir[walk] = 0.40 + 0.05 * paving[walk]
        # Paving joints: visible in RGB, invisible in thermal (same material, same temperature).
        for jx in range(0, w, max(8, w // 16)):
            vi[walk, jx] *= 0.8

        # Road: dark asphalt, warm in thermal (it stored the day's sun), lane markings only in RGB.
        road = slice(*self.road_y)
        asphalt = value_noise((h, w), rng, octaves=6, base_cells=24)
        vi[road] = (0.22 + 0.10 * asphalt[road])[..., None]
        ir[road] = 0.48 + 0.05 * asphalt[road]
        mid = (self.road_y[0] + self.road_y[1]) // 2
        dash = max(6, w // 20)
        for dx in range(0, w, 2 * dash):
            vi[mid - 1 : mid + 1, dx : dx + dash] = 0.92
        vi[self.road_y[0] : self.road_y[0] + 2] = 0.8

        self._background_vi = np.clip(vi, 0.0, 1.0)
        self._background_ir = np.clip(ir, 0.0, 1.0)

    # ------------------------------------------------------------------ objects
    def _new_walker(self, rng: np.random.Generator) -> _Walker:
        c = self.config
        height_px = int(rng.uniform(0.16, 0.22) * c.height)
        return _Walker(
            x0=float(rng.uniform(0, c.width)),
            speed_px_s=float(rng.choice([-1, 1]) * rng.uniform(0.04, 0.09) * c.width),
            height_px=height_px,
            foot_y=int(rng.uniform(self.sidewalk_y[0] + 2, self.sidewalk_y[1])),
            shirt=tuple(float(v) for v in rng.uniform(0.1, 0.9, 3)),
            trousers=tuple(float(v) for v in rng.uniform(0.05, 0.4, 3)),
            body_temp=float(rng.uniform(0.82, 0.92)),
            phase=float(rng.uniform(0, 2 * np.pi)),
        )

    def _new_vehicle(self, rng: np.random.Generator, lane: int) -> _Vehicle:
        c = self.config
        road_h = self.road_y[1] - self.road_y[0]
        # Far lane (0) drives left, near lane (1) drives right; near vehicles are drawn larger.
        scale = 0.85 if lane == 0 else 1.0
        base_y = self.road_y[0] + int((0.48 if lane == 0 else 0.92) * road_h)
        return _Vehicle(
            x0=float(rng.uniform(0, c.width)),
            speed_px_s=float((-1 if lane == 0 else 1) * rng.uniform(0.12, 0.25) * c.width),
            length_px=int(scale * rng.uniform(0.22, 0.30) * c.width),
            height_px=int(scale * rng.uniform(0.13, 0.17) * c.height),
            base_y=base_y,
            paint=tuple(float(v) for v in rng.uniform(0.05, 0.95, 3)),
            engine_temp=float(rng.uniform(0.85, 0.98)),
        )

    @staticmethod
    def _wrap(x0: float, speed: float, t: float, span: float, margin: float) -> float:
        # Objects leave on one side and come back on the other.
        return (x0 + speed * t + margin) % (span + 2 * margin) - margin

    def _draw_walker(self, walker: _Walker, t: float, vi: np.ndarray, ir: np.ndarray) -> SceneObject | None:
        h = walker.height_px
        x = int(self._wrap(walker.x0, walker.speed_px_s, t, self.config.width, h))
        foot = walker.foot_y
        head_r = max(2, h // 9)
        torso_top, hip = foot - h + 2 * head_r, foot - int(0.45 * h)
        half_w = max(2, h // 8)
        swing = int(0.18 * h * np.sin(2 * np.pi * 1.8 * t + walker.phase))
        skin_vi, temp = (0.85, 0.65, 0.5), walker.body_temp
        clothes_temp = temp - 0.12  # clothing insulates: cooler than face and hands
        for leg in (swing, -swing):
            cv2.line(vi, (x, hip), (x + leg // 2, foot), walker.trousers, max(2, half_w - 1))
            cv2.line(ir, (x, hip), (x + leg // 2, foot), clothes_temp, max(2, half_w - 1))
        cv2.rectangle(vi, (x - half_w, torso_top), (x + half_w, hip), walker.shirt, -1)
        cv2.rectangle(ir, (x - half_w, torso_top), (x + half_w, hip), clothes_temp, -1)
        for arm in (swing, -swing):
            cv2.line(vi, (x, torso_top + 2), (x + arm // 2, hip), walker.shirt, max(1, half_w // 2))
            cv2.line(ir, (x, torso_top + 2), (x + arm // 2, hip), temp - 0.05, max(1, half_w // 2))
        cv2.circle(vi, (x, torso_top - head_r), head_r, skin_vi, -1)
        cv2.circle(ir, (x, torso_top - head_r), head_r, temp, -1)
        return self._clip_box(
            "person", x - half_w - abs(swing) // 2, torso_top - 2 * head_r, x + half_w + abs(swing) // 2, foot
        )

    def _draw_vehicle(
        self, car: _Vehicle, t: float, vi: np.ndarray, ir: np.ndarray, lamps: list[tuple[int, int, int]]
    ) -> SceneObject | None:
        length, height = car.length_px, car.height_px
        x = int(self._wrap(car.x0, car.speed_px_s, t, self.config.width, length))
        bottom = car.base_y
        wheel_r = max(2, height // 5)
        body_top = bottom - height + int(0.35 * height)
        heading = 1 if car.speed_px_s > 0 else -1
        x0, x1 = x - length // 2, x + length // 2
        # Body and cabin.
        cv2.rectangle(vi, (x0, body_top), (x1, bottom - wheel_r), car.paint, -1)
        cv2.rectangle(ir, (x0, body_top), (x1, bottom - wheel_r), 0.60, -1)
        cabin = (x0 + length // 5, bottom - height, x1 - length // 5, body_top)
        cv2.rectangle(vi, cabin[:2], cabin[2:], tuple(0.6 * v for v in car.paint), -1)
        cv2.rectangle(vi, (cabin[0] + 2, cabin[1] + 2), (cabin[2] - 2, cabin[3]), (0.55, 0.65, 0.75), -1)
        cv2.rectangle(ir, cabin[:2], cabin[2:], 0.45, -1)
        # The engine end is hot; tyres and exhaust are warm.
        hood = (x1 - length // 4, x1) if heading > 0 else (x0, x0 + length // 4)
        cv2.rectangle(ir, (hood[0], body_top), (hood[1], bottom - wheel_r), car.engine_temp, -1)
        exhaust_x = x0 if heading > 0 else x1
        cv2.circle(ir, (exhaust_x, bottom - wheel_r), max(2, wheel_r // 2), 0.95, -1)
        for wx in (x0 + length // 5, x1 - length // 5):
            cv2.circle(vi, (wx, bottom - wheel_r), wheel_r, (0.05, 0.05, 0.05), -1)
            cv2.circle(ir, (wx, bottom - wheel_r), wheel_r, 0.75, -1)
        # Headlights are drawn after the day->dusk dimming (they emit light), see render().
        lamps.append((x1 if heading > 0 else x0, body_top + wheel_r, max(2, wheel_r)))
        return self._clip_box("car", x0, bottom - height, x1, bottom)

    def _clip_box(self, label: str, x0: int, y0: int, x1: int, y1: int) -> SceneObject | None:
        w, h = self.config.width, self.config.height
        box = (max(0, x0), max(0, y0), min(w - 1, x1), min(h - 1, y1))
        if box[2] - box[0] < 2 or box[3] - box[1] < 2:
            return None
        return SceneObject(label, box)

    # ------------------------------------------------------------------ frames
    def render(self, index: int) -> SceneFrame:
        """Frame ``index`` (0-based, may exceed ``num_frames``: the motion continues)."""
        if index < 0:
            raise ValueError(f"frame index must be >= 0, got {index}")
        c = self.config
        t = index / c.fps
        dusk = float(min(1.0, index / max(1, c.num_frames - 1)))
        vi = self._background_vi.copy()
        ir = self._background_ir.copy()
        objects: list[SceneObject] = []
        # Far objects first so near ones cover them.
        for walker in sorted(self._walkers, key=lambda wk: wk.foot_y):
            obj = self._draw_walker(walker, t, vi, ir)
            if obj is not None:
                objects.append(obj)
        lamps: list[tuple[int, int, int]] = []
        for car in sorted(self._vehicles, key=lambda v: v.base_y):
            obj = self._draw_vehicle(car, t, vi, ir, lamps)
            if obj is not None:
                objects.append(obj)

        # Day -> dusk: less light and a warmer colour in RGB; lit windows stay bright.
        light = 1.0 - 0.72 * dusk
        tint = np.array([1.0, 1.0 - 0.18 * dusk, 1.0 - 0.40 * dusk], np.float32)
        vi = vi * (light * tint)
        window_on = self._window_mask[..., None] * min(1.0, max(0.0, (dusk - 0.3) / 0.4))
        vi = vi * (1.0 - window_on) + window_on * np.array([0.95, 0.85, 0.45], np.float32)
        if dusk > 0.4:
            glow = float(min(1.0, (dusk - 0.4) / 0.3))
            lamp_layer = np.zeros((c.height, c.width), np.float32)
            for lamp_x, lamp_y, radius in lamps:
                cv2.circle(lamp_layer, (lamp_x, lamp_y), radius, 1.0, -1)  # clips at the border
            vi = np.maximum(vi, glow * lamp_layer[..., None] * np.array([1.0, 0.95, 0.75], np.float32))
        # Thermal optics are softer than RGB; the ground cools a little after sunset.
        ir = cv2.GaussianBlur(ir, (0, 0), 0.8)
        ir = ir - 0.05 * dusk * (np.arange(c.height, dtype=np.float32)[:, None] >= self.horizon_y)
        return SceneFrame(
            index=index,
            time_s=t,
            dusk=dusk,
            ir=np.clip(ir, 0.0, 1.0).astype(np.float32),
            vi=np.clip(vi, 0.0, 1.0).astype(np.float32),
            objects=tuple(objects),
        )

    def __len__(self) -> int:
        return self.config.num_frames

    def __iter__(self):
        for index in range(self.config.num_frames):
            yield self.render(index)
