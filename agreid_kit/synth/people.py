"""Procedural people: a seeded identity draw and its articulated body as 3D primitives.

An identity is every appearance choice (body shape, skin, hair, clothing, accessories). The draw
uses shared, skewed palettes so many identities agree on most attributes: colour alone does not
solve the task. The body is built in a person-local frame (x right, y forward, z up, metres) and
moved into the world by ``place_body``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

# Palettes are small and skewed towards dark/neutral clothes, as in real street scenes.
UPPER_COLOURS = {
    "black": (28, 28, 30), "white": (225, 225, 220), "grey": (120, 120, 125), "navy": (30, 40, 85),
    "blue": (50, 95, 170), "red": (170, 35, 40), "green": (50, 110, 60), "yellow": (215, 185, 50),
    "beige": (190, 165, 125), "pink": (215, 140, 165),
}
UPPER_COLOUR_P = [0.2, 0.15, 0.14, 0.12, 0.09, 0.07, 0.06, 0.05, 0.07, 0.05]
LOWER_COLOURS = {
    "black": (25, 25, 28), "denim": (55, 75, 115), "grey": (105, 105, 110), "khaki": (160, 140, 95),
    "navy": (28, 35, 70), "brown": (95, 65, 45), "white": (210, 210, 205),
}
LOWER_COLOUR_P = [0.3, 0.25, 0.14, 0.1, 0.1, 0.06, 0.05]
HAIR_COLOURS = {"black": (22, 18, 16), "brown": (80, 52, 32), "blond": (190, 160, 95), "grey": (150, 150, 150),
                "red": (140, 60, 30)}
HAIR_COLOUR_P = [0.45, 0.3, 0.12, 0.08, 0.05]
SKIN_TONES = [(242, 206, 180), (224, 178, 140), (198, 150, 110), (160, 110, 75), (112, 76, 52), (80, 55, 40)]
SHOE_COLOURS = {"black": (20, 20, 22), "white": (230, 230, 230), "brown": (85, 55, 35), "grey": (120, 120, 120)}
SHOE_COLOUR_P = [0.45, 0.3, 0.15, 0.1]
ACCESSORY_COLOURS = [(20, 20, 22), (60, 60, 65), (120, 30, 30), (40, 60, 110), (150, 120, 80), (200, 200, 195)]

UPPER_TYPES = ["t-shirt", "long-sleeve", "jacket", "dress"]
UPPER_TYPE_P = [0.38, 0.27, 0.27, 0.08]
LOWER_TYPES = ["trousers", "shorts", "skirt"]
LOWER_TYPE_P = [0.72, 0.16, 0.12]
PATTERNS = ["solid", "stripes", "checks", "logo"]
PATTERN_P = [0.6, 0.14, 0.1, 0.16]
HAIR_STYLES = ["short", "bald", "long", "ponytail", "bun"]
HAIR_STYLE_P = [0.48, 0.07, 0.25, 0.12, 0.08]
HEADWEAR = ["none", "cap", "hat"]
HEADWEAR_P = [0.74, 0.16, 0.1]
BAGS = ["none", "backpack", "shoulder-bag"]
BAG_P = [0.5, 0.3, 0.2]
CARRIED = ["none", "hand-bag", "phone", "bottle"]
CARRIED_P = [0.66, 0.14, 0.12, 0.08]
FOOTWEAR = ["shoes", "sneakers", "boots"]
FOOTWEAR_P = [0.45, 0.4, 0.15]
BUILDS = ["slim", "medium", "broad"]
HEIGHTS = ["short", "average", "tall"]
VOLUMES = ["thin", "normal", "heavy"]

# The attribute columns every SynthAG record carries (AG-ReID-like names where they exist).
ATTRIBUTE_NAMES = (
    "build", "height", "body_volume", "hair_colour", "hair_style", "head_accessory", "glasses",
    "upper_type", "upper_colour", "upper_pattern", "lower_type", "lower_colour", "footwear",
    "footwear_colour", "bag", "carried_item",
)


@dataclass(frozen=True)
class Identity:
    """Every appearance choice of one person; ``attributes()`` gives the recorded labels."""

    pid: int
    height_m: float
    build: float  # shoulder/hip width factor (gender-like build)
    volume: float  # depth factor (body volume)
    skin: tuple[int, int, int]
    hair_style: str
    hair_colour: str
    headwear: str
    headwear_colour: tuple[int, int, int]
    glasses: bool
    upper_type: str
    upper_colour: str
    upper_pattern: str
    pattern_colour: tuple[int, int, int]
    inner_colour: tuple[int, int, int]  # shirt under an open jacket
    lower_type: str
    lower_colour: str
    footwear: str
    shoe_colour: str
    bag: str
    bag_colour: tuple[int, int, int]
    carried: str
    carried_colour: tuple[int, int, int]
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def attributes(self) -> dict[str, str]:
        build = BUILDS[int(np.digitize(self.build, [0.93, 1.07]))]
        height = HEIGHTS[int(np.digitize(self.height_m, [1.64, 1.82]))]
        volume = VOLUMES[int(np.digitize(self.volume, [0.92, 1.1]))]
        return {
            "build": build, "height": height, "body_volume": volume, "hair_colour": self.hair_colour,
            "hair_style": self.hair_style, "head_accessory": self.headwear, "glasses": "yes" if self.glasses else "no",
            "upper_type": self.upper_type, "upper_colour": self.upper_colour, "upper_pattern": self.upper_pattern,
            "lower_type": "dress" if self.upper_type == "dress" else self.lower_type,
            "lower_colour": self.upper_colour if self.upper_type == "dress" else self.lower_colour,
            "footwear": self.footwear, "footwear_colour": self.shoe_colour, "bag": self.bag,
            "carried_item": self.carried,
        }

    def to_dict(self) -> dict:
        return asdict(self)


def _pick(rng: np.random.Generator, values, p):
    return values[int(rng.choice(len(values), p=np.asarray(p) / np.sum(p)))]


def draw_identity(seed: int, pid: int) -> Identity:
    """The identity ``pid`` of the dataset seeded ``seed`` (independent of any other draw)."""
    rng = np.random.default_rng([int(seed), int(pid), 7411])
    build = float(np.clip(rng.normal(1.0, 0.09), 0.8, 1.22))
    upper_type = _pick(rng, UPPER_TYPES, UPPER_TYPE_P)
    lower_type = _pick(rng, LOWER_TYPES, LOWER_TYPE_P)
    hair_style = _pick(rng, HAIR_STYLES, HAIR_STYLE_P)
    colour_names = list(UPPER_COLOURS)
    upper_colour = _pick(rng, colour_names, UPPER_COLOUR_P)
    pattern = _pick(rng, PATTERNS, PATTERN_P)
    other = [c for c in colour_names if c != upper_colour]
    return Identity(
        pid=int(pid),
        height_m=float(np.clip(rng.normal(1.73, 0.09), 1.5, 1.98)),
        build=build,
        volume=float(np.clip(rng.normal(1.0, 0.1), 0.8, 1.3)),
        skin=SKIN_TONES[int(rng.integers(len(SKIN_TONES)))],
        hair_style=hair_style,
        hair_colour=_pick(rng, list(HAIR_COLOURS), HAIR_COLOUR_P),
        headwear=_pick(rng, HEADWEAR, HEADWEAR_P),
        headwear_colour=ACCESSORY_COLOURS[int(rng.integers(len(ACCESSORY_COLOURS)))],
        glasses=bool(rng.random() < 0.2),
        upper_type=upper_type,
        upper_colour=upper_colour,
        upper_pattern=pattern,
        pattern_colour=UPPER_COLOURS[other[int(rng.integers(len(other)))]],
        inner_colour=UPPER_COLOURS[_pick(rng, ["white", "grey", "black", "blue"], [0.4, 0.25, 0.2, 0.15])],
        lower_type=lower_type,
        lower_colour=_pick(rng, list(LOWER_COLOURS), LOWER_COLOUR_P),
        footwear=_pick(rng, FOOTWEAR, FOOTWEAR_P),
        shoe_colour=_pick(rng, list(SHOE_COLOURS), SHOE_COLOUR_P),
        bag=_pick(rng, BAGS, BAG_P),
        bag_colour=ACCESSORY_COLOURS[int(rng.integers(len(ACCESSORY_COLOURS)))],
        carried=_pick(rng, CARRIED, CARRIED_P),
        carried_colour=ACCESSORY_COLOURS[int(rng.integers(len(ACCESSORY_COLOURS)))],
    )


@dataclass
class Primitive:
    """One solid of a body. ``kind``: ``capsule`` (2 points, 2 radii), ``sphere`` (1 point, 1 radius)
    or ``hexa`` (8 corners: bottom ring then top ring, each ring -x-y, +x-y, +x+y, -x+y).
    ``bias`` pulls a part forward in painter's order (hats over hair, straps over the torso)."""

    kind: str
    points: np.ndarray
    radii: tuple[float, ...]
    colour: tuple[int, int, int]
    part: str
    pattern: str = "solid"
    pattern_colour: tuple[int, int, int] | None = None
    bias: float = 0.0


