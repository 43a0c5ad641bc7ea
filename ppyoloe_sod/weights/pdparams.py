"""Read and write Paddle ``.pdparams`` files without Paddle, and without trusting them.

A ``.pdparams`` file is a pickle of ``{parameter name: float32 ndarray}`` plus one bookkeeping entry
``'StructuredToParameterName@@'`` (name -> Paddle-internal name). Unpickling can run arbitrary code and make
the unpickler allocate whatever the file declares, so a file is read in two passes:

1. a scan of its opcodes (``pickletools.genops`` over a memory map, which never reads past the file's end)
   refuses what no weights file holds: containers nested deeper than ``MAX_NESTING`` (deep keys crash CPython
   when hashed), integers wider than 64 bits, memo indices and frames larger than the file;
2. an unpickler that resolves only numpy's array, dtype and scalar globals, each through a stand-in that checks
   what the file declares (a plain numeric dtype; an array's shape times its item size equal to the bytes the
   file really holds) before numpy allocates anything. Any other global is refused before it is imported.

Every failure is a ``WeightsError`` naming the file. Files written under numpy 1 (``numpy.core``) and numpy 2
(``numpy._core``) both load.
"""
from __future__ import annotations

import math
import mmap
import os
import pickle
import pickletools
import reprlib
import struct
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Mapping

import numpy as np

from ..errors import WeightsError, hint
from ..fileio import atomic_open
from .formats import describe_format, require_file, sniff_format

__all__ = ["load_pdparams", "save_pdparams", "STRUCTURED_NAME_KEY", "MAX_NESTING"]

#: Bookkeeping entry Paddle adds to every saved state dict; it is not a parameter.
STRUCTURED_NAME_KEY = "StructuredToParameterName@@"

#: Deepest container nesting accepted (a weights pickle needs about 6: dict > array > state tuple > dtype).
MAX_NESTING = 100

# The module that holds numpy's pickle helpers moved from ``numpy.core`` (numpy 1) to ``numpy._core`` (numpy 2);
# both spellings are accepted.
_MULTIARRAY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")

# Pickle protocols 2 and 3 (older Paddle) store ``bytes`` as ``_codecs.encode(text, 'latin1')``; that global is
# allowed only through ``_latin1_encode``, which refuses any other codec.
_CODECS_ENCODE = ("_codecs", "encode")
# ... and an empty ``bytes`` (an empty array's data) as ``bytes()``.
_EMPTY_BYTES = (("__builtin__", "bytes"), ("builtins", "bytes"))

# The dtype names numpy pickles numeric arrays with (``numpy.dtype('f4', False, True)``).
_PLAIN_DTYPES = frozenset({"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"})

_PICKLE_PROTOCOL = 4  # what paddle.save writes by default

# Opcodes that hand their first operand back (filled in, or unchanged): its nesting is kept, not increased.
_CARRIES_FIRST = frozenset({"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD", "MEMOIZE",
                            "READONLY_BUFFER"})
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})


class _Refused(Exception):
    """Raised inside the scan and the unpickler; ``load_pdparams`` turns it into a WeightsError naming the file."""


# --- pass 1: the opcode scan ----------------------------------------------------------------------------------

def _scan(stream: Any, size: int) -> None:
    """Refuse deep nesting, wide integers, and memo indices or frames no file of ``size`` bytes needs.

    Nesting is tracked on a model of the unpickler's stack (with its rules: MARKs fence off what lies below
    them, and POP right after a MARK drops the MARK): a value built from others is one deeper than the deepest of
    them, an upper bound of the real nesting that is exact for the tuples and frozensets that get hashed.
    """
    stack: list[int] = []  # nesting depth of each value on the unpickler's stack
    marks: list[int] = []  # stack heights at each open MARK
    memo: dict[int, int] = {}
    for count, (op, arg, pos) in enumerate(pickletools.genops(stream)):
        _check_argument(op.name, arg, size - pos, count)
        if op.name == "MARK" or (op.name == "POP" and marks and marks[-1] == len(stack)):
            marks.append(len(stack)) if op.name == "MARK" else marks.pop()
            continue
        popped = _pop_operands(op, stack, marks)
        if op.name in _PUT_OPS or op.name == "MEMOIZE":
            if len(stack) + len(popped) <= (marks[-1] if marks else 0):
                raise _Refused(f"a {op.name} opcode at byte {pos} has nothing to store")
            memo[arg if op.name in _PUT_OPS else len(memo)] = (popped or stack)[-1]
        if op.name in _GET_OPS:
            depth = memo.get(arg, 0)
        elif op.name in _CARRIES_FIRST:
            depth = max([popped[0]] + [d + 1 for d in popped[1:]])
        else:
            depth = 1 + max(popped, default=-1)
        if depth > MAX_NESTING:
            raise _Refused(f"it nests containers more than {MAX_NESTING} deep (at byte {pos}); weights files "
                           "never do, and unpickling it could crash Python")
        stack.extend([depth] * len(op.stack_after))


