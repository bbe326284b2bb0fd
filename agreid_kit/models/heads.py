"""Classification heads (re-exported from ``base`` so methods import them from one place)."""

from agreid_kit.models.base import BNNeckHead

__all__ = ["BNNeckHead"]
