"""Losses: ReID losses (``reid``) and the other methods' losses (``methods``)."""