def _check_argument(name: str, arg: Any, remaining: int, count: int) -> None:
    if isinstance(arg, int) and not isinstance(arg, bool) and arg.bit_length() > 64 and name not in _PUT_OPS:
        raise _Refused(f"it holds an integer of {arg.bit_length()} bits; weights files hold no such numbers")
    if name == "FRAME" and arg > remaining:  # reported like any other truncation
        raise ValueError(f"a frame declares {arg} bytes but only {remaining} remain in the file")
    if name in _PUT_OPS and arg > count:  # the pickler numbers memo entries 0, 1, 2...
        raise _Refused(f"it stores a value under memo index {arg} after only {count} opcodes")


def _pop_operands(op: pickletools.OpcodeInfo, stack: list[int], marks: list[int]) -> list[int]:
    """Take ``op``'s operands off the model stack: everything above the last MARK for MARK-taking opcodes, and
    never anything below the (remaining) last MARK, which the unpickler refuses too."""
    before = op.stack_before
    top: list[int] = []
    below = len(before)
    if pickletools.markobject in before:
        if not marks:
            raise _Refused(f"opcode {op.name} has no MARK to take its operands from")
        top = stack[marks.pop():]
        del stack[len(stack) - len(top):]
        below = before.index(pickletools.markobject)
    if len(stack) - below < (marks[-1] if marks else 0):
        raise _Refused(f"opcode {op.name} finds too few values on the stack")
    popped = stack[len(stack) - below:] + top
    del stack[len(stack) - below:]
    return popped


# --- pass 2: the restricted unpickler ---------------------------------------------------------------------------

class _NdarrayPlaceholder:
    """What the file gets for ``numpy.ndarray``: only a marker for ``_reconstruct``; calling it would allocate."""

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        raise _Refused(f"it calls numpy.ndarray{reprlib.repr(args)} directly, which allocates memory the file "
                       "does not hold; weights files never do")

    def __repr__(self) -> str:
        return "numpy.ndarray"


_NDARRAY = _NdarrayPlaceholder()


class _DtypeRecipe:
    """A plain numeric dtype, as ``numpy.dtype(name, align, copy)`` + its BUILD state describe it."""

    def __init__(self, name: Any, align: Any = False, copy: Any = True) -> None:
        if not isinstance(name, str) or name not in _PLAIN_DTYPES:
            raise _Refused(f"it declares the dtype {reprlib.repr(name)}; weights are plain numbers "
                           f"({', '.join(sorted(_PLAIN_DTYPES))})")
        self.dtype = np.dtype(name)

    def __setstate__(self, state: Any) -> None:
        # numpy writes (3, byte order, None, None, None, -1, -1, 0) for a plain numeric dtype
        ok = (isinstance(state, tuple) and len(state) == 8 and state[0] == 3 and state[1] in ("<", ">", "|", "=")
              and state[2:7] == (None, None, None, -1, -1))
        if not ok:
            raise _Refused(f"it gives the dtype {self.dtype} the state {reprlib.repr(state)}, which no plain "
                           "numeric dtype has")
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])


