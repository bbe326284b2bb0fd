"""The Gradio ranking demo (installed as ``agreid_kit.apps``)."""
