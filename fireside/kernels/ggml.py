"""Quantized weight matrices on CPU through ggml, llama.cpp's kernels (libfireside_ggml.so).

A `QuantMatrix` holds one weight matrix in a ggml type (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K, F16, BF16,
F32) as raw GGUF row blocks, repacked at load into the layout ggml's fastest kernel reads where
it has one (Q4_0 and Q4_K on AVX2: rows interleaved 8 at a time). `matmul` is `x @ W.T` for any
number of rows, one code path: ggml quantizes the activations to int8 blocks on the fly and runs
integer dot products, so the result carries ~0.5% relative error beyond the weights' own.

The library is built by `make install` (scripts/build-kernels.sh) into fireside/kernels/_build/;
`FIRESIDE_GGML_LIB` points at another build. Without it `available()` is False and
`unavailable_reason()` says what to do; nothing here loads it before it is needed.

Threads: each matmul runs on `threads()` threads, torch's count unless `set_threads` says
otherwise, on ggml's own persistent threadpool (built without OpenMP: bound to torch's libgomp,
ggml ran 3x slower when called from the engine's loop thread than from the main thread).
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from enum import IntEnum
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fireside.errors import CheckpointError, FiresideError

__all__ = [
    "KernelsUnavailableError",
    "QType",
    "QuantMatrix",
    "available",
    "info",
    "quantize_blocks",
    "reset",
    "set_threads",
    "threads",
    "unavailable_reason",
]


class QType(IntEnum):
    """ggml's tensor types, numbered as GGUF files and `gguf.GGMLQuantizationType` number them
    (equal as ints, so either enum can be passed). Not imported from `gguf`: that package takes
    ~0.4 s to import, and every model import would pay it."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ4_NL = 20
    BF16 = 30


ABI = 3  # fireside_ggml.c's FS_GGML_ABI
LIB_ENV = "FIRESIDE_GGML_LIB"
DEFAULT_LIB = Path(__file__).parent / "_build" / "libfireside_ggml.so"
# The types Fireside runs (ggml runs a few more; these are the ones tested).
SUPPORTED = frozenset(
    {
        QType.F32,
        QType.F16,
        QType.BF16,
        QType.Q8_0,
        QType.Q4_0,
        QType.Q4_K,
        QType.Q5_K,
        QType.Q6_K,
        # llama-quantize's fallbacks where a row is not a multiple of 256 wide (Q4_K_M of
        # Qwen2.5-0.5B's 896 or SmolLM2's 576 holds Q5_0 tensors), and the older 32-blocks.
        QType.Q4_1,
        QType.Q5_0,
        QType.Q5_1,
    }
)
_PLAIN = 1  # FS_FLAG_PLAIN


class KernelsUnavailableError(FiresideError, RuntimeError):
    """The ggml kernels are not built or cannot be loaded here."""


_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_reason: str | None = None
_tried = False
_threads: int | None = None


def _library_path() -> Path:
    return Path(os.environ.get(LIB_ENV) or DEFAULT_LIB)


def _load() -> ctypes.CDLL | None:
    global _lib, _reason, _tried
    with _lock:
        if _tried:
            return _lib
        _tried = True
        path = _library_path()
        where = f"{LIB_ENV}={path}" if os.environ.get(LIB_ENV) else str(path)
        if not path.is_file():
            _reason = (
                f"the ggml kernels are not built ({where} does not exist): run `make install` "
                "(or scripts/build-kernels.sh; it needs cmake and a C++ compiler)"
            )
            return None
        try:
            lib = ctypes.CDLL(str(path))
            version = lib.fs_ggml_abi()
        except (OSError, AttributeError) as e:
            _reason = (
                f"the ggml kernels at {where} cannot be loaded ({e}): rebuild with `make install`"
            )
            return None
        if version != ABI:
            _reason = (
                f"the ggml kernels at {where} are version {version}, this Fireside needs {ABI}: "
                "rebuild with `make install`"
            )
            return None
        _declare(lib)
        _lib = lib
        return lib


