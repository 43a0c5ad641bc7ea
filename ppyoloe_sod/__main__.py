"""python -m ppyoloe_sod -c CONFIG.yaml -o Section.key=value ...: PaddleX's command line (also ppyoloe-sod).

A YAML config plus repeatable ``-o Section.key=value`` overrides, dispatched on ``Global.mode``. This module
only parses, dispatches and reports; each mode's work lives in its own module.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys
import textwrap
from typing import Any, Callable, Sequence

from .config import MODES, Config, describe_keys, load_config
from .errors import PPYOLOESODError, interface

EXIT_ERROR, EXIT_NOT_IMPLEMENTED = 2, 3
EXAMPLE_CONFIG = "configs/PP-YOLOE_plus_SOD-S.yaml"

# mode -> (module, function taking the Config); imported only when that mode runs
_ENTRY_POINTS = {
    "predict": ("ppyoloe_sod.infer.predictor", "run_predict"),
    "train": ("ppyoloe_sod.train.launch", "run_train"),
    "evaluate": ("ppyoloe_sod.eval.evaluate", "run_evaluate"),
    "export": ("ppyoloe_sod.export", "run_export"),
    "serve": ("ppyoloe_sod.serve", "run_serve"),
}

_MODE_HELP = {
    "check_dataset": "check a COCO dataset (after converting it from VOC, LabelMe, VisDrone or YOLO, or "
                     "re-splitting it, when asked); report in <Global.output>/check_dataset_result.json",
    "train": "fine-tune Global.model on Global.dataset_dir; models, log and curves under Global.output",
    "evaluate": "COCO metrics of Evaluate.weight_path on the val split; <Global.output>/evaluate_result.json",
    "export": "export the model for deployment",
    "predict": "detect objects in Predict.input; results printed, JSON and drawings under Global.output",
    "serve": "PaddleX's HTTP API for the Predict model at http://Serve.host:Serve.port, with a demo page at /",
}

_EXIT_CODES = (f"exit status: 0 done; 1 the mode ran but did not succeed (e.g. the dataset failed the check); "
               f"{EXIT_ERROR} bad config or input (the message says what to change); {EXIT_NOT_IMPLEMENTED} mode "
               f"not implemented")

_EXAMPLES = f"""examples:
  # detect objects on an image with the published SOD-S weights (downloaded once)
  python -m ppyoloe_sod -c {EXAMPLE_CONFIG} -o Global.mode=predict -o Predict.input=img.jpg
  # check a dataset, converting it from VisDrone's txt annotations first
  python -m ppyoloe_sod -c {EXAMPLE_CONFIG} -o Global.mode=check_dataset -o Global.dataset_dir=DIR \\
      -o CheckDataset.convert.enable=true -o CheckDataset.convert.src_dataset_type=VisDrone
  # fine-tune; on a CPU, small sizes keep it practical
  python -m ppyoloe_sod -c {EXAMPLE_CONFIG} -o Global.mode=train -o Global.dataset_dir=DIR \\
      -o Global.device=cpu -o "Train.train_sizes=[320, 352]" -o Train.eval_size=320
  # evaluate what training wrote (default: <Global.output>/best_model)
  python -m ppyoloe_sod -c {EXAMPLE_CONFIG} -o Global.mode=evaluate -o Global.dataset_dir=DIR
  # serve PaddleX's HTTP API and a demo page on port 8080 of every interface (also: ppyoloe-sod serve -c ...)
  python -m ppyoloe_sod -c {EXAMPLE_CONFIG} -o Global.mode=serve -o Serve.host=0.0.0.0
"""


class NotImplementedMode(Exception):
    pass


class _CliFormatter(logging.Formatter):
    """Log records as the command line's own messages: warnings and errors say so first."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.ERROR:
            return f"error: {text}"
        return f"warning: {text}" if record.levelno >= logging.WARNING else text


def setup_logging() -> None:
    """INFO and above to stderr, warnings and errors prefixed like the command line's own messages."""
    handler = logging.StreamHandler()
    handler.setFormatter(_CliFormatter("%(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def cli_parser(prog: str, description: str, sections: Sequence[str] | None, examples: str, exit_codes: str,
               skip: Sequence[str] = ()) -> argparse.ArgumentParser:
    """``-c CONFIG`` and ``-o KEY=VALUE``, with every config key of ``sections`` and ``examples`` in the help."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(f"config keys (set in the YAML file or with -o Section.key=value; the default is the value when "
                f"neither sets it;\nnull means unset):\n"
                f"{describe_keys(sections, skip)}\n\n{examples}\n{textwrap.fill(exit_codes, 100)}"))
    parser.add_argument("-c", "--config", required=True, metavar="CONFIG",
                        help=f"the YAML config, e.g. {EXAMPLE_CONFIG} (one per model in configs/)")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                        help="set a config key, e.g. -o Global.device=cpu (repeatable; the last one wins; "
                             "lists and dicts in Python or YAML syntax)")
    return parser


def _mode_lines() -> str:
    lines = []
    for mode in MODES:
        entry = _ENTRY_POINTS.get(mode)
        missing = entry is not None and importlib.util.find_spec(entry[0]) is None
        text = f"{mode:<14} {_MODE_HELP[mode]}{' (not implemented yet)' if missing else ''}"
        lines.append(textwrap.fill(text, 100, initial_indent="  ", subsequent_indent=" " * 17))
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    description = ("Run PP-YOLOE+ SOD from a PaddleX-style YAML config: -c CONFIG names the file, each "
                   "-o Section.key=value\noverrides one key, and Global.mode says what to run:\n" + _mode_lines())
    return cli_parser("python -m ppyoloe_sod", description, None, _EXAMPLES, _EXIT_CODES)


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


def set_openmp_defaults() -> None:
    """``OMP_WAIT_POLICY=PASSIVE`` unless the user set a policy, before torch loads libgomp.

    libgomp's threads otherwise spin at every barrier; when another process holds a core they stall each parallel
    region until rescheduled: SOD-S at 640 on 2 threads of a shared 2-core machine took 4.2 s per image instead of
    0.5 s (docs/PERFORMANCE.md, "OMP_WAIT_POLICY", has the idle-machine cost). Too late once torch is imported
    (``main`` called from a program that already uses torch): then nothing is changed.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> int:
    set_openmp_defaults()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:  # `ppyoloe-sod serve -c CONFIG ...` is `... -o Global.mode=serve`
        argv = [*argv[1:], "-o", "Global.mode=serve"]
    args = _parser().parse_args(argv)
    setup_logging()
    try:
        with interface("cli"):  # errors suggest -o Section.key=value, not Python arguments
            return dispatch(load_config(args.config, args.override))
    except NotImplementedMode as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_NOT_IMPLEMENTED
    except PPYOLOESODError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
