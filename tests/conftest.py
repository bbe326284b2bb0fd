import os

# Nothing may be downloaded at test time: make any accidental hub access fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MPLBACKEND", "Agg")

# The decoded-image cache goes to a folder of this test session, never the user's ~/.cache.
if "AGREID_IMAGE_CACHE" not in os.environ:
    import tempfile

    os.environ["AGREID_IMAGE_CACHE"] = tempfile.mkdtemp(prefix="agreid-test-image-cache-")
# Test logs stay one line per event.
os.environ.setdefault("AGREID_PROGRESS", "lines")