def _hexa(x0, x1, y0, y1, z0, z1, top_scale=1.0, top_shift=(0.0, 0.0), bottom_scale=1.0) -> np.ndarray:
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hx, hy = (x1 - x0) / 2, (y1 - y0) / 2
    ring = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float)
    bottom = np.c_[cx + ring[:, 0] * hx * bottom_scale, cy + ring[:, 1] * hy * bottom_scale, np.full(4, z0)]
    top = np.c_[cx + top_shift[0] + ring[:, 0] * hx * top_scale, cy + top_shift[1] + ring[:, 1] * hy * top_scale,
                np.full(4, z1)]
    return np.vstack([bottom, top])


def build_body(ident: Identity, phase: float) -> list[Primitive]:
    """The body of ``ident`` at walking ``phase`` (radians) in the person-local frame."""
    H, b, vol = ident.height_m, ident.build, ident.volume
    upper = UPPER_COLOURS[ident.upper_colour]
    lower = upper if ident.upper_type == "dress" else LOWER_COLOURS[ident.lower_colour]
    skin, hair = ident.skin, HAIR_COLOURS[ident.hair_colour]
    shoe = SHOE_COLOURS[ident.shoe_colour]
    prims: list[Primitive] = []

    z_knee, z_hip, z_waist, z_sh, z_neck = 0.27 * H, 0.5 * H, 0.6 * H, 0.81 * H, 0.855 * H
    r_head = 0.062 * H
    z_head = 0.925 * H
    hip_x = 0.055 * H * b
    sh_x = 0.118 * H * b
    depth = 0.05 * H * vol
    swing = 0.42 * np.sin(phase)  # thigh angle; the other leg mirrors it

    # Legs: thigh and shin per side, swinging opposite; the rear shin bends at the knee.
    thigh_len, shin_len = z_hip - z_knee, z_knee - 0.045 * H
    leg_r = 0.034 * H * (0.9 + 0.2 * vol)
    for side, s in ((-1, 1.0), (1, -1.0)):
        a = swing * s
        hip = np.array([side * hip_x, 0.0, z_hip])
        knee = hip + thigh_len * np.array([0.0, np.sin(a), -np.cos(a)])
        bend = a - 0.5 * max(0.0, -a) - 0.1
        ankle = knee + shin_len * np.array([0.0, np.sin(bend), -np.cos(bend)])
        ankle[2] = max(ankle[2], 0.04 * H)
        shin_colour = skin if ident.lower_type in ("shorts", "skirt") or ident.upper_type == "dress" else lower
        if ident.upper_type != "dress" and ident.lower_type != "skirt":
            prims.append(Primitive("capsule", np.array([hip, knee]), (leg_r * 1.1, leg_r), lower, "thigh"))
        elif ident.upper_type == "dress" or ident.lower_type == "skirt":
            prims.append(Primitive("capsule", np.array([knee + [0, 0, 0.04 * H], knee]), (leg_r * 0.9, leg_r * 0.9),
                                   skin, "thigh"))
        prims.append(Primitive("capsule", np.array([knee, ankle]), (leg_r, leg_r * 0.8), shin_colour, "shin"))
        toe = ankle + np.array([0.0, 0.085 * H, -0.03 * H])
        foot_r = 0.024 * H * (1.25 if ident.footwear == "boots" else 1.0)
        prims.append(Primitive("capsule", np.array([ankle - [0, 0.02 * H, 0], toe]),
                               (foot_r, foot_r * 0.85), shoe, "foot"))
        if ident.footwear == "sneakers":
            # A white sole band makes sneakers readable from the ground views.
            prims.append(Primitive("capsule", np.array([ankle + [0, 0, -0.02 * H], toe + [0, 0, -0.005 * H]]),
                                   (foot_r * 0.6, foot_r * 0.5), (235, 235, 235), "sole", bias=-0.01))

    # Hips (in the lower garment) and torso (tapered block, wider at the shoulders).
    if ident.upper_type == "dress" or ident.lower_type == "skirt":
        flare = 1.55 if ident.upper_type == "dress" else 1.45
        z_hem = z_knee + (0.02 if ident.upper_type == "dress" else 0.07) * H
        prims.append(Primitive("hexa", _hexa(-hip_x * 1.45, hip_x * 1.45, -depth, depth, z_hem, z_waist,
                                             bottom_scale=flare, top_scale=0.85), (), lower, "skirt"))
    else:
        prims.append(Primitive("hexa",
                               _hexa(-hip_x * 1.5, hip_x * 1.5, -depth * 0.95, depth * 0.95,
                                     z_hip - 0.02 * H, z_waist), (),
                               lower, "hips"))
    torso_colour = upper
    jacket = ident.upper_type == "jacket"
    torso = _hexa(-sh_x * 0.82, sh_x * 0.82, -depth, depth, z_waist - 0.01 * H, z_sh + 0.015 * H, top_scale=1.22,
                  bottom_scale=1.0)
    pattern = ident.upper_pattern
    prims.append(Primitive("hexa", torso, (), torso_colour, "torso", pattern, ident.pattern_colour))
    if jacket:
        # The open front shows the shirt underneath: a strip on the chest.
        strip = _hexa(-0.025 * H, 0.025 * H, depth * 0.98, depth * 1.04, z_waist + 0.02 * H, z_sh - 0.01 * H)
        prims.append(Primitive("hexa", strip, (), ident.inner_colour, "jacket-opening", bias=0.02))

    # Arms swing against the legs.
    arm_r = 0.027 * H * (0.9 + 0.2 * vol)
    upper_arm_len, fore_len = 0.17 * H, 0.15 * H
    sleeve_long = ident.upper_type in ("long-sleeve", "jacket")
    for side, s in ((-1, -1.0), (1, 1.0)):
        a = 0.5 * swing * s
        shoulder = np.array([side * sh_x * 0.98, 0.0, z_sh - 0.01 * H])
        elbow = shoulder + upper_arm_len * np.array([side * 0.12, np.sin(a), -np.cos(a)])
        fa = a + 0.25
        wrist = elbow + fore_len * np.array([side * 0.05, np.sin(fa), -np.cos(fa)])
        prims.append(Primitive("capsule", np.array([shoulder, elbow]), (arm_r * 1.1, arm_r),
                               torso_colour, "upper-arm"))
        prims.append(Primitive("capsule", np.array([elbow, wrist]), (arm_r * 0.95, arm_r * 0.8),
                               torso_colour if sleeve_long else skin, "forearm"))
        prims.append(Primitive("sphere", wrist[None] + [0, 0, -0.02 * H], (arm_r * 0.9,), skin, "hand"))
        if side == 1 and ident.carried != "none":
            item = ident.carried
            if item == "hand-bag":
                box = _hexa(-0.02 * H, 0.02 * H, -0.07 * H, 0.07 * H, -0.16 * H, -0.03 * H)
            elif item == "phone":
                box = _hexa(-0.012 * H, 0.012 * H, -0.01 * H, 0.035 * H, -0.05 * H, -0.01 * H)
            else:
                box = _hexa(-0.016 * H, 0.016 * H, -0.016 * H, 0.016 * H, -0.1 * H, -0.0 * H)
            prims.append(Primitive("hexa", box + wrist, (), ident.carried_colour, "carried", bias=0.01))

    # Neck, head, hair, headwear, glasses.
    prims.append(Primitive("capsule", np.array([[0, 0, z_sh], [0, 0.005 * H, z_neck + 0.02 * H]]),
                           (0.026 * H, 0.024 * H), skin, "neck"))
    head = np.array([0.0, 0.008 * H, z_head])
    prims.append(Primitive("sphere", head[None], (r_head,), skin, "head"))
    if ident.hair_style != "bald":
        prims.append(Primitive("sphere", (head + [0, -0.3 * r_head, 0.22 * r_head])[None],
                               (r_head * 1.03,), hair, "hair"))
    if ident.hair_style == "long":
        prims.append(Primitive("hexa", _hexa(-r_head * 0.95, r_head * 0.95, -r_head * 1.05, -r_head * 0.35,
                                             z_sh - 0.02 * H, z_head + 0.3 * r_head), (), hair, "long-hair"))
    elif ident.hair_style == "ponytail":
        prims.append(Primitive("capsule",
                               np.array([head + [0, -r_head * 1.05, 0.1 * r_head],
                                         head + [0, -r_head * 1.45, -1.6 * r_head]]),
                               (r_head * 0.35, r_head * 0.25), hair, "ponytail"))
    elif ident.hair_style == "bun":
        prims.append(Primitive("sphere", (head + [0, -r_head * 0.7, r_head * 0.85])[None], (r_head * 0.45,), hair,
                               "bun", bias=0.01))
    if ident.glasses:
        eye = head + [0, r_head * 0.93, 0.15 * r_head]
        prims.append(Primitive("capsule", np.array([eye - [r_head * 0.55, 0, 0], eye + [r_head * 0.55, 0, 0]]),
                               (r_head * 0.16, r_head * 0.16), (15, 15, 18), "glasses", bias=0.03))
    if ident.headwear == "hat":
        top = _hexa(-r_head * 0.85, r_head * 0.85, -r_head * 0.85, r_head * 0.85, z_head + 0.35 * r_head,
                    z_head + 1.3 * r_head,
                    top_scale=0.85)
        brim = _hexa(-r_head * 1.6, r_head * 1.6, -r_head * 1.6, r_head * 1.6, z_head + 0.3 * r_head,
                     z_head + 0.42 * r_head)
        prims.append(Primitive("hexa", brim, (), ident.headwear_colour, "hat-brim", bias=0.05))
        prims.append(Primitive("hexa", top, (), ident.headwear_colour, "hat", bias=0.06))
    elif ident.headwear == "cap":
        prims.append(Primitive("sphere", (head + [0, -0.1 * r_head, 0.38 * r_head])[None], (r_head * 1.0,),
                               ident.headwear_colour, "cap",
                               bias=0.05))
        visor = _hexa(-r_head * 0.6, r_head * 0.6, r_head * 0.5, r_head * 1.6, z_head + 0.3 * r_head,
                      z_head + 0.4 * r_head)
        prims.append(Primitive("hexa", visor, (), ident.headwear_colour, "cap-visor", bias=0.06))

    # Bags.
    if ident.bag == "backpack":
        bp = _hexa(-sh_x * 0.62, sh_x * 0.62, -depth - 0.085 * H, -depth + 0.005 * H, z_waist + 0.01 * H,
                   z_sh - 0.005 * H)
        prims.append(Primitive("hexa", bp, (), ident.bag_colour, "backpack"))
        for side in (-1, 1):
            prims.append(Primitive("capsule", np.array([[side * sh_x * 0.5, depth * 1.02, z_sh - 0.01 * H],
                                                        [side * sh_x * 0.55, depth * 1.02, z_waist + 0.04 * H]]),
                                   (0.008 * H, 0.008 * H), ident.bag_colour, "strap", bias=0.02))
    elif ident.bag == "shoulder-bag":
        bag = _hexa(sh_x * 0.9, sh_x * 0.9 + 0.04 * H, -0.06 * H, 0.06 * H, z_hip - 0.02 * H, z_hip + 0.1 * H)
        prims.append(Primitive("hexa", bag, (), ident.bag_colour, "shoulder-bag"))
        prims.append(Primitive("capsule",
                               np.array([[-sh_x * 0.75, depth * 1.03, z_sh],
                                         [sh_x * 0.9, depth * 1.03, z_hip + 0.1 * H]]),
                               (0.008 * H, 0.008 * H), ident.bag_colour, "strap", bias=0.02))
    return prims


def place_body(prims: list[Primitive], position: np.ndarray, yaw: float) -> list[Primitive]:
    """Move local-frame primitives to world ``position`` (x, y on the ground) facing ``yaw`` (radians)."""
    fwd = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
    basis = np.stack([right, fwd, np.array([0.0, 0.0, 1.0])])  # rows: local x, y, z axes in world
    origin = np.array([position[0], position[1], 0.0])
    out = []
    for p in prims:
        out.append(Primitive(p.kind, p.points @ basis + origin, p.radii, p.colour, p.part, p.pattern,
                             p.pattern_colour, p.bias))
    return out
