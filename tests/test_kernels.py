"""The ggml kernels (fireside.kernels.ggml): products, lookups and quantization checked against
gguf's own numpy (de)quantization, the types and shapes they refuse, and a missing build."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, quants

from fireside.errors import CheckpointError
from fireside.kernels import ggml
from fireside.kernels.ggml import KernelsUnavailableError, QType, QuantMatrix
from fireside.model import serving
from tests.kernels_utils import require_kernels

TYPES = [
    QType.F32,
    QType.F16,
    QType.BF16,
    QType.Q8_0,
    QType.Q4_0,
    QType.Q4_K,
    QType.Q5_K,
    QType.Q6_K,
    QType.Q4_1,
    QType.Q5_0,
    QType.Q5_1,
]
# max |y - y_ref| / max |y_ref| of a matmul against x @ W_dequantized.T in float64. The weights
# are exact (the reference dequantizes the very blocks the kernel reads); the error is the
# activations': ggml rounds x to the weights' dot type (f16, bf16) or to int8 blocks (Q8_0 for
# the 32-blocks, Q8_K for the K-quants), ~0.4-1% on Gaussian data.
MATMUL_TOL = {QType.F32: 1e-5, QType.F16: 2e-3, QType.BF16: 1e-2}
QUANT_MATMUL_TOL = 2e-2
# max |W_dequantized - W| / max |W| for Gaussian weights: each format's own rounding, with
# headroom (measured: Q8_0 0.4%, Q6_K 1.5%, Q5_K 3.2%, Q4_K 6.1%, Q4_0 7.3%, Q4_1 4.9%,
# Q5_0 3.4%, Q5_1 2.3%).
ROUND_TRIP_TOL = {
    QType.F32: 0.0,
    QType.F16: 1e-3,
    QType.BF16: 4e-3,
    QType.Q8_0: 0.01,
    QType.Q6_K: 0.03,
    QType.Q5_K: 0.06,
    QType.Q4_K: 0.12,
    QType.Q4_0: 0.15,
    QType.Q4_1: 0.10,
    QType.Q5_0: 0.07,
    QType.Q5_1: 0.05,
}


@pytest.fixture(autouse=True)
def kernels() -> Iterator[None]:
    require_kernels()
    yield
    ggml.set_threads(None)


def reference(raw: np.ndarray, qtype: QType, out: int, n_in: int) -> np.ndarray:
    """gguf's numpy dequantization of the blocks: an implementation independent of ggml's C."""
    return (
        quants.dequantize(raw, GGMLQuantizationType(int(qtype)))
        .reshape(out, n_in)
        .astype(np.float64)
    )


def weights(out: int, n_in: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(out, n_in, generator=torch.Generator().manual_seed(seed))


def test_qtype_numbers_are_gguf_numbers() -> None:
    for t in QType:
        assert GGMLQuantizationType[t.name].value == t.value


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_matmul_matches_the_dequantized_weights(qtype: QType) -> None:
    out, n_in = 40, 512  # 40 rows: a multiple of 8, so Q4_0/Q4_K are repacked
    raw = ggml.quantize_blocks(weights(out, n_in), qtype)
    w = torch.from_numpy(reference(raw, qtype, out, n_in))
    m = QuantMatrix.from_blocks(raw, qtype, out, n_in)
    if "avx2=1" in ggml.info():  # x86: ggml repacks these two of the types (8 rows interleaved)
        assert m.repacked == (qtype in (QType.Q4_0, QType.Q4_K))
    tol = MATMUL_TOL.get(qtype, QUANT_MATMUL_TOL)
    for rows in (1, 3, 8, 64):
        x = torch.randn(rows, n_in, generator=torch.Generator().manual_seed(rows))
        y = m.matmul(x)
        assert y.shape == (rows, out) and y.dtype == torch.float32
        want = x.double() @ w.T
        err = float((y.double() - want).abs().max() / want.abs().max())
        assert err < tol, f"{qtype.name} rows={rows}: {err:.4f}"


def test_rows_not_a_multiple_of_8_run_unrepacked() -> None:
    raw = ggml.quantize_blocks(weights(36, 256), QType.Q4_0)
    m = QuantMatrix.from_blocks(raw, QType.Q4_0, 36, 256)
    assert not m.repacked  # ggml interleaves 8 rows at a time: 36 cannot be
    x = torch.randn(5, 256)
    want = x.double() @ torch.from_numpy(reference(raw, QType.Q4_0, 36, 256)).T
    assert float((m.matmul(x).double() - want).abs().max() / want.abs().max()) < QUANT_MATMUL_TOL


def test_matmul_takes_any_leading_shape_and_threads() -> None:
    raw = ggml.quantize_blocks(weights(64, 256), QType.Q4_0)
    m = QuantMatrix.from_blocks(raw, QType.Q4_0, 64, 256)
    x = torch.randn(2, 5, 256)
    y = m.matmul(x)
    assert y.shape == (2, 5, 64)
    # One row at a time, a batch, another thread count, a non-contiguous input: one product.
    rows = torch.stack([m.matmul(r) for r in x.reshape(10, 256)]).reshape(2, 5, 64)
    assert torch.allclose(y, rows, rtol=1e-5, atol=1e-5)
    ggml.set_threads(1)
    assert ggml.threads() == 1
    assert torch.allclose(m.matmul(x), y, rtol=1e-5, atol=1e-5)
    xt = x.transpose(0, 1)
    assert torch.allclose(m.matmul(xt), y.transpose(0, 1), rtol=1e-5, atol=1e-5)
    assert m.matmul(torch.empty(0, 256)).shape == (0, 64)


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_rows_and_dequantize_match_gguf(qtype: QType) -> None:
    out, n_in = 36, 256  # 36 rows: not a multiple of 8 (the plain layout in any case)
    raw = ggml.quantize_blocks(weights(out, n_in, seed=1), qtype)
    m = QuantMatrix.from_blocks(raw, qtype, out, n_in, lookup=True)
    assert m.lookup and not m.repacked
    full = m.dequantize()
    assert np.array_equal(full.double().numpy(), reference(raw, qtype, out, n_in))
    ids = torch.tensor([[3, 0, 35], [7, 7, 1]])
    assert torch.equal(m.rows(ids), full[ids])
    with pytest.raises(IndexError, match="row 36 is out of range"):
        m.rows(torch.tensor([36]))


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_quantize_round_trip_error(qtype: QType) -> None:
    w = weights(64, 512, seed=2)
    raw = ggml.quantize_blocks(w, qtype)
    assert raw.dtype == np.uint8 and raw.shape[0] == 64
    back = reference(raw, qtype, 64, 512)
    err = float(np.abs(back - w.double().numpy()).max() / w.abs().max())
    assert err <= ROUND_TRIP_TOL[qtype], f"{qtype.name}: {err:.4f}"
    # The bytes are what gguf's own quantizer writes, where it has one.
    if qtype in (QType.Q8_0, QType.BF16, QType.F16):
        ours = quants.quantize(w.numpy(), GGMLQuantizationType(int(qtype)))
        assert np.mean(np.ascontiguousarray(ours).view(np.uint8).reshape(raw.shape) == raw) > 0.999


def test_concat_stacks_rows_exactly() -> None:
    for qtype, lookup in [
        (QType.Q4_0, False),
        (QType.Q4_K, False),
        (QType.Q8_0, False),
        (QType.Q6_K, True),
    ]:
        parts = [
            QuantMatrix.from_blocks(
                ggml.quantize_blocks(weights(n, 256, seed=n), qtype), qtype, n, 256, lookup=lookup
            )
            for n in (64, 32, 32)
        ]
        stacked = QuantMatrix.concat(parts)
        assert stacked.shape == (128, 256) and stacked.repacked == parts[0].repacked
        assert stacked.nbytes == sum(p.nbytes for p in parts)
        x = torch.randn(3, 256)
        assert torch.allclose(
            stacked.matmul(x), torch.cat([p.matmul(x) for p in parts], -1), rtol=1e-6, atol=1e-6
        )
    q8 = QuantMatrix.from_blocks(
        ggml.quantize_blocks(weights(8, 256), QType.Q8_0), QType.Q8_0, 8, 256
    )
    q4 = QuantMatrix.from_blocks(
        ggml.quantize_blocks(weights(8, 256), QType.Q4_0), QType.Q4_0, 8, 256
    )
    with pytest.raises(ValueError, match="cannot be stacked"):
        QuantMatrix.concat([q8, q4])


def test_bad_types_and_shapes_are_named() -> None:
    w = weights(16, 256)
    with pytest.raises(CheckpointError, match="Q3_K is not supported"):
        ggml.quantize_blocks(w, QType.Q3_K)
    with pytest.raises(CheckpointError, match="IQ2_XXS is not supported"):
        QuantMatrix.from_blocks(np.zeros(10, np.uint8), GGMLQuantizationType.IQ2_XXS, 1, 256)
    with pytest.raises(CheckpointError, match="number 99"):
        ggml.quantize_blocks(w, 99)
    with pytest.raises(
        CheckpointError, match="Q4_K stores rows in blocks of 256 values: in_features 288"
    ):
        ggml.quantize_blocks(weights(8, 288), QType.Q4_K)
    raw = ggml.quantize_blocks(w, QType.Q8_0)
    with pytest.raises(CheckpointError, match="takes 4352 bytes, got 4351"):
        QuantMatrix.from_blocks(raw.reshape(-1)[:-1], QType.Q8_0, 16, 256)
    with pytest.raises(CheckpointError, match="positive dimensions"):
        QuantMatrix.from_blocks(raw, QType.Q8_0, 0, 256)
    w[3, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        ggml.quantize_blocks(w, QType.Q8_0)
    bad = raw.copy()
    bad[0, :2] = np.frombuffer(np.float16(np.inf).tobytes(), np.uint8)  # a block's scale
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        QuantMatrix.from_blocks(bad, QType.Q8_0, 16, 256)


def test_wrong_use_is_refused() -> None:
    raw = ggml.quantize_blocks(weights(16, 256), QType.Q4_0)
    m = QuantMatrix.from_blocks(raw, QType.Q4_0, 16, 256)
    assert m.repacked
    with pytest.raises(ValueError, match="lookup=True"):
        m.rows(torch.tensor([0]))
    with pytest.raises(ValueError, match="plain layout"):
        m.dequantize()
    with pytest.raises(ValueError, match="x has 128 features, the matrix takes 256"):
        m.matmul(torch.randn(1, 128))
    with pytest.raises(ValueError, match="fp32 CPU activations"):
        m.matmul(torch.randn(1, 256, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="threads must be >= 1"):
        ggml.set_threads(0)
    with pytest.raises(TypeError):
        QuantMatrix()


def test_missing_build_says_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    missing = f"{tmp_path}/libfireside_ggml.so"
    monkeypatch.setenv(ggml.LIB_ENV, missing)
    ggml.reset()
    try:
        assert not ggml.available()
        reason = ggml.unavailable_reason()
        assert reason is not None and missing in reason and "make install" in reason
        with pytest.raises(KernelsUnavailableError, match="not built"):
            ggml.quantize_blocks(weights(8, 256), QType.Q8_0)
        with pytest.raises(KernelsUnavailableError, match="not built"):
            QuantMatrix.from_blocks(np.zeros(272, np.uint8), QType.Q8_0, 1, 256)
    finally:
        monkeypatch.delenv(ggml.LIB_ENV)
        ggml.reset()
    assert ggml.available() and "openmp" in ggml.info()


def test_one_row_steps_keep_the_matmul_threads() -> None:
    # The engine's one-row step drops torch's pool to one thread (numpy's BLAS runs fp32
    # projections on its own threads); quantized matmuls keep the count the step began with.
    before = torch.get_num_threads()
    with serving.one_row_threads(1, torch.device("cpu"), torch.float32):
        assert torch.get_num_threads() == 1
        assert ggml.threads() == before
    assert ggml.threads() == torch.get_num_threads() == before
    ggml.set_threads(3)
    with serving.one_row_threads(1, torch.device("cpu"), torch.float32):
        assert ggml.threads() == 3  # an explicit count wins
