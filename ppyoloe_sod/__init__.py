"""PP-YOLOE+ SOD small-object detection in PyTorch, loading PaddleDetection / PaddleX weights."""
from .infer.predictor import create_model
from .models import build_model, load_model
from .zoo import get_spec, list_models

__all__ = ["create_model", "build_model", "load_model", "get_spec", "list_models"]
__version__ = "0.1.0"
