"""``python -m ppyoloe_sod.train -c CONFIG.yaml -o Global.dataset_dir=DIR -o Train.num_classes=N ...``

The same as ``python -m ppyoloe_sod -c CONFIG.yaml -o Global.mode=train ...``: PaddleX's config file and ``-o``
overrides (repeatable), then :func:`ppyoloe_sod.train.loop.run_train`. Under ``torchrun`` every process runs this.
"""
from __future__ import annotations

import argparse
import sys

from ..errors import PPYOLOESODError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ppyoloe_sod.train", description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", required=True, help="a PaddleX-style YAML config")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. -o Train.epochs_iters=10 (repeatable)")
    args = parser.parse_args(argv)
    from ..config import load_config
    from .loop import run_train

    try:
        cfg = load_config(args.config, [*args.override, "Global.mode=train"])
        result = run_train(cfg)
    except PPYOLOESODError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint is kept; resume with -o Train.resume_path=<Global.output>",
              file=sys.stderr)
        return 130
    return 0 if result.get("done_flag") else 1


if __name__ == "__main__":
    sys.exit(main())