def _declare(lib: ctypes.CDLL) -> None:
    c = ctypes
    p, i64, sz = c.c_void_p, c.c_int64, c.c_size_t
    for name, res, args in [
        ("fs_ggml_last_error", c.c_char_p, []),
        ("fs_ggml_info", c.c_char_p, []),
        ("fs_ggml_type_supported", c.c_int, [c.c_int]),
        ("fs_ggml_block_size", i64, [c.c_int]),
        ("fs_ggml_row_size", sz, [c.c_int, i64]),
        ("fs_ggml_requires_imatrix", c.c_int, [c.c_int]),
        ("fs_ggml_quantize", sz, [c.c_int, p, i64, i64, i64, p]),
        ("fs_ggml_matrix_new", p, [c.c_int, i64, i64, p, sz, c.c_int]),
        ("fs_ggml_matrix_free", None, [p]),
        ("fs_ggml_matrix_concat", p, [c.POINTER(p), c.c_int]),
        ("fs_ggml_matrix_repacked", c.c_int, [p]),
        ("fs_ggml_matrix_nbytes", sz, [p]),
        ("fs_ggml_matmul", c.c_int, [p, p, i64, p, c.c_int]),
        ("fs_ggml_rows", c.c_int, [p, p, i64, p]),
        ("fs_ggml_matrix_wrap_f32", p, [p, i64, i64]),
        ("fs_ggml_stepper_new", p, [*[c.c_int] * 6, c.c_float, c.c_float, p, i64, p, p]),
        ("fs_ggml_stepper_layer", c.c_int, [p, c.c_int, *[p] * 11]),
        ("fs_ggml_stepper_step", c.c_int, [p, p, c.c_int32, i64, i64, i64, p, c.c_int]),
        ("fs_ggml_stepper_free", None, [p]),
    ]:
        fn = getattr(lib, name)
        fn.restype = res
        fn.argtypes = args


def reset() -> None:
    """Forget the last load attempt, so the next call looks for the library again (after a
    build, or with another FIRESIDE_GGML_LIB). Matrices made before keep working."""
    global _lib, _reason, _tried
    with _lock:
        _lib, _reason, _tried = None, None, False


def available() -> bool:
    """Whether the ggml kernels are built and load."""
    return _load() is not None


def unavailable_reason() -> str | None:
    """Why the kernels cannot be used (what to do about it), or None when they can."""
    return None if _load() is not None else _reason


def _need() -> ctypes.CDLL:
    lib = _load()
    if lib is None:
        raise KernelsUnavailableError(_reason or "the ggml kernels are unavailable")
    return lib


def _error(lib: ctypes.CDLL) -> str:
    return str(lib.fs_ggml_last_error().decode())


def info() -> str:
    """The build, for logs: ggml's version, OpenMP, repacking and the CPU features used."""
    return str(_need().fs_ggml_info().decode())


def set_threads(n: int | None) -> None:
    """Run matmuls on `n` threads; None: follow torch.get_num_threads()."""
    global _threads
    if n is not None and n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    _threads = n


def threads() -> int:
    return _threads if _threads is not None else torch.get_num_threads()


@contextmanager
def step_threads(n: int) -> Iterator[None]:
    """Hold the matmul thread count at `n` inside the block unless set_threads fixed one (the
    engine's one-row step drops torch's pool to one thread for OpenBLAS; ggml's matmuls keep
    the count the step started with)."""
    global _threads
    before = _threads
    if before is None:
        _threads = n
    try:
        yield
    finally:
        _threads = before


def _check_type(qtype: QType | int) -> QType:
    try:
        t = QType(int(qtype))
    except ValueError:
        name = getattr(qtype, "name", None) or f"number {int(qtype)}"
        names = ", ".join(sorted(s.name for s in SUPPORTED))
        raise CheckpointError(
            f"tensor type {name} is not supported by Fireside's kernels (supported: {names})"
        ) from None
    if t not in SUPPORTED:
        names = ", ".join(sorted(s.name for s in SUPPORTED))
        raise CheckpointError(
            f"tensor type {t.name} is not supported by Fireside's kernels (supported: {names})"
        )
    return t


def _row_bytes(lib: ctypes.CDLL, t: QType, in_features: int) -> int:
    size = int(lib.fs_ggml_row_size(int(t), in_features))
    if size == 0:
        block = int(lib.fs_ggml_block_size(int(t)))
        raise CheckpointError(
            f"{t.name} stores rows in blocks of {block} values: in_features {in_features} is not a multiple of {block}"
        )
    return size


