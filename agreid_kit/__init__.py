"""agreid-kit: an analysis workbench for aerial-ground person re-identification.

The library is thin and import-light: heavy dependencies (torch, timm, diffusers, umap) are
imported by the modules that need them, never here.
"""

__version__ = "0.1.0"

VIEW_NAMES = ("aerial", "ground", "wearable")
"""View ids used everywhere in the kit: 0 aerial/UAV, 1 ground/CCTV, 2 wearable."""
