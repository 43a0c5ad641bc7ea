"""PP-YOLOE+ SOD small-object detection in PyTorch, loading PaddleDetection / PaddleX weights.

The public names load on first use (PEP 562), so that ``import ppyoloe_sod`` does not import torch: the command
line sets the OpenMP wait policy before torch loads libgomp (``__main__._set_openmp_defaults``).
"""
from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {"create_model": ".infer.predictor", "build_model": ".models", "load_model": ".models",
           "get_spec": ".zoo", "list_models": ".zoo"}

__all__ = list(_PUBLIC)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
