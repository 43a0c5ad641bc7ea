"""PP-YOLOE+ SOD small-object detection in PyTorch, loading PaddleDetection / PaddleX weights."""
from .models import build_model, load_model
from .zoo import get_spec, list_models

__all__ = ["build_model", "load_model", "get_spec", "list_models"]
__version__ = "0.1.0"
