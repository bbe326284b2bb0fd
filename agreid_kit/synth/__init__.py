"""SynthAG: the embedded, procedurally rendered aerial-ground person benchmark.

``render_dataset("small", "data/synthag-small-s0")`` writes CARGO's layout plus meta.csv, a
manifest and a difficulty card; ``load_dataset("synthag", ROOT, "A<->G")`` reads it.
"""

from agreid_kit.synth.difficulty import difficulty_card, format_difficulty_card, write_difficulty_card
from agreid_kit.synth.generate import (
    GENERATOR_VERSION,
    ensure_synthag,
    plan_dataset,
    read_manifest,
    read_meta,
    render_dataset,
    render_job,
)
from agreid_kit.synth.presets import PRESETS, SynthConfig, make_config
from agreid_kit.synth.sheets import contact_sheet_cameras, contact_sheet_figure, contact_sheet_identity

__all__ = [
    "GENERATOR_VERSION",
    "PRESETS",
    "SynthConfig",
    "contact_sheet_cameras",
    "contact_sheet_figure",
    "contact_sheet_identity",
    "difficulty_card",
    "ensure_synthag",
    "format_difficulty_card",
    "make_config",
    "plan_dataset",
    "read_manifest",
    "read_meta",
    "render_dataset",
    "render_job",
    "write_difficulty_card",
]
