"""Scenes behind the person: ground textures (grass, asphalt, paving), backdrops and sky.

Backgrounds are ray-cast per pixel (numpy): every crop pixel's ray meets the ground plane, or for
ground cameras a backdrop plane (wall, trees, building) behind the person, or the sky. Textures are
seeded tiles sampled at world coordinates, so a camera sees the same ground in every image.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from agreid_kit.synth.cameras import Camera

GROUND_KINDS = ("grass", "asphalt", "paving")
BACKDROP_KINDS = ("wall", "trees", "building")
TEXEL_M = 0.04  # metres per texel of the ground tiles
TILE = 512


@dataclass(frozen=True)
class SceneStyle:
    ground: str
    backdrop: str
    backdrop_distance: float
    wall_colour: tuple[int, int, int]


def scene_style(seed: int, scene: int) -> SceneStyle:
    rng = np.random.default_rng([int(seed), int(scene), 5150])
    walls = [(170, 150, 130), (150, 95, 80), (190, 185, 170), (120, 125, 130), (200, 175, 140)]
    return SceneStyle(
        ground=GROUND_KINDS[scene % len(GROUND_KINDS)],
        backdrop=BACKDROP_KINDS[int(rng.integers(len(BACKDROP_KINDS)))],
        backdrop_distance=float(rng.uniform(6.0, 12.0)),
        wall_colour=walls[int(rng.integers(len(walls)))],
    )


def _value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    grid = (rng.random((cells, cells)) * 255).astype(np.uint8)
    big = Image.fromarray(grid).resize((size, size), Image.BICUBIC)
    return np.asarray(big, dtype=np.float32) / 255.0


@lru_cache(maxsize=32)
def ground_tile(seed: int, scene: int) -> np.ndarray:
    """(TILE, TILE, 3) float32 RGB texture of the scene's ground (cached per worker process)."""
    style = scene_style(seed, scene)
    rng = np.random.default_rng([int(seed), int(scene), 1212])
    coarse = _value_noise(rng, TILE, 16)
    fine = rng.random((TILE, TILE)).astype(np.float32)
    if style.ground == "grass":
        base = np.array([70, 110, 50], np.float32)
        tex = base * (0.7 + 0.45 * coarse[..., None]) * (0.85 + 0.3 * fine[..., None])
    elif style.ground == "asphalt":
        base = np.array([92, 92, 96], np.float32)
        tex = base * (0.85 + 0.25 * coarse[..., None]) * (0.8 + 0.4 * fine[..., None])
        # A painted lane line across the tile.
        tex[:, 200:208] = np.array([215, 210, 190], np.float32) * (0.9 + 0.1 * fine[:, 200:208, None])
    else:
        base = np.array([165, 150, 135], np.float32)
        tex = base * (0.85 + 0.2 * coarse[..., None]) * (0.9 + 0.2 * fine[..., None])
        yy, xx = np.mgrid[0:TILE, 0:TILE]
        joints = ((yy % 12) < 1) | ((xx % 24) < 1)  # 0.5 x 1 m slabs
        tex[joints] *= 0.55
    return np.clip(tex, 0, 255)