def quantize_blocks(weight: Tensor, qtype: QType | int) -> np.ndarray:
    """fp32 weight [out, in] -> its rows as raw `qtype` blocks (GGUF layout), uint8 [out, row_bytes].

    Rows are split over `threads()` threads (ggml's quantizers are single-threaded; the call
    releases the GIL)."""
    lib = _need()
    t = _check_type(qtype)
    if weight.dim() != 2:
        raise ValueError(
            f"quantize_blocks takes a 2-D weight [out, in], got shape {tuple(weight.shape)}"
        )
    if lib.fs_ggml_requires_imatrix(int(t)):
        raise CheckpointError(
            f"{t.name} needs an importance matrix to quantize; Fireside does not make one"
        )
    out_features, in_features = weight.shape
    row_bytes = _row_bytes(lib, t, in_features)
    src = np.ascontiguousarray(weight.detach().to("cpu", torch.float32).numpy())
    if not np.isfinite(src).all():
        raise ValueError("the weight to quantize holds NaN or infinite values")
    dst = np.empty((out_features, row_bytes), dtype=np.uint8)
    n = max(1, min(threads(), out_features // 64 or 1))
    bounds = [out_features * k // n for k in range(n + 1)]

    def run(k: int) -> None:
        r0, r1 = bounds[k], bounds[k + 1]
        if r1 > r0:
            written = lib.fs_ggml_quantize(
                int(t), src.ctypes.data, r0, r1 - r0, in_features, dst.ctypes.data
            )
            if written != (r1 - r0) * row_bytes:
                raise CheckpointError(f"quantizing to {t.name} failed: {_error(lib)}")

    if n == 1:
        run(0)
    else:
        with ThreadPoolExecutor(n) as pool:
            list(pool.map(run, range(n)))
    return dst


class QuantMatrix:
    """One weight matrix [out_features, in_features] in a ggml type, held by the library."""

    qtype: QType
    out_features: int
    in_features: int
    nbytes: int  # resident bytes of the weights (repacked or plain)
    lookup: bool  # plain layout: rows() and dequantize() work
    repacked: bool

    def __init__(self) -> None:
        raise TypeError("use QuantMatrix.from_blocks")

    @classmethod
    def from_blocks(
        cls,
        raw: np.ndarray,
        qtype: QType | int,
        out_features: int,
        in_features: int,
        *,
        lookup: bool = False,
    ) -> QuantMatrix:
        """A matrix from raw row blocks in GGUF layout (any shape, out_features * row bytes in
        all). lookup=True keeps the plain layout, for embeddings (rows()) and dequantize();
        otherwise it is repacked for matmul where ggml has a layout for the type."""
        lib = _need()
        t = _check_type(qtype)
        if out_features < 1 or in_features < 1:
            raise CheckpointError(
                f"a {t.name} matrix needs positive dimensions, got {out_features} x {in_features}"
            )
        want = _row_bytes(lib, t, in_features) * out_features
        data = np.ascontiguousarray(raw)
        if data.nbytes != want:
            raise CheckpointError(
                f"a {t.name} matrix of {out_features} x {in_features} takes {want} bytes, got {data.nbytes}"
            )
        handle = lib.fs_ggml_matrix_new(
            int(t),
            out_features,
            in_features,
            data.ctypes.data,
            data.nbytes,
            _PLAIN if lookup else 0,
        )
        if not handle:
            raise CheckpointError(_error(lib))
        return cls._wrap(lib, handle, t, out_features, in_features, lookup)

    @classmethod
    def concat(cls, parts: Sequence[QuantMatrix]) -> QuantMatrix:
        """One matrix of the parts' rows in order (q, k, v -> qkv), from their bytes as held:
        the parts must share qtype, in_features and layout (`can_concat`). The parts stay
        valid; drop them to free their memory."""
        if not cls.can_concat(parts):
            desc = ", ".join(repr(p) for p in parts)
            raise ValueError(
                f"these matrices cannot be stacked (type, width and layout must match): {desc}"
            )
        lib = parts[0]._lib
        handles = (ctypes.c_void_p * len(parts))(*[p._handle for p in parts])
        handle = lib.fs_ggml_matrix_concat(handles, len(parts))
        if not handle:
            raise ValueError(_error(lib))
        first = parts[0]
        out = sum(p.out_features for p in parts)
        return cls._wrap(lib, handle, first.qtype, out, first.in_features, first.lookup)

    @staticmethod
    def can_concat(parts: Sequence[QuantMatrix]) -> bool:
        first = parts[0] if parts else None
        return first is not None and all(
            (p.qtype, p.in_features, p.lookup, p.repacked)
            == (first.qtype, first.in_features, first.lookup, first.repacked)
            for p in parts
        )

    @classmethod
    def wrap_f32(cls, array: np.ndarray) -> QuantMatrix:
        """A dense fp32 matrix [out, in] used where it lies, for the whole-step graph
        (fireside.kernels.step): nothing is copied, and the matrix keeps `array` alive."""
        lib = _need()
        if array.dtype != np.float32 or array.ndim != 2 or not array.flags.c_contiguous:
            raise ValueError(f"wrap_f32 takes a C-contiguous 2-D float32 array, got {array.dtype}")
        out_features, in_features = array.shape
        handle = lib.fs_ggml_matrix_wrap_f32(array.ctypes.data, out_features, in_features)
        if not handle:
            raise ValueError(_error(lib))
        m = cls._wrap(lib, handle, QType.F32, out_features, in_features, False)
        m._keep = array
        return m

    @classmethod
    def _wrap(
        cls,
        lib: ctypes.CDLL,
        handle: int,
        t: QType,
        out_features: int,
        in_features: int,
        lookup: bool,
    ) -> QuantMatrix:
        m = object.__new__(cls)
        m._lib = lib
        m._handle = handle
        m.qtype, m.out_features, m.in_features, m.lookup = t, out_features, in_features, lookup
        m.repacked = bool(lib.fs_ggml_matrix_repacked(handle))
        m.nbytes = int(lib.fs_ggml_matrix_nbytes(handle))
        return m

    _lib: ctypes.CDLL
    _handle: int | None
    _keep: np.ndarray | None = None  # the memory a wrapped fp32 matrix reads

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle:
            self._lib.fs_ggml_matrix_free(handle)
            self._handle = None

    def __repr__(self) -> str:
        layout = "repacked" if self.repacked else "plain"
        return f"QuantMatrix({self.qtype.name}, {self.out_features}x{self.in_features}, {layout}, {self.nbytes} bytes)"

    @property
    def shape(self) -> tuple[int, int]:
        return (self.out_features, self.in_features)

    def matmul(self, x: Tensor) -> Tensor:
        """x [..., in] fp32 (CPU) -> x @ W.T, [..., out] fp32. No autograd."""
        # Runs ~50 times a decode step: the checks are the cheapest torch offers (a few
        # microseconds in all beside the call itself).
        shape = x.shape
        if shape[-1] != self.in_features or x.dtype is not torch.float32 or not x.is_cpu:
            if shape[-1] != self.in_features:
                raise ValueError(
                    f"matmul: x has {shape[-1]} features, the matrix takes {self.in_features}"
                )
            raise ValueError(f"matmul takes fp32 CPU activations, got {x.dtype} on {x.device}")
        if not x.is_contiguous():
            x = x.contiguous()
        y = torch.empty((*shape[:-1], self.out_features), dtype=torch.float32)
        rows = x.numel() // self.in_features
        n = _threads if _threads is not None else torch.get_num_threads()
        if rows and self._lib.fs_ggml_matmul(self._handle, x.data_ptr(), rows, y.data_ptr(), n):
            raise RuntimeError(f"ggml matmul failed: {_error(self._lib)}")
        return y

    def rows(self, ids: Tensor) -> Tensor:
        """Rows `ids` dequantized to fp32, [*ids.shape, in] (embedding lookup; lookup=True only)."""
        if not self.lookup:
            raise ValueError("rows() needs a matrix made with lookup=True (the plain layout)")
        flat = ids.detach().to("cpu", torch.int64).contiguous().view(-1)
        out = torch.empty((flat.numel(), self.in_features), dtype=torch.float32)
        if flat.numel() and self._lib.fs_ggml_rows(
            self._handle, flat.data_ptr(), flat.numel(), out.data_ptr()
        ):
            raise IndexError(_error(self._lib))
        return out.view(*ids.shape, self.in_features)

    def dequantize(self) -> Tensor:
        """The whole matrix in fp32, [out, in] (tests, export; lookup=True only: the repacked
        layout has no way back)."""
        if not self.lookup:
            raise ValueError(
                f"dequantize() needs the plain layout: this {self.qtype.name} matrix was made for matmul "
                "(make it with lookup=True)"
            )
        return self.rows(torch.arange(self.out_features))
