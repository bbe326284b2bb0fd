"""SynthAG generation parameters and the named presets (tiny / small / full)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from agreid_kit.synth.cameras import FIRST_GROUND_CAMERA, MAX_AERIAL_CAMERAS

# The CARGO reader knows Cam1..Cam13; ground and wearable cameras share Cam6..Cam13.
MAX_CAMERA = 13


@dataclass(frozen=True)
class SynthConfig:
    """Everything that determines a SynthAG dataset (besides the seed)."""

    n_ids: int = 400
    images_per_id: int = 25
    aerial_fraction: float = 0.4  # share of each identity's images taken by aerial cameras
    wearable_images_per_id: int = 0  # only with n_wearable > 0
    test_fraction: float = 0.5  # identities held out for query/gallery
    n_aerial: int = 3
    n_ground: int = 5
    n_wearable: int = 0
    altitude_range: tuple[float, float] = (15.0, 75.0)
    pitch_range: tuple[float, float] = (30.0, 90.0)
    ground_height_range: tuple[float, float] = (1.5, 5.0)
    ground_pitch_range: tuple[float, float] = (0.0, 25.0)
    aerial_person_px: tuple[float, float] = (34.0, 64.0)  # native person height at each aerial camera's look distance
    ground_person_px: tuple[float, float] = (110.0, 220.0)
    n_scenes: int = 6
    height: int = 256
    width: int = 128
    night_fraction: float = 0.25
    occlusion_fraction: float = 0.2
    jpeg_quality: int = 92

    def validate(self) -> "SynthConfig":
        """Raise ValueError naming the parameter for anything that cannot produce a usable dataset."""

        def bad(name: str, expected: str) -> None:
            raise ValueError(f"SynthAG parameter {name}={getattr(self, name)!r} is invalid: expected {expected}")

        if self.n_ids < 4:
            bad("n_ids", "at least 4 identities (some for training, some for testing)")
        if not 0.0 < self.test_fraction < 1.0:
            bad("test_fraction", "a fraction strictly between 0 and 1")
        if round(self.n_ids * self.test_fraction) < 2 or self.n_ids - round(self.n_ids * self.test_fraction) < 2:
            bad("n_ids", "enough identities for at least 2 training and 2 test identities")
        if not 2 <= self.n_aerial <= MAX_AERIAL_CAMERAS:
            bad("n_aerial",
                f"2..{MAX_AERIAL_CAMERAS} aerial cameras (Cam1..Cam5 in CARGO's layout; 2 so A<->A has positives)")
        if self.n_ground < 2:
            bad("n_ground", "at least 2 ground cameras (so G<->G has positives)")
        if FIRST_GROUND_CAMERA + self.n_ground + self.n_wearable - 1 > MAX_CAMERA:
            bad("n_ground",
                f"n_ground + n_wearable <= {MAX_CAMERA - FIRST_GROUND_CAMERA + 1} (ground/wearable cameras are "
                "Cam6..Cam13)")
        if self.n_wearable < 0:
            bad("n_wearable", ">= 0")
        if self.wearable_images_per_id < 0 or (self.wearable_images_per_id > 0 and self.n_wearable == 0):
            bad("wearable_images_per_id", "0, or > 0 only together with n_wearable > 0")
        n_aerial_img, n_ground_img = self.view_counts()
        if n_aerial_img < 2 or n_ground_img < 2:
            bad("images_per_id", "enough images for >= 2 aerial and >= 2 ground images per identity "
                                 f"(got {n_aerial_img} aerial, {n_ground_img} ground with "
                                 f"aerial_fraction={self.aerial_fraction})")
        if not 0.0 < self.aerial_fraction < 1.0:
            bad("aerial_fraction", "a fraction strictly between 0 and 1")
        for name, lo, hi in (("altitude_range", 15.0, 75.0), ("pitch_range", 30.0, 90.0),
                             ("ground_height_range", 1.5, 5.0), ("ground_pitch_range", 0.0, 25.0)):
            a, b = getattr(self, name)
            if not lo <= a <= b <= hi:
                bad(name, f"(low, high) with {lo} <= low <= high <= {hi}")
        for name in ("aerial_person_px", "ground_person_px"):
            a, b = getattr(self, name)
            if not 8 <= a <= b:
                bad(name, "(low, high) native person heights in pixels with 8 <= low <= high")
        if self.height < 32 or self.width < 16:
            bad("height", "an output size of at least 32 x 16 pixels (height x width)")
        for name in ("night_fraction", "occlusion_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                bad(name, "a fraction in [0, 1]")
        if self.n_scenes < 1:
            bad("n_scenes", ">= 1")
        if not 50 <= self.jpeg_quality <= 100:
            bad("jpeg_quality", "50..100")
        return self

    def view_counts(self) -> tuple[int, int]:
        """Aerial and ground images per identity."""
        rest = self.images_per_id - self.wearable_images_per_id
        n_aerial = max(2, int(round(rest * self.aerial_fraction)))
        return n_aerial, rest - n_aerial

    @property
    def n_images(self) -> int:
        return self.n_ids * self.images_per_id

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


PRESETS: dict[str, dict[str, Any]] = {
    # CI: 40 identities x 10 images, 2 aerial + 3 ground cameras.
    "tiny": dict(n_ids=40, images_per_id=10, n_aerial=2, n_ground=3, n_scenes=3),
    # The default demo: 400 identities, 10,000 images, half the identities for testing.
    "small": dict(n_ids=400, images_per_id=25, n_aerial=3, n_ground=5),
    # The pretraining set of the kit-trained initialisation (agreid_kit.pretrained): many identities, fewer
    # images each, rendered with another seed than SynthAG-small so its people are independent draws.
    # Nearly every identity trains; the 10 % test identities only check the pretrained backbone.
    "pretrain": dict(n_ids=3000, images_per_id=15, n_aerial=3, n_ground=5, test_fraction=0.1),
    # CARGO scale: 5,000 identities on CARGO's 13 cameras (5 aerial, 8 ground).
    "full": dict(n_ids=5000, images_per_id=22, n_aerial=5, n_ground=8, n_scenes=8),
}


def make_config(preset: str, **overrides: Any) -> SynthConfig:
    """The preset's config with ``overrides`` applied, validated."""
    if preset not in PRESETS:
        raise ValueError(f"unknown SynthAG preset {preset!r}; valid presets: {sorted(PRESETS)}")
    names = {f.name for f in fields(SynthConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown SynthAG parameter(s) {unknown}; valid: {sorted(names)}")
    params = {**PRESETS[preset], **overrides}
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    return SynthConfig(**params).validate()
