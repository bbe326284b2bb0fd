"""Models behind one entry point, ``create_model``."""
