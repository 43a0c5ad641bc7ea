#!/usr/bin/env python3
"""Convert PP-YOLOE+ (SOD) weights between Paddle ``.pdparams`` and our ``.safetensors``, in either direction.

    python tools/convert_weights.py SRC.pdparams -o DST.safetensors [--model NAME]   # Paddle -> ours
    python tools/convert_weights.py SRC.safetensors -o DST.pdparams [--model NAME]   # ours -> ppdet / PaddleX

The model is detected from the tensor shapes (or, for our files, read from their metadata); ``--model`` makes
the tool check that instead. A thin wrapper: the conversion itself lives in ``ppyoloe_sod``. Problems are
reported on stderr with exit code 2 and nothing is written.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

_ROOT = Path(__file__).resolve().parents[1]
if (_ROOT / "ppyoloe_sod").is_dir() and str(_ROOT) not in sys.path:  # run from a checkout, not installed
    sys.path.insert(0, str(_ROOT))

from ppyoloe_sod.errors import PPYOLOESODError, WeightsError, interface  # noqa: E402
from ppyoloe_sod.models import classes_from_metadata, convert_pdparams_file  # noqa: E402
from ppyoloe_sod.weights.convert import detect_model, state_dict_from_spec_check, torch_to_paddle  # noqa: E402
from ppyoloe_sod.weights.pdparams import save_pdparams  # noqa: E402
from ppyoloe_sod.weights.store import load_safetensors  # noqa: E402
from ppyoloe_sod.zoo import get_spec, list_models  # noqa: E402

PDPARAMS, SAFETENSORS = ".pdparams", ".safetensors"
_TARGET = {PDPARAMS: SAFETENSORS, SAFETENSORS: PDPARAMS}


@dataclass
class Summary:
    model_name: str
    how: str  # how the model was determined, for the printout
    tensors: int  # parameter and BN-statistic tensors (Paddle's count; torch's step counters left out)
    values: int
    dst: Path


def _spec_name(model: str) -> str:
    try:
        return get_spec(model).name
    except KeyError:
        raise WeightsError(f"--model {model!r} is not a known model; choose one of: {', '.join(list_models())}") from None


def _check_paths(src: Path, dst: Path) -> None:
    if src.suffix not in _TARGET:
        raise WeightsError(f"{src}: unknown extension {src.suffix!r}; SRC must be a Paddle {PDPARAMS} file or one "
                           f"of our {SAFETENSORS} files")
    if not src.is_file():
        raise WeightsError(f"{src}: file not found" + (" (it is a directory)" if src.is_dir() else ""))
    want = _TARGET[src.suffix]
    if dst.suffix != want:
        raise WeightsError(f"{dst}: a {src.suffix} file converts to {want}; give -o a file name ending in {want}")


def _count(tensors: Sequence) -> tuple[int, int]:
    """Number of tensors and of values in them (numpy arrays or torch tensors)."""
    return len(tensors), sum(math.prod(t.shape) for t in tensors)


def pdparams_to_safetensors(src: Path, dst: Path, model: str | None) -> Summary:
    name = convert_pdparams_file(src, dst, _spec_name(model) if model else None)
    state, _ = load_safetensors(dst)  # read back what was written: the counts describe the file itself
    n, values = _count([t for k, t in state.items() if not k.endswith("num_batches_tracked")])
    return Summary(name, "checked against --model" if model else "detected from the tensor shapes", n, values, dst)


def safetensors_to_pdparams(src: Path, dst: Path, model: str | None) -> Summary:
    state, meta = load_safetensors(src)
    pd_state = torch_to_paddle(state)
    owner = meta.get("model_name")
    detected = detect_model({k: v.shape for k, v in pd_state.items()})
    if owner is not None:
        name, how = owner, "read from the file's metadata"
    elif detected is not None:
        name, how = detected, "detected from the tensor shapes"
    elif model is not None:
        name, how = _spec_name(model), "given by --model"  # custom shapes: the key check below says what differs
    else:
        raise WeightsError(f"{src}: no model_name in its metadata and the tensor shapes match none of the "
                           f"published models ({', '.join(list_models())}); pass --model to see which keys differ")
    if model is not None and _spec_name(model) != name:
        raise WeightsError(f"{src} holds weights of {name} ({how}), not {_spec_name(model)}: use --model {name}")
    spec = get_spec(name)
    classes = classes_from_metadata(meta, src)
    if classes is not None:  # a model fine-tuned on its own classes: the head is checked against those
        spec = spec.with_classes(classes)
    state_dict_from_spec_check(spec, state)
    save_pdparams(pd_state, dst)
    n, values = _count(list(pd_state.values()))
    return Summary(name, how if model is None else "checked against --model", n, values, dst)


def convert(src: str | Path, dst: str | Path, model: str | None = None) -> Summary:
    """Convert ``src`` to ``dst``; the direction follows the extensions. Raises ``WeightsError`` on bad input."""
    src, dst = Path(src), Path(dst)
    _check_paths(src, dst)
    if src.suffix == PDPARAMS:
        return pdparams_to_safetensors(src, dst, model)
    return safetensors_to_pdparams(src, dst, model)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="convert_weights.py",
        description="Convert PP-YOLOE+ SOD weights: Paddle .pdparams -> .safetensors, or .safetensors -> "
                    ".pdparams (a file PaddleDetection / PaddleX load).")
    p.add_argument("src", metavar="SRC", help="a .pdparams or .safetensors file")
    p.add_argument("-o", "--output", metavar="DST", required=True,
                   help="output file: .safetensors for a .pdparams SRC, .pdparams for a .safetensors SRC")
    p.add_argument("--model", metavar="NAME", default=None,
                   help=f"check the weights are this model's (one of: {', '.join(list_models())})")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry; returns the exit code (0 ok, 2 bad input or usage)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # argparse has already printed usage / help
        return int(e.code or 0)
    try:
        with interface("convert_weights"):  # hints name this tool's flags
            s = convert(args.src, args.output, args.model)
    except (PPYOLOESODError, OSError) as e:  # bad input, or the output cannot be written
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"model:   {s.model_name} ({s.how})")
    print(f"tensors: {s.tensors} ({s.values:,} values)")
    print(f"wrote:   {s.dst.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