class _ArrayRecipe:
    """An array that ``_reconstruct`` announced; its BUILD state is checked before numpy builds it."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise _Refused(f"an array has the state {reprlib.repr(state)}, not numpy's (version, shape, dtype, "
                           "fortran, data)")
        version, shape, dtype, fortran, data = state
        if not isinstance(dtype, _DtypeRecipe):
            raise _Refused(f"an array's dtype is a {type(dtype).__name__}, not a numpy dtype")
        if not (isinstance(shape, tuple) and len(shape) <= 32 and all(type(d) is int and d >= 0 for d in shape)):
            raise _Refused(f"an array has the shape {reprlib.repr(shape)}, not a tuple of sizes")
        if not isinstance(data, bytes):
            raise _Refused(f"an array's data is a {type(data).__name__}, not bytes")
        need = math.prod(shape) * dtype.dtype.itemsize
        if need != len(data):
            raise _Refused(f"an array declares shape {shape} of {dtype.dtype} ({need} bytes) but the file holds "
                           f"{len(data)} bytes for it")
        array = getattr(_multiarray(), "_reconstruct")(np.ndarray, (0,), b"b")
        array.__setstate__((version, shape, dtype.dtype, bool(fortran), data))  # shares ``data``: no copy
        self.array = array


class _WeightsUnpickler(pickle.Unpickler):
    """An unpickler whose only globals are the checked stand-ins for numpy's pickle helpers."""

    def __init__(self, file: Any) -> None:
        super().__init__(file, encoding="latin1")  # latin1: arrays pickled by Python 2 era Paddle

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == _CODECS_ENCODE:
            return _latin1_encode
        if (module, name) in _EMPTY_BYTES:
            return _empty_bytes
        if (module, name) == ("numpy", "ndarray"):
            return _NDARRAY
        if (module, name) == ("numpy", "dtype"):
            return _DtypeRecipe
        if module in _MULTIARRAY_MODULES and name == "_reconstruct":
            return _reconstruct
        if module in _MULTIARRAY_MODULES and name == "scalar":
            return _scalar
        raise _Refused(f"the pickle references the global '{module}.{name}', so it is not a plain weights file. "
                       "A .pdparams file holds only numpy arrays; get the file from a source you trust (e.g. the "
                       "official PaddleX download)")


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> _ArrayRecipe:
    """numpy's first step of unpickling an array: always ``(ndarray, (0,), b'b')``, an empty placeholder."""
    if subtype is not _NDARRAY or shape != (0,) or typecode != b"b":
        raise _Refused(f"it calls _reconstruct({reprlib.repr(subtype)}, {reprlib.repr(shape)}, "
                       f"{reprlib.repr(typecode)}); numpy writes only (ndarray, (0,), b'b')")
    return _ArrayRecipe()


def _scalar(dtype: Any, data: Any = None) -> Any:
    """A numpy scalar: ``dtype``'s item size in bytes, reinterpreted."""
    if not (isinstance(dtype, _DtypeRecipe) and isinstance(data, bytes) and len(data) == dtype.dtype.itemsize):
        raise _Refused(f"it builds a numpy scalar from {reprlib.repr(data)}, not {getattr(dtype, 'dtype', '?')} bytes")
    return np.frombuffer(data, dtype.dtype)[0]