@lru_cache(maxsize=32)
def backdrop_tile(seed: int, scene: int) -> np.ndarray:
    """(TILE, TILE, 3) texture of the backdrop plane: texel (row = height, col = lateral), 0.04 m each."""
    style = scene_style(seed, scene)
    rng = np.random.default_rng([int(seed), int(scene), 3434])
    coarse = _value_noise(rng, TILE, 12)
    fine = rng.random((TILE, TILE)).astype(np.float32)
    yy, xx = np.mgrid[0:TILE, 0:TILE]
    if style.backdrop == "trees":
        tex = np.array([40, 75, 35], np.float32) * (0.6 + 0.7 * coarse[..., None]) * (0.8 + 0.4 * fine[..., None])
        trunks = (xx % 90) < 7
        tex[trunks & (yy < 60)] = np.array([70, 50, 35], np.float32)
    else:
        col = np.array(style.wall_colour, np.float32)
        tex = col * (0.85 + 0.2 * coarse[..., None]) * (0.93 + 0.14 * fine[..., None])
        if style.backdrop == "wall":
            bricks = ((yy % 6) < 1) | (((xx + 12 * ((yy // 6) % 2)) % 24) < 1)
            tex[bricks] *= 0.75
        else:
            windows = ((xx % 60) > 18) & ((xx % 60) < 46) & ((yy % 75) > 30) & ((yy % 75) < 68) & (yy > 40)
            tex[windows] = np.array([60, 75, 95], np.float32) * (0.8 + 0.4 * coarse[windows, None])
            door = ((xx % 240) > 100) & ((xx % 240) < 135) & (yy < 55)
            tex[door] = np.array([55, 45, 40], np.float32)
    return np.clip(tex, 0, 255)


def render_background(seed: int, cam: Camera, u: np.ndarray, v: np.ndarray, person_xy: np.ndarray) -> np.ndarray:
    """RGB float (H, W, 3) seen through image coordinates u (W,), v (H,) (relative to the principal point)."""
    fwd, right, up = cam.axes()
    style = scene_style(seed, cam.scene)
    rays = fwd[None, None] * cam.focal_px + right[None, None] * u[None, :, None] - up[None, None] * v[:, None, None]
    C = cam.position
    dz = rays[..., 2]
    out = np.empty(rays.shape, np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = np.where(dz < -1e-6, -C[2] / dz, np.inf)
    hit_ground = np.isfinite(t_ground)
    tile = ground_tile(seed, cam.scene)
    gx = C[0] + t_ground * rays[..., 0]
    gy = C[1] + t_ground * rays[..., 1]
    ix = np.where(hit_ground, np.floor(gx / TEXEL_M), 0).astype(np.int64) % TILE
    iy = np.where(hit_ground, np.floor(gy / TEXEL_M), 0).astype(np.int64) % TILE
    out[:] = tile[iy, ix]
    # Far ground fades towards the haze colour.
    haze = np.array([185, 195, 205], np.float32)
    if cam.view != 0:
        fh = np.array([fwd[0], fwd[1], 0.0])
        fh /= np.linalg.norm(fh)
        rh = np.array([right[0], right[1], 0.0])
        dist_person = float((np.r_[person_xy, 0.0] - C) @ fh)
        plane = dist_person + style.backdrop_distance
        along = rays @ fh
        with np.errstate(divide="ignore", invalid="ignore"):
            t_wall = np.where(along > 1e-6, plane / along, np.inf)
        wz = C[2] + t_wall * dz
        lateral = (t_wall[..., None] * rays) @ rh
        btile = backdrop_tile(seed, cam.scene)
        col = np.where(np.isfinite(lateral), np.floor(lateral / TEXEL_M), 0).astype(np.int64) % TILE
        height_limit = 3.5 if style.backdrop == "wall" else 7.0 if style.backdrop == "trees" else 9.0
        if style.backdrop == "trees":
            # An irregular canopy line.
            height_limit = 5.0 + 2.0 * np.sin(lateral * 0.9) + 1.0 * np.sin(lateral * 2.3 + 1.0)
        on_wall = np.isfinite(t_wall) & (t_wall < t_ground) & (wz >= 0) & (wz <= height_limit)
        row = np.clip(np.where(on_wall, wz / TEXEL_M, 0), 0, TILE - 1).astype(np.int64)
        out[on_wall] = btile[row[on_wall], col[on_wall]]
        sky = ~hit_ground & ~on_wall
        if sky.any():
            elev = np.clip(dz / np.linalg.norm(rays, axis=-1), 0, 1)
            horizon, zenith = np.array([200, 215, 235], np.float32), np.array([110, 150, 210], np.float32)
            sky_col = horizon[None] * (1 - elev[..., None]) + zenith[None] * elev[..., None]
            out[sky] = sky_col[sky]
        far = np.clip((t_ground * np.linalg.norm(rays, axis=-1) - 25.0) / 60.0, 0, 0.7)
        far = np.where(hit_ground & ~on_wall, far, 0.0)[..., None]
        out = out * (1 - far) + haze * far
    return out
