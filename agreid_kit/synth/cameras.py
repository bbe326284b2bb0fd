"""Camera rigs: fixed poses (aerial, ground, wearable), pinhole projection and person placement."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np

# CARGO's layout: aerial cameras are Cam1..Cam5 and ground cameras start at Cam6 (the CARGO reader
# labels a camera aerial iff its number is <= 5). Wearable cameras come after the ground ones and
# get their view from meta.csv.
FIRST_GROUND_CAMERA = 6
MAX_AERIAL_CAMERAS = 5
NOMINAL_PERSON_HEIGHT = 1.73


@dataclass(frozen=True)
class Camera:
    camid: int
    view: int  # 0 aerial, 1 ground, 2 wearable
    altitude: float  # metres above the ground
    pitch: float  # degrees below the horizon
    yaw: float  # degrees, compass direction the camera looks along
    focal_px: float  # focal length in pixels of the (notional) full sensor
    scene: int  # index of the scene (ground texture and backdrop) the camera sits in
    min_distance: float  # horizontal placement range of people (ground/wearable cameras)
    max_distance: float

    @cached_property
    def position(self) -> np.ndarray:
        return np.array([0.0, 0.0, self.altitude])

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(forward, right, up) unit vectors; defined through the yaw so a 90-degree pitch is fine."""
        return self._axes

    @cached_property
    def _axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p, y = np.radians(self.pitch), np.radians(self.yaw)
        fwd = np.array([np.cos(p) * np.cos(y), np.cos(p) * np.sin(y), -np.sin(p)])
        right = np.array([np.sin(y), -np.cos(y), 0.0])
        up = np.array([right[1] * fwd[2] - right[2] * fwd[1], right[2] * fwd[0] - right[0] * fwd[2],
                       right[0] * fwd[1] - right[1] * fwd[0]])
        return fwd, right, up

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items()}


def project(cam: Camera, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points (N, 3) -> image coordinates (N, 2) relative to the principal point and depths (N,)."""
    fwd, right, up = cam.axes()
    d = points - cam.position
    depth = np.maximum(d @ fwd, 1e-3)
    uv = np.stack([d @ right, -(d @ up)], axis=1) * (cam.focal_px / depth)[:, None]
    return uv, depth


def build_cameras(
    seed: int,
    n_aerial: int,
    n_ground: int,
    n_wearable: int,
    altitude_range: tuple[float, float],
    pitch_range: tuple[float, float],
    ground_height_range: tuple[float, float],
    ground_pitch_range: tuple[float, float],
    aerial_person_px: tuple[float, float],
    ground_person_px: tuple[float, float],
    n_scenes: int,
) -> list[Camera]:
    """The fixed rig of a dataset: aerial Cam1..CamA, ground Cam6.., wearable after the ground ones.

    Aerial altitudes and pitches are spread over their ranges (a Latin-hypercube pairing, so
    altitude and pitch are not the same axis); focal lengths give the person a native height drawn
    from ``aerial_person_px`` at the camera's look distance, as a drone's zoom would.
    """
    rng = np.random.default_rng([int(seed), 90210])
    cams: list[Camera] = []
    if n_aerial:
        fr = (np.arange(n_aerial) + 0.5) / n_aerial
        alts = altitude_range[0] + (altitude_range[1] - altitude_range[0]) * fr
        pitches = pitch_range[0] + (pitch_range[1] - pitch_range[0]) * fr[rng.permutation(n_aerial)]
        for i in range(n_aerial):
            dist = alts[i] / np.sin(np.radians(pitches[i]))
            px = rng.uniform(*aerial_person_px)
            cams.append(Camera(i + 1, 0, float(round(alts[i], 2)), float(round(pitches[i], 2)),
                               float(round(rng.uniform(0, 360), 2)),
                               float(round(px * dist / NOMINAL_PERSON_HEIGHT, 2)),
                               int(rng.integers(n_scenes)), 0.0, 0.0))
    for j in range(n_ground):
        h = rng.uniform(*ground_height_range)
        pitch = rng.uniform(*ground_pitch_range)
        # Place people where the camera looks: a steeper/higher camera looks at nearer ground.
        look = h / np.tan(np.radians(max(pitch, 1.0)))
        dmin, dmax = float(np.clip(look * 0.6, 4.0, 10.0)), float(np.clip(look * 1.4, 9.0, 18.0))
        mid = (dmin + dmax) / 2
        px = rng.uniform(*ground_person_px)
        cams.append(Camera(FIRST_GROUND_CAMERA + j, 1, float(round(h, 2)), float(round(pitch, 2)),
                           float(round(rng.uniform(0, 360), 2)),
                           float(round(px * mid / NOMINAL_PERSON_HEIGHT, 2)), int(rng.integers(n_scenes)),
                           round(dmin, 2), round(dmax, 2)))
    for k in range(n_wearable):
        h = rng.uniform(1.5, 1.75)
        px = rng.uniform(*ground_person_px) * 1.2
        cams.append(Camera(FIRST_GROUND_CAMERA + n_ground + k, 2, float(round(h, 2)),
                           float(round(rng.uniform(0, 8), 2)),
                           float(round(rng.uniform(0, 360), 2)), float(round(px * 3.5 / NOMINAL_PERSON_HEIGHT, 2)),
                           int(rng.integers(n_scenes)), 2.5, 4.5))
    return cams


def place_person(cam: Camera, rng: np.random.Generator) -> np.ndarray:
    """A random ground position (x, y) inside the camera's field of view."""
    fwd, right, up = cam.axes()
    if cam.view == 0:
        # Cast a ray through a random point of the central frame and meet the ground.
        ax, ay = np.radians(rng.uniform(-18, 18)), np.radians(rng.uniform(-12, 12))
        ray = fwd + np.tan(ax) * right + np.tan(ay) * up
        if ray[2] > -0.05:  # a shallow ray would run off to the horizon
            ray = fwd
        t = -cam.altitude / ray[2]
        hit = cam.position + t * ray
        return hit[:2]
    d = rng.uniform(cam.min_distance, cam.max_distance)
    a = np.radians(cam.yaw + rng.uniform(-22, 22))
    return np.array([d * np.cos(a), d * np.sin(a)])


HEADINGS = ("front", "oblique-front", "side", "oblique-back", "back")


def heading_label(cam: Camera, position: np.ndarray, yaw: float) -> tuple[str, float]:
    """How the person faces the camera: label and angle (0 = facing the camera, 180 = back to it)."""
    to_cam = cam.position[:2] - position
    ang = np.degrees(np.arctan2(to_cam[1], to_cam[0]))
    rel = float((np.degrees(yaw) - ang + 180.0) % 360.0 - 180.0)
    a = abs(rel)
    label = HEADINGS[int(np.digitize(a, [22.5, 67.5, 112.5, 157.5]))]
    return label, rel
