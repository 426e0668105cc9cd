"""Import the field's model code on machines where torchvision cannot be imported.

``open_clip`` and ``timm`` import torchvision at module level (transforms, datasets,
``FrozenBatchNorm2d``) although their model code never calls it; on the CPU machines here
torchvision is absent or fails to import (``operator torchvision::nms does not exist``).
:func:`import_without_torchvision` imports them with a *scoped* stand-in for torchvision:

* only when the real torchvision cannot be imported (with it, plain imports are used);
* every name the stand-in hands out is a class that raises ImportError when used, so a code
  path that really needs torchvision (open_clip's own transforms) fails loudly; bindery's
  encoders preprocess with :mod:`pipeline.encoders.image_transform` instead;
* the stand-in is removed from ``sys.meta_path`` and ``sys.modules`` right after, and
  transformers' lru-cached ``is_torchvision_available()`` is evaluated before it is installed,
  so no later import sees a torchvision that is not there.

``ebind``'s package ``__init__`` imports torchaudio, torchvision and torchcodec (its data
loaders). :func:`ebind_module` imports one of its model modules without running the package
``__init__`` files, so its model code (Perception Encoder, ImageBind's audio tower, Uni3D,
``MLPProjector``) is used as released.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
import threading
import types
from pathlib import Path

from pipeline.encoders.base import EncoderError

log = logging.getLogger(__name__)
_LOCK = threading.Lock()


class _Unavailable(type):
    """Class attributes (``InterpolationMode.BICUBIC``) are read at import time: give names back."""

    def __getattr__(cls, name: str) -> str:
        if name.startswith("__"):
            raise AttributeError(name)
        return f"{cls.__name__}.{name}"


def _unavailable(module: str, name: str) -> type:
    def refuse(self, *args, **kwargs):
        raise ImportError(f"{module}.{name} needs torchvision, which cannot be imported on this machine")

    return _Unavailable(name, (), {"__init__": refuse, "__module__": module, "__call__": refuse})


class _StandInModule(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        value = _unavailable(self.__name__, name)
        setattr(self, name, value)
        return value


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandInModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module) -> None:
        return None


def _purge_torchvision() -> None:
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]


def torchvision_works() -> bool:
    if "torchvision" in sys.modules and not isinstance(sys.modules["torchvision"], _StandInModule):
        return True
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        import torchvision  # noqa: F401
    except Exception as exc:  # a build for another torch: RuntimeError from its C++ ops
        log.debug("torchvision does not import here: %s", exc)
        _purge_torchvision()
        return False
    return True


def import_without_torchvision(name: str, extra: str) -> types.ModuleType:
    """``importlib.import_module(name)``, with the scoped stand-in when torchvision cannot be imported;
    an EncoderError naming ``bindery[<extra>]`` when the package is not installed."""
    with _LOCK:
        if name in sys.modules:
            return sys.modules[name]
        if importlib.util.find_spec(name.split(".")[0]) is None:
            raise EncoderError(f"{name} is not installed: pip install 'bindery[{extra}]'")
        if torchvision_works():
            return importlib.import_module(name)
        try:  # lru-cached availability checks must see the truth, before the stand-in exists
            from transformers.utils import import_utils

            import_utils.is_torchvision_available()
        except ImportError:
            pass
        finder = _StandInFinder()
        sys.meta_path.insert(0, finder)
        try:
            return importlib.import_module(name)
        finally:
            sys.meta_path.remove(finder)
            _purge_torchvision()


# ebind's packages whose __init__ pulls its data loaders (torchaudio, torchvision, torchcodec)
_EBIND_PACKAGES = ("ebind", "ebind.models", "ebind.models.ebind", "ebind.models.perception_encoder",
                   "ebind.models.imagebind", "ebind.models.uni3d", "ebind.models.uni3d.pointnet2_ops")


def _bare_package(name: str) -> None:
    """Register ``name`` as a package whose ``__init__`` is not run (its submodules import normally)."""
    if name in sys.modules:
        return
    parent, _, leaf = name.rpartition(".")
    if parent:
        folder = Path(sys.modules[parent].__path__[0]) / leaf
    else:
        spec = importlib.util.find_spec(name)
        folder = Path(next(iter(spec.submodule_search_locations)))
    spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations = [str(folder)]
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module


def ebind_module(name: str) -> types.ModuleType:
    """Import ``ebind.<name>`` (e.g. ``models.uni3d.point_encoder``) without ebind's package ``__init__``s.

    timm is imported first (through :func:`import_without_torchvision`); ebind's model modules
    import ``timm.layers`` at module level."""
    import_without_torchvision("timm", "ebind")
    with _LOCK:
        if "ebind" not in sys.modules and importlib.util.find_spec("ebind") is None:
            raise EncoderError("ebind is not installed: pip install --no-deps ebind==0.1.0 "
                               "(scripts/setup.sh does it; see requirements-nodeps.txt)")
        if "ebind" not in sys.modules:
            for package in _EBIND_PACKAGES:
                _bare_package(package)
        return importlib.import_module(f"ebind.{name}")
