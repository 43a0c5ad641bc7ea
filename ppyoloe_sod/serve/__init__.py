"""``Global.mode=serve``: PaddleX's HTTP API for the small_object_detection pipeline (FastAPI + uvicorn).

    python -m ppyoloe_sod -c configs/PP-YOLOE_plus_SOD-S.yaml -o Global.mode=serve -o Serve.host=0.0.0.0

The model is the one ``Global.mode=predict`` would load (``infer.predictor.predictor_args``: ``Global.model``,
``Predict.model_dir``, ``Global.device``, ``Predict.threshold``, ``Predict.use_hpip`` and
``kernel_option.run_mode``, ``Predict.max_pixels``); it is loaded once per server process before the server
listens, so a bad weights file or device is an error at start. With
``Serve.workers`` above 1, uvicorn starts that many processes on the one port; each loads the model. Needs the
``serve`` extra: ``pip install 'ppyoloe-sod[serve]'``. FastAPI is imported only when this mode runs.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from ..config import Config, ServeConfig
from ..errors import ConfigError

log = logging.getLogger(__name__)

SETTINGS_ENV = "PPYOLOE_SOD_SERVE_SETTINGS"  # how run_serve hands the settings to uvicorn's worker processes


@dataclass(frozen=True)
class ServeSettings:
    """What one server process needs: create_model's arguments (``predictor_args``, as predict loads the
    model) and the Serve section."""

    predictor: dict[str, Any]
    serve: ServeConfig = dataclasses.field(default_factory=ServeConfig)
    torch_threads: int | None = None  # per process when several share the machine; None: torch's default

    @classmethod
    def from_config(cls, cfg: Config) -> ServeSettings:
        from ..infer.predictor import predictor_args

        workers = cfg.Serve.workers
        threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
        return cls(predictor_args(cfg), dataclasses.replace(cfg.Serve), threads)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        data = json.loads(text)
        threshold = data["predictor"]["threshold"]
        if isinstance(threshold, dict):  # JSON object keys are strings; class ids are ints
            data["predictor"]["threshold"] = {int(k): v for k, v in threshold.items()}
        return cls(**{**data, "serve": ServeConfig(**data["serve"])})


def load_predictor(settings: ServeSettings) -> Any:
    """The DetPredictor ``settings`` describe (``create_model``, as predict builds it)."""
    from ..infer.predictor import create_model

    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    return create_model(**settings.predictor)


def app_from_settings(settings: ServeSettings) -> Any:
    from .app import create_app

    return create_app(load_predictor(settings), settings.serve)


def app_from_environment() -> Any:
    """uvicorn's app factory in each worker process (``Serve.workers`` > 1): settings from the environment."""
    return app_from_settings(ServeSettings.from_json(os.environ[SETTINGS_ENV]))


def _require_extra() -> Any:
    try:
        importlib.import_module("fastapi")
        import uvicorn
    except ImportError as e:
        raise ConfigError(f"Global.mode=serve needs FastAPI and uvicorn ({e.name} is missing): "
                          f"pip install 'ppyoloe-sod[serve]'") from None
    return uvicorn


def run_serve(cfg: Config) -> int:
    """Serve until interrupted (Ctrl+C or SIGTERM: requests in flight are answered first); 0 when stopped."""
    uvicorn = _require_extra()
    from .app import check_serve_config, create_app

    settings = ServeSettings.from_config(cfg)
    serve = settings.serve
    check_serve_config(serve)
    predictor = load_predictor(settings)  # a bad model, weights file or device fails here, before listening
    log.info("serving %s on http://%s:%s (demo page at /, API at POST /small-object-detection)",
             predictor.model_name, serve.host, serve.port)
    if serve.workers == 1:
        uvicorn.run(create_app(predictor, serve), host=serve.host, port=serve.port, log_level="info")
        return 0
    del predictor  # each worker process loads its own
    os.environ[SETTINGS_ENV] = settings.to_json()
    uvicorn.run(f"{__name__}:app_from_environment", factory=True, host=serve.host, port=serve.port,
                workers=serve.workers, log_level="info")
    return 0
