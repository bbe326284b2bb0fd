"""ipywidgets views over library functions (installed as ``agreid_kit.widgets``)."""
