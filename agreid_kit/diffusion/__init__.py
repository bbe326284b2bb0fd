"""SD-ReID stage 2: view-conditioned diffusion of ID features."""
