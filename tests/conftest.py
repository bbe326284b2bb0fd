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

# In a source checkout ``agreid_kit.apps`` / ``agreid_kit.widgets`` are the top-level apps/ and widgets/
# folders (pyproject's package-dir). Resolve them next to the ``agreid_kit`` actually imported, so a
# checkout on PYTHONPATH tests its own apps/ and widgets/, not those of the editable install's tree.
import importlib.util as _ilu
import sys as _sys
from pathlib import Path as _Path

_kit_spec = _ilu.find_spec("agreid_kit")
if _kit_spec is not None and _kit_spec.origin:
    _kit_dir = _Path(_kit_spec.origin).parent

    class _SiblingFolderFinder:
        """``agreid_kit.<apps|widgets>`` -> the checkout's ``<apps|widgets>/`` folder (nothing else)."""

        @staticmethod
        def find_spec(fullname, path=None, target=None):
            if fullname not in ("agreid_kit.apps", "agreid_kit.widgets"):
                return None
            folder = _kit_dir.parent / fullname.rsplit(".", 1)[1]
            if (_kit_dir / folder.name).exists() or not (folder / "__init__.py").is_file():
                return None  # an installed layout: the package is really under agreid_kit/
            return _ilu.spec_from_file_location(fullname, folder / "__init__.py",
                                                submodule_search_locations=[str(folder)])

    _sys.meta_path.insert(0, _SiblingFolderFinder)