def _latin1_encode(text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    ok = isinstance(text, str) and isinstance(encoding, str)
    if not ok or encoding.lower().replace("_", "-") not in ("latin1", "latin-1"):
        raise _Refused(f"the pickle calls _codecs.encode with {reprlib.repr(encoding)}, which plain weights "
                       "files never do")
    return text.encode("latin1")


def _empty_bytes(*args: Any) -> bytes:
    if args:
        raise _Refused(f"the pickle calls bytes{reprlib.repr(args)}; plain weights files only call bytes()")
    return b""


def _multiarray() -> Any:
    """The installed numpy's ``multiarray`` module, without touching the deprecated ``numpy.core`` shim."""
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core import multiarray  # type: ignore[no-redef]
    return multiarray


def _refuse_other_formats(path: Path, f: BinaryIO, size: int) -> None:
    """Raise a helpful error for files that are something else than a pickle (told by their structure)."""
    kind = sniff_format(f, size)
    if kind == "pickle":
        return
    if kind == "zip" and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
        if any(n.endswith("data.pkl") for n in names):
            raise WeightsError(
                f"{path}: this is a PyTorch checkpoint (torch.save zip archive), not a Paddle .pdparams "
                "file. " + hint(python="Load it with torch.load(..., weights_only=True) and "
                                       "model.load_state_dict(), or pass a .pdparams / .safetensors file instead.",
                                cli="Give a .pdparams or .safetensors file instead.",
                                convert_weights="Give a .pdparams or .safetensors file instead.")
            )
    if kind == "safetensors":
        raise WeightsError(
            f"{path}: this is a safetensors file, not a Paddle .pdparams file; " + hint(
                python="load it with ppyoloe_sod.weights.store.load_safetensors, or rename it to .safetensors "
                       "for load_model.",
                cli="rename it to .safetensors.", convert_weights="rename it to .safetensors.")
        )
    raise WeightsError(
        f"{path}: this is {describe_format(kind)}, not a pickle, so not a Paddle .pdparams file (an exported "
        "'inference.pdiparams' is a different, binary format and cannot be converted; use the training .pdparams)."
    )


def load_pdparams(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a ``.pdparams`` file safely: parameter name -> numpy array (bookkeeping entry dropped).

    Raises ``WeightsError`` naming the file if it is missing, not a pickle, truncated, references anything
    but numpy arrays, declares more data than it holds, nests too deep, or is not a flat dict of arrays.
    """
    path = Path(path)
    require_file(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        _refuse_other_formats(path, f, size)
        try:
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
                _scan(view, size)
            f.seek(0)
            obj = _WeightsUnpickler(f).load()
        except _Refused as e:
            raise WeightsError(f"{path}: {e}; refusing to load it.") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
                KeyError, struct.error, MemoryError, UnicodeDecodeError, RecursionError) as e:
            raise WeightsError(
                f"{path}: the file is truncated or corrupt and cannot be read as a .pdparams pickle "
                f"({type(e).__name__}: {reprlib.repr(str(e))}). Download it again."
            ) from e
    return _validate_state(obj, path)


def _validate_state(obj: Any, path: Path) -> dict[str, np.ndarray]:
    """Check the unpickled object is a flat ``{str: numeric ndarray}`` dict; drop Paddle's bookkeeping."""
    if not isinstance(obj, dict):
        raise WeightsError(
            f"{path}: expected a dict of parameter name -> array, found a pickled {type(obj).__name__}; "
            "this is not a model .pdparams file."
        )
    state: dict[str, np.ndarray] = {}
    bad: list[str] = []
    for key, value in obj.items():
        if key == STRUCTURED_NAME_KEY:
            continue
        if isinstance(value, _ArrayRecipe) and value.array is not None:
            value = value.array
        if not isinstance(key, str):
            bad.append(f"{reprlib.repr(key)} (key is a {type(key).__name__}, not a str)")
        elif not isinstance(value, np.ndarray):
            bad.append(f"'{key}' ({type(value).__name__}, not an array)")
        elif value.dtype.kind not in "fiub":
            bad.append(f"'{key}' (array of dtype {value.dtype}, not numeric)")
        else:
            state[key] = value
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        hint = ""
        if all(isinstance(v, dict) for k, v in obj.items() if k != STRUCTURED_NAME_KEY):
            hint = (" It looks like a nested checkpoint (e.g. optimizer state or {'model': ...}); pass the "
                    "model's own .pdparams file.")
        raise WeightsError(f"{path}: not a plain .pdparams state dict; unexpected entries: {shown}.{hint}")
    if not state:
        raise WeightsError(f"{path}: the file holds no parameter arrays.")
    return state


def save_pdparams(state: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
    """Write ``state`` as a ``.pdparams`` file that ``paddle.load`` (and ppdet) read back unchanged.

    Writing needs no restriction: we only pickle numpy arrays we built. The file is written atomically.
    """
    path = Path(path)
    out: dict[str, Any] = {}
    for key, value in state.items():
        if not isinstance(key, str) or key == STRUCTURED_NAME_KEY:
            raise WeightsError(f"{path}: cannot save parameter name {key!r}; names must be plain strings.")
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiub":
            raise WeightsError(
                f"{path}: parameter '{key}' is a {type(value).__name__}"
                + (f" of dtype {value.dtype}" if isinstance(value, np.ndarray) else "")
                + "; save_pdparams needs numeric numpy arrays (convert tensors with .detach().cpu().numpy())."
            )
        # (not np.ascontiguousarray: it turns 0-d arrays into 1-d ones)
        out[key] = value if value.flags.c_contiguous else value.copy(order="C")
    # Paddle writes this mapping on every state dict; identity names are what a fresh save would produce
    # for parameters that have no internal name yet, and paddle.load strips the entry on reading.
    out[STRUCTURED_NAME_KEY] = {key: key for key in state}
    with atomic_open(path, "wb") as f:
        pickle.dump(out, f, protocol=_PICKLE_PROTOCOL)
