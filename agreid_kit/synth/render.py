"""Rendering one SynthAG image: place a person before a camera, rasterise, crop like a detector, degrade.

The renderer is a painter's-order rasteriser of projected solids (capsules, spheres, hexahedra)
with Lambert shading from the sun and a cast shadow on the ray-cast ground. It draws only the
detection window, at the person's native pixel size (so aerial crops come from a few dozen
pixels), supersampled 2x for anti-aliasing, then applies the sensor chain (motion blur, noise, JPEG
for aerial; dim light and noise at night) and resizes to the output size.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from agreid_kit.synth.cameras import Camera, heading_label, place_person, project
from agreid_kit.synth.people import Identity, Primitive, build_body, draw_identity, place_body
from agreid_kit.synth.scene import render_background

# Face lists of a hexahedron (bottom ring 0-3, top ring 4-7): each quad as bottom edge then top edge.
_SIDE_FACES = (("back", (0, 1, 5, 4)), ("front", (2, 3, 7, 6)), ("left", (3, 0, 4, 7)), ("right", (1, 2, 6, 5)))
_CAP_FACES = (("bottom", (0, 1, 2, 3)), ("top", (4, 5, 6, 7)))


@dataclass(frozen=True)
class RenderSettings:
    height: int = 256
    width: int = 128
    night_fraction: float = 0.25
    occlusion_fraction: float = 0.2
    supersample: int = 2


@dataclass
class Lighting:
    sun: np.ndarray  # unit vector towards the sun
    ambient: float
    diffuse: float
    shadow: float  # how much a cast shadow darkens the ground (0 = none)
    night: bool


def _shade(colour, normal: np.ndarray, light: Lighting) -> tuple[int, int, int]:
    k = light.ambient + light.diffuse * max(0.0, float(normal @ light.sun))
    return tuple(int(min(255, c * k)) for c in colour)


def _unit(v: np.ndarray) -> np.ndarray:
    n = math.sqrt(float(v @ v))
    return v / n if n > 1e-9 else np.array([0.0, 0.0, 1.0])


class _Canvas:
    """Maps camera image coordinates to the render window and draws projected primitives."""

    def __init__(self, cam: Camera, origin: np.ndarray, scale: float, image: Image.Image):
        self.cam, self.origin, self.scale = cam, origin, scale
        self.image = image
        self.draw = ImageDraw.Draw(image)
        self._projected: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def prepare(self, prims: list[Primitive]) -> None:
        """Project the points of many primitives in one call (per-primitive calls dominate the cost)."""
        if not prims:
            return
        pts = np.concatenate([p.points for p in prims])
        uv, depth = project(self.cam, pts)
        xy = (uv - self.origin) * self.scale
        i = 0
        for p in prims:
            n = len(p.points)
            self._projected[id(p)] = (xy[i:i + n], depth[i:i + n])
            i += n

    def to_px(self, prim: Primitive) -> tuple[np.ndarray, np.ndarray]:
        hit = self._projected.get(id(prim))
        if hit is not None:
            return hit
        uv, depth = project(self.cam, prim.points)
        return (uv - self.origin) * self.scale, depth

    def primitive(self, prim: Primitive, light: Lighting, draw: ImageDraw.ImageDraw | None = None, flat=None) -> None:
        d = draw or self.draw
        cam_pos = self.cam.position
        if prim.kind == "hexa":
            xy, _ = self.to_px(prim)
            centre = prim.points.mean(axis=0)
            for name, idx in _SIDE_FACES + _CAP_FACES:
                fc = prim.points[list(idx)].mean(axis=0)
                normal = _unit(fc - centre)
                if normal @ (cam_pos - fc) <= 0:
                    continue
                quad = xy[list(idx)]
                colour = flat if flat is not None else _shade(prim.colour, normal, light)
                d.polygon([tuple(p) for p in quad], fill=colour)
                if flat is None and prim.pattern != "solid" and name in ("front", "back", "left", "right"):
                    self._pattern(d, quad, name, prim, normal, light)
            return
        xy, depth = self.to_px(prim)
        radii = np.asarray(prim.radii) * self.cam.focal_px / depth * self.scale
        to_cam = _unit(cam_pos - prim.points.mean(axis=0))
        if prim.kind == "sphere":
            colour = flat if flat is not None else _shade(prim.colour, _unit(to_cam + light.sun * 0.3), light)
            x, y = xy[0]
            r = max(radii[0], 0.5)
            d.ellipse([x - r, y - r, x + r, y + r], fill=colour)
            return
        axis = _unit(prim.points[1] - prim.points[0])
        normal = _unit(to_cam - (to_cam @ axis) * axis)
        colour = flat if flat is not None else _shade(prim.colour, normal, light)
        a, b = xy
        ra, rb = max(radii[0], 0.5), max(radii[1], 0.5)
        seg = b - a
        length = float(np.hypot(*seg))
        if length > 1e-6:
            n = np.array([-seg[1], seg[0]]) / length
            d.polygon([tuple(a + n * ra), tuple(b + n * rb), tuple(b - n * rb), tuple(a - n * ra)], fill=colour)
        d.ellipse([a[0] - ra, a[1] - ra, a[0] + ra, a[1] + ra], fill=colour)
        d.ellipse([b[0] - rb, b[1] - rb, b[0] + rb, b[1] + rb], fill=colour)

    def _pattern(self, d, quad: np.ndarray, face: str, prim: Primitive, normal: np.ndarray, light: Lighting) -> None:
        bl, br, tr, tl = quad
        colour = _shade(prim.pattern_colour or (255, 255, 255), normal, light)

        def point(s: float, t: float) -> tuple[float, float]:
            left, right = bl + (tl - bl) * t, br + (tr - br) * t
            p = left + (right - left) * s
            return (float(p[0]), float(p[1]))

        if prim.pattern == "stripes":
            rows = 7
            for i in range(1, rows, 2):
                t0, t1 = i / rows, (i + 1) / rows
                d.polygon([point(0, t0), point(1, t0), point(1, t1), point(0, t1)], fill=colour)
        elif prim.pattern == "checks":
            rows, cols = 6, 4
            for i in range(rows):
                for j in range(cols):
                    if (i + j) % 2:
                        s0, s1, t0, t1 = j / cols, (j + 1) / cols, i / rows, (i + 1) / rows
                        d.polygon([point(s0, t0), point(s1, t0), point(s1, t1), point(s0, t1)], fill=colour)
        elif prim.pattern == "logo" and face == "front":
            d.polygon([point(0.3, 0.5), point(0.7, 0.5), point(0.7, 0.82), point(0.3, 0.82)], fill=colour)


def _occluders(seed: int, cam: Camera, person_xy: np.ndarray, rng: np.random.Generator) -> tuple[str, list[Primitive]]:
    """A pole, a sign or another person between the camera and the target."""
    kind = ("pole", "sign", "person")[int(rng.choice(3, p=[0.35, 0.25, 0.4]))]
    to_cam = cam.position[:2] - person_xy
    dist = float(np.linalg.norm(to_cam))
    toward = to_cam / max(dist, 1e-6)
    side = np.array([-toward[1], toward[0]])
    if cam.view == 0:
        ahead = rng.uniform(0.6, 1.6)
    else:
        ahead = rng.uniform(0.2, 0.55) * dist
    where = person_xy + toward * ahead + side * rng.uniform(-0.45, 0.45)
    grey = (int(rng.integers(60, 140)),) * 3
    if kind == "person":
        other = draw_identity(seed + 104729, int(rng.integers(1, 2**31 - 1)))
        return kind, place_body(build_body(other, float(rng.uniform(0, 2 * np.pi))), where,
                                float(rng.uniform(0, 2 * np.pi)))
    top = float(rng.uniform(2.5, 4.5))
    r = float(rng.uniform(0.05, 0.11))
    p = np.array([[where[0], where[1], 0.0], [where[0], where[1], top]])
    prims = [Primitive("capsule", p, (r, r), grey, "pole")]
    if kind == "sign":
        z0 = float(rng.uniform(0.9, 1.6))
        w, h = float(rng.uniform(0.35, 0.6)), float(rng.uniform(0.4, 0.7))
        lo = np.array([where[0], where[1], z0])
        corners = []
        for z in (z0, z0 + h):
            for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
                corners.append([lo[0] + side[0] * w * sx + toward[0] * 0.03 * sy,
                                lo[1] + side[1] * w * sx + toward[1] * 0.03 * sy, z])
        colours = [(200, 40, 40), (30, 80, 170), (230, 200, 40), (240, 240, 240)]
        prims.append(Primitive("hexa", np.array(corners), (), colours[int(rng.integers(4))], "sign", bias=0.05))
    return kind, prims


def _depth_order(cam: Camera, prims: list[Primitive]) -> list[Primitive]:
    fwd, _, _ = cam.axes()
    keys = [float((p.points.mean(axis=0) - cam.position) @ fwd) - p.bias for p in prims]
    return [prims[i] for i in np.argsort(keys, kind="stable")[::-1]]


def _person_bounds(cam: Camera, prims: list[Primitive]) -> tuple[np.ndarray, np.ndarray]:
    pts, rad = [], []
    for p in prims:
        pts.append(p.points)
        rad.extend(list(p.radii) if p.kind != "hexa" else [0.0] * len(p.points))
    pts = np.vstack(pts)
    uv, depth = project(cam, pts)
    r = np.asarray(rad) * cam.focal_px / depth
    return (uv - r[:, None]).min(axis=0), (uv + r[:, None]).max(axis=0)


def _motion_blur(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    k = np.zeros((5, 5))
    direction = int(rng.integers(4))
    length = int(rng.integers(2, 4))  # a 2- or 3-tap streak
    for i in range(-length // 2, length - length // 2):
        dx, dy = [(i, 0), (0, i), (i, i), (i, -i)][direction]
        k[2 + dy, 2 + dx] = 1.0
    return img.filter(ImageFilter.Kernel((5, 5), k.flatten().tolist(), scale=float(k.sum())))


def render_image(
    seed: int,
    ident: Identity,
    cam: Camera,
    rng: np.random.Generator,
    settings: RenderSettings = RenderSettings(),
    night: bool | None = None,
) -> tuple[Image.Image, dict]:
    """Render ``ident`` once before ``cam``; returns the output-size RGB image and its geometry.

    ``night`` fixes the time of day (the dataset planner decides it, as it is part of the file
    name); ``None`` draws it with ``settings.night_fraction``.
    """
    phase = float(rng.uniform(0, 2 * np.pi))
    position = place_person(cam, rng)
    yaw = float(rng.uniform(0, 2 * np.pi))
    drawn_night = bool(rng.random() < settings.night_fraction)
    night = drawn_night if night is None else bool(night)
    az, el = float(rng.uniform(0, 2 * np.pi)), float(np.radians(rng.uniform(30, 65)))
    sun = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    if night:
        light = Lighting(_unit(np.array([0.2, 0.1, 1.0])), 0.75, 0.35, 0.12, True)
    else:
        light = Lighting(sun, 0.5, 0.65, 0.45, False)
    body = place_body(build_body(ident, phase), position, yaw)

    occluder, occ_prims = "none", []
    if rng.random() < settings.occlusion_fraction:
        occluder, occ_prims = _occluders(seed, cam, position, rng)

    # Detector box: the person's projected extent plus margin, with a detector's jitter.
    lo, hi = _person_bounds(cam, body)
    size = hi - lo
    # Clipped: a real detector shifts boxes a little but does not drop the whole head.
    centre = (lo + hi) / 2 + np.clip(rng.normal(0, 0.035, 2), -0.06, 0.06) * size
    size = size * (1.08 + np.abs(rng.normal(0, 0.06, 2)))
    box_lo = centre - size / 2
    native_h = float(size[1])
    native_w = float(size[0])
    out_h = max(8, int(round(min(native_h, settings.height))))
    out_w = max(4, int(round(out_h * native_w / native_h)))
    ss = settings.supersample
    scale = out_h * ss / native_h
    rh, rw = out_h * ss, out_w * ss

    # Background: ray-cast the ground/backdrop through every render pixel (pixel centres).
    # The background is smooth enough to cast at native resolution and upsample to the render size.
    u = box_lo[0] + (np.arange(out_w) + 0.5) * native_w / out_w
    v = box_lo[1] + (np.arange(out_h) + 0.5) * native_h / out_h
    bg_native = render_background(seed, cam, u, v, position)
    bg_img = Image.fromarray(bg_native.astype(np.uint8))
    if ss > 1:
        bg_img = bg_img.resize((rw, rh), Image.BILINEAR)

    canvas_img = bg_img
    canvas = _Canvas(cam, box_lo, scale, canvas_img)

    # Cast shadow: every primitive projected onto the ground along the sun, drawn into a mask.
    if light.shadow > 0:
        mask = Image.new("L", (rw, rh), 0)
        mdraw = ImageDraw.Draw(mask)
        shadows = [Primitive(p.kind, p.points - np.outer(p.points[:, 2] / light.sun[2], light.sun), p.radii,
                             p.colour, p.part)
                   for p in body + occ_prims]
        canvas.prepare(shadows)
        for p in shadows:
            canvas.primitive(p, light, draw=mdraw, flat=255)
        dark = Image.new("RGB", (rw, rh), (0, 0, 0))
        canvas_img = Image.composite(dark, canvas_img, mask.point(lambda x: int(x * light.shadow)))
        canvas = _Canvas(cam, box_lo, scale, canvas_img)

    canvas.prepare(body + occ_prims)
    for p in _depth_order(cam, body):
        canvas.primitive(p, light)
    occlusion = 0.0
    if occ_prims:
        person_mask = Image.new("1", (rw, rh), 0)
        occ_mask = Image.new("1", (rw, rh), 0)
        pd, od = ImageDraw.Draw(person_mask), ImageDraw.Draw(occ_mask)
        for p in body:
            canvas.primitive(p, light, draw=pd, flat=1)
        for p in _depth_order(cam, occ_prims):
            canvas.primitive(p, light)
            canvas.primitive(p, light, draw=od, flat=1)
        pm, om = np.asarray(person_mask), np.asarray(occ_mask)
        occlusion = float((pm & om).sum() / max(pm.sum(), 1))

    # Sensor chain at native resolution.
    img = canvas_img.resize((out_w, out_h), Image.BOX) if ss > 1 else canvas_img
    arr_noise = 1.5
    if cam.view == 0:
        # Blur only the larger crops: a 5x5 kernel would erase a 25-pixel person entirely.
        if out_h >= 36 and rng.random() < 0.5:
            img = _motion_blur(img, rng)
        arr_noise = float(rng.uniform(1.5, 4))
    if night:
        arr = np.asarray(img, dtype=np.float32) * np.array([0.33, 0.36, 0.45], np.float32)
        arr_noise += float(rng.uniform(5, 9))
    else:
        arr = np.asarray(img, dtype=np.float32)
    arr = arr + rng.normal(0, arr_noise, arr.shape)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if cam.view == 0:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(rng.integers(50, 85)), subsampling=2)
        img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    if img.size != (settings.width, settings.height):
        img = img.resize((settings.width, settings.height), Image.BILINEAR)

    heading, rel = heading_label(cam, position, yaw)
    centre3 = np.array([position[0], position[1], 0.5 * ident.height_m])
    d = centre3 - cam.position
    info = {
        "camera": cam.camid, "view": cam.view, "scene": cam.scene, "altitude": cam.altitude, "pitch": cam.pitch,
        "elevation": round(float(np.degrees(np.arctan2(-d[2], np.hypot(d[0], d[1])))), 3),
        "distance": round(float(np.linalg.norm(d)), 3), "yaw": round(float(np.degrees(yaw)) % 360.0, 3),
        "relative_yaw": round(rel, 3), "heading": heading, "time": "night" if night else "day",
        "occluder": occluder, "occlusion": round(occlusion, 4), "native_height": round(native_h, 2),
        "native_width": round(native_w, 2), "sun_azimuth": round(float(np.degrees(az)) % 360.0, 2),
        "sun_elevation": round(float(np.degrees(el)), 2), "walk_phase": round(phase, 4),
        "x": round(float(position[0]), 3), "y": round(float(position[1]), 3),
    }
    return img, info
