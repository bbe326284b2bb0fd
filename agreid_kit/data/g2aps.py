"""G2APS-ReID reader. It shares LAGPeR's layout (training folder + official list files), so both
live in ``agreid_kit.data.lagper``; this module is the name the registry and users look for."""

from agreid_kit.data.lagper import G2APS_PROTOCOLS, G2APS_TREE, load_g2aps, parse_g2aps_name

__all__ = ["G2APS_PROTOCOLS", "G2APS_TREE", "load_g2aps", "parse_g2aps_name"]
