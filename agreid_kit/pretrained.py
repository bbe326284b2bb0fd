"""Kit-trained initialisations: small ViT backbones pretrained by the kit on SynthAG identities.

The ``paper`` presets start from ImageNet weights (a local timm file). The ``cpu`` presets train a
small ViT on 2 CPU cores, where a from-scratch start cannot converge within the main job's budget.
They start instead from a backbone the kit itself pretrained, as the paper starts from ImageNet:
supervised ReID training (CE with label smoothing + soft-margin triplet) on **SynthAG-pretrain**, a
separately rendered SynthAG set whose identities are independent draws (the identity generator is
seeded by ``(dataset seed, pid)``; SynthAG-pretrain uses seed 1, SynthAG-small seed 0), so no person
of any SynthAG-small split is seen in pretraining. The file ships with the kit
(``agreid_kit/weights/<name>.safetensors``) next to a JSON card holding its exact recipe, the
pretraining data's content hash, the command that reproduces it (``agreid pretrain``), its metrics
on SynthAG-pretrain's own test identities and the file's SHA-256.

``pretrained="kit:<name>"`` in a model config selects a kit init; ``pretrained=None`` trains from
random weights (``--pretrained none`` on the CLI).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

KIT_PREFIX = "kit:"
WEIGHTS_DIR = Path(__file__).parent / "weights"
# The backbone every cpu preset starts from (vit, sdreid, vdt, vif, visa): one recipe, a fair comparison.
DEFAULT_KIT_INIT = "synthag-vit128"


def is_kit_init(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(KIT_PREFIX)


def kit_init_files(name: str) -> tuple[Path, Path]:
    """(weights file, card file) of kit init ``name`` (existing or not)."""
    return WEIGHTS_DIR / f"{name}.safetensors", WEIGHTS_DIR / f"{name}.json"


def available_kit_inits() -> list[str]:
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors")) if WEIGHTS_DIR.is_dir() else []


def kit_init_card(name: str) -> dict[str, Any]:
    weights, card = kit_init_files(name)
    if not weights.is_file() or not card.is_file():
        raise FileNotFoundError(
            f"kit init {name!r} is not installed ({weights} / {card.name} missing); available: "
            f"{available_kit_inits()}. "
            f"Make it with `agreid pretrain --name {name}`, or train from scratch with --pretrained none"
        )
    return json.loads(card.read_text())


def architecture_of(config: Any) -> dict[str, Any]:
    """The fields of a ViT model config that a backbone's weights depend on."""
    get = (lambda k: config.get(k)) if isinstance(config, dict) else (lambda k: getattr(config, k, None))
    img = get("img_size")
    return {
        "arch": get("arch"),
        "img_size": list(img) if img is not None else None,
        "embed_dim": get("embed_dim"),
        "depth": get("depth"),
        "num_heads": get("num_heads"),
        "stem": get("stem") or "patch",
    }


def load_kit_backbone(backbone, name: str, architecture: dict[str, Any], verbose: bool = True) -> None:
    """Load kit init ``name`` into a freshly built timm ViT ``backbone`` (strict: every tensor, same shapes)."""
    from safetensors.torch import load_file

    card = kit_init_card(name)
    want = card.get("architecture", {})
    diff = {k: (want.get(k),
                architecture.get(k)) for k in set(want) | set(architecture) if want.get(k) != architecture.get(k)}
    if diff:
        raise ValueError(
            f"kit init {name!r} was trained as {want}; this model asks for {architecture} "
            f"(differs in {sorted(diff)}): keep the cpu preset's backbone or pass --pretrained none"
        )
    weights, _ = kit_init_files(name)
    state = load_file(str(weights))
    own = backbone.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"kit init {weights}: missing keys {missing[:8]}, unexpected keys {unexpected[:8]}")
    backbone.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
    if verbose:
        data = card.get("data", {})
        print(f"initialised from kit init {name!r} ({weights.name}: pretrained on "
              f"{data.get('name', 'SynthAG-pretrain')}, "
              f"{data.get('n_ids', '?')} ids disjoint from SynthAG-small)")
