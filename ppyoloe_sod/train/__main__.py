"""python -m ppyoloe_sod.train -c CONFIG.yaml -o Global.dataset_dir=DIR ...: fine-tune a model.

The same as ``python -m ppyoloe_sod -c CONFIG.yaml -o Global.mode=train ...``: PaddleX's config file and ``-o``
overrides (repeatable), then :func:`ppyoloe_sod.train.launch.run_train`. Under ``torchrun`` every process runs this.
"""
from __future__ import annotations

import sys

from ..__main__ import EXAMPLE_CONFIG, EXIT_ERROR, cli_parser, setup_logging
from ..errors import PPYOLOESODError, interface

_DESCRIPTION = """Fine-tune a PP-YOLOE+ SOD model on a dataset in PaddleX's COCO layout (DIR/images/ and
DIR/annotations/instance_{train,val}.json; check or convert one with -o Global.mode=check_dataset in
python -m ppyoloe_sod). Writes train.log, train_result.json, best_model/, latest/ (with a resumable
checkpoint) and train_curves.png under Global.output. Same as python -m ppyoloe_sod -o Global.mode=train."""

_EXIT_CODES = (f"exit status: 0 done; 1 training did not finish (done_flag false in train_result.json); "
               f"{EXIT_ERROR} bad config or input (the message says what to change); 130 interrupted (Ctrl+C)")

_EXAMPLES = f"""examples:
  # the reference recipe from the published weights, on the first GPU
  python -m ppyoloe_sod.train -c {EXAMPLE_CONFIG} -o Global.dataset_dir=DIR -o Train.num_classes=N
  # two GPUs (one process each), 8 images per GPU
  python -m ppyoloe_sod.train -c {EXAMPLE_CONFIG} -o Global.dataset_dir=DIR -o Global.device=gpu:0,1 \\
      -o Train.batch_size=8
  # on a CPU at small sizes; offline, start from a local file (or random)
  python -m ppyoloe_sod.train -c {EXAMPLE_CONFIG} -o Global.dataset_dir=DIR -o Global.device=cpu \\
      -o "Train.train_sizes=[320, 352]" -o Train.eval_size=320 -o Train.pretrain_weight_path=FILE.pdparams
  # continue a stopped run
  python -m ppyoloe_sod.train -c {EXAMPLE_CONFIG} -o Global.dataset_dir=DIR -o Train.resume_path=output
"""


def main(argv: list[str] | None = None) -> int:
    parser = cli_parser("python -m ppyoloe_sod.train", _DESCRIPTION, ("Global", "Train"), _EXAMPLES, _EXIT_CODES,
                        skip=("Global.mode",))
    args = parser.parse_args(argv)
    setup_logging()
    from ..config import load_config
    from .launch import run_train

    try:
        with interface("cli"):
            cfg = load_config(args.config, [*args.override, "Global.mode=train"])
            result = run_train(cfg)
    except PPYOLOESODError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint is kept; resume with -o Train.resume_path=<Global.output>",
              file=sys.stderr)
        return 130
    return 0 if result.get("done_flag") else 1


if __name__ == "__main__":
    sys.exit(main())
