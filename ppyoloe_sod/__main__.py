"""``python -m ppyoloe_sod -c CONFIG.yaml -o Global.mode=predict -o Predict.input=IMAGE`` (also ``ppyoloe-sod``).

PaddleX's command line: a YAML config plus repeatable ``-o Section.key=value`` overrides, dispatched on
``Global.mode``. This module only dispatches; each mode's work lives in its own module.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Any, Callable

from .config import MODES, Config, load_config
from .errors import PPYOLOESODError

EXIT_ERROR, EXIT_NOT_IMPLEMENTED = 2, 3

# mode -> (module, function taking the Config); imported only when that mode runs
_ENTRY_POINTS = {
    "predict": ("ppyoloe_sod.infer.predictor", "run_predict"),
    "train": ("ppyoloe_sod.train.loop", "run_train"),
    "evaluate": ("ppyoloe_sod.eval.evaluate", "run_evaluate"),
    "export": ("ppyoloe_sod.export", "run_export"),
}


class NotImplementedMode(Exception):
    pass


def _entry(mode: str) -> Callable[[Config], Any]:
    module_name, func_name = _ENTRY_POINTS[mode]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and module_name.startswith(e.name):
            raise NotImplementedMode(f"Global.mode={mode} is not implemented yet ({module_name} is missing).") from e
        raise
    func = getattr(module, func_name, None)
    if func is None:
        raise NotImplementedMode(f"Global.mode={mode} is not implemented yet ({module_name}.{func_name} is missing).")
    return func


def _check_dataset(cfg: Config) -> dict:
    from .data.check_dataset import run_check_dataset

    cd = cfg.CheckDataset
    return run_check_dataset(cfg.Global.dataset_dir, cfg.Global.output, cd.convert.enable,
                             cd.convert.src_dataset_type, cd.split.enable, cd.split.train_percent,
                             cd.split.val_percent)


def dispatch(cfg: Config) -> int:
    """Run ``cfg.Global.mode``; the process exit code."""
    mode = cfg.Global.mode
    result = _check_dataset(cfg) if mode == "check_dataset" else _entry(mode)(cfg)
    if isinstance(result, dict) and result.get("done_flag") is False:
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ppyoloe_sod", description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", required=True, help="YAML config, e.g. configs/PP-YOLOE_plus_SOD-S.yaml")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a config key (repeatable); Global.mode is one of {', '.join(MODES)}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = load_config(args.config, args.override)
        return dispatch(cfg)
    except NotImplementedMode as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_NOT_IMPLEMENTED
    except PPYOLOESODError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
