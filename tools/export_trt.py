#!/usr/bin/env python3
"""Build a TensorRT engine from an ONNX export folder, into a new export folder that ``create_model`` runs.

    python -m ppyoloe_sod -c configs/PP-YOLOE_plus_SOD-S.yaml -o Global.mode=export -o Global.output=out/onnx
    python tools/export_trt.py out/onnx -o out/trt-fp16 --precision fp16 [--batch 1,1,8] [--workspace 4]
        [--timing-cache trt.cache] [--min-size 320x320 --opt-size 640x640 --max-size 1280x1280]

The new folder holds ``model.onnx`` (copied), ``model.engine``, its sidecar ``model.engine.json`` (TensorRT
version, GPU, profile, precision, model config, sha256 of the ONNX graph and the engine) and ``model_config.json``
(format tensorrt). The engine runs only under the same TensorRT version on the same GPU model: build it where
it will run. Sizes other than the export's need an export made with ``-o Export.dynamic_shape=True``. Needs
TensorRT 10 or 11 (``pip install 'ppyoloe-sod[tensorrt]'``) and an NVIDIA GPU. A thin wrapper over
``ppyoloe_sod.export.tensorrt``; problems go to stderr with exit code 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

_ROOT = Path(__file__).resolve().parents[1]
if (_ROOT / "ppyoloe_sod").is_dir() and str(_ROOT) not in sys.path:  # run from a checkout, not installed
    sys.path.insert(0, str(_ROOT))

from ppyoloe_sod.errors import PPYOLOESODError  # noqa: E402
from ppyoloe_sod.export.tensorrt import (DEFAULT_BATCH, DEFAULT_WORKSPACE_GIB, ENGINE_FILE, ENGINE_PRECISIONS,  # noqa: E402
                                         export_tensorrt, parse_size, parse_triple, read_sidecar)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="export_trt.py", description=__doc__.split("\n\n")[0],
                                epilog="exit codes: 0 built, 2 bad input, TensorRT missing or the build failed")
    p.add_argument("source", metavar="EXPORT_DIR", help="an ONNX export folder (model.onnx + model_config.json)")
    p.add_argument("-o", "--output", metavar="DIR", required=True, help="the TensorRT export folder to write")
    p.add_argument("--precision", choices=ENGINE_PRECISIONS, default="fp32",
                   help="fp32 (default; TF32 off) or fp16 (TensorRT 10: FP16 flag; 11: an fp16 graph)")
    p.add_argument("--batch", default=",".join(map(str, DEFAULT_BATCH)), metavar="MIN,OPT,MAX",
                   help="batch sizes of the optimisation profile (default %(default)s)")
    for which in ("min", "opt", "max"):
        p.add_argument(f"--{which}-size", metavar="HxW", default=None,
                       help=f"{which} input size of the profile (dynamic_shape exports only; default: the export's)")
    p.add_argument("--workspace", type=float, default=None, metavar="GIB",
                   help=f"TensorRT scratch memory limit in GiB (default {DEFAULT_WORKSPACE_GIB:g})")
    p.add_argument("--timing-cache", default=None, metavar="FILE",
                   help="kernel timing cache: read if present, updated after the build (faster rebuilds)")
    p.add_argument("--strongly-typed", action="store_true",
                   help="TensorRT 10: build fp16 from an fp16 graph in a strongly typed network (11 always does)")
    p.add_argument("--device", type=int, default=0, metavar="N", help="GPU index to build on (default 0)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry; returns the exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # argparse has already printed usage / help
        return int(e.code or 0)
    try:
        sizes = {k: parse_size(getattr(args, f"{k}_size"), f"--{k}-size") if getattr(args, f"{k}_size") else None
                 for k in ("min", "opt", "max")}
        folder = export_tensorrt(args.source, args.output, args.precision, parse_triple(args.batch, "--batch"),
                                 sizes["min"], sizes["opt"], sizes["max"], args.workspace, args.timing_cache,
                                 True if args.strongly_typed else None, args.device)
        sidecar = read_sidecar(folder / ENGINE_FILE)
    except (PPYOLOESODError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    built, prof = sidecar.built_for, sidecar.profile
    print(f"engine:  {folder / ENGINE_FILE} ({sidecar.precision}; {sidecar.plan.describe()})")
    print(f"for:     TensorRT {built.tensorrt_version} on {built.gpu_name} (compute capability "
          f"{built.compute_capability[0]}.{built.compute_capability[1]})")
    print(f"profile: {prof.min} / {prof.opt} / {prof.max} (min / opt / max)")
    print(f"run it:  create_model(MODEL_NAME, model_dir='{folder}', device='gpu')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
