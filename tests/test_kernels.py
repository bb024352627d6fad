"""Every C kernel against the pure-Python reference (tests/reference.py).

GEMM shapes are chosen to cross the blocking edges of csrc/gemm.c (MR=8 rows,
NR=32 columns with AVX-512 / 16 with AVX / 8 in plain C, KC=1024 deep; full
column panels of a B stored (K,N) are read in place, the others packed) and
each case runs on 1 and 2 threads; the result must not depend on the thread
count at all.
"""
import functools
import math
import random

import pytest

from pynn._kernels import ffi, lib
from pynn.tensor import Tensor

import reference as ref
from conftest import THREAD_COUNTS, needs_threads
from reference import bits

NAN = float("nan")
INF = float("inf")
PAR = 65536 + 7  # long enough for the OpenMP path of the element-wise kernels



# ---- GEMM --------------------------------------------------------------------

# (M, N, K, ta, tb, bias, accumulate); sum of M*N*K stays ~16e6 (reference cost)
GEMM_CASES = [
    (1, 1, 1, 0, 0, False, False),
    (1, 1, 1, 1, 1, True, True),
    (7, 7, 7, 1, 1, False, False),
    (7, 31, 255, 0, 1, True, False),        # all below one tile / one KC block
    (8, 32, 256, 1, 0, False, False),       # exactly one full tile, one KC block
    (9, 33, 257, 0, 0, True, True),         # one past every edge
    (9, 32, 1, 1, 0, True, True),           # K = 1
    (8, 1, 785, 0, 0, True, False),         # N = 1, K > 3*KC
    (1, 65, 513, 0, 1, False, True),        # M = 1, K = 2*KC + 1
    (1, 785, 33, 0, 1, True, False),        # wide: 25 column panels
    (257, 1, 256, 1, 1, True, False),       # tall: 3 MC blocks, one column
    (129, 65, 257, 1, 1, True, False),      # MC + 1 rows, KC + 1 depth
    (129, 31, 513, 0, 0, True, False),
    (257, 33, 257, 0, 1, False, True),      # 2*MC + 1 rows
    (128, 32, 512, 1, 0, False, False),     # exact multiples everywhere
    (33, 65, 785, 1, 0, True, False),
    (65, 33, 785, 0, 1, True, True),
    (100, 10, 785, 0, 1, True, False),      # dense forward: (B,C).(OC,C)^T
    (100, 785, 10, 0, 0, False, False),     # dense backward dinp
    (10, 785, 100, 1, 0, False, False),     # dense backward dweight
    (64, 64, 255, 1, 1, True, True),
    (9, 33, 1025, 0, 0, True, True),        # K = KC + 1: B read in place, 2 blocks
    (17, 64, 2049, 1, 0, False, False),     # K = 2*KC + 1, two full in-place panels
    (9, 40, 1100, 0, 1, True, False),       # K > KC, transposed B
    (9, 1024, 20, 0, 0, True, False),       # rows 4 KB apart: full panels copied
]


def _case_id(case):
    M, N, K, ta, tb, bias, acc = case
    return (f"{'T' if ta else 'N'}{'T' if tb else 'N'}-{M}x{N}x{K}"
            f"{'-bias' if bias else ''}{'-acc' if acc else ''}")


@functools.cache
def gemm_data(case):
    """Inputs and the reference result of one case (computed once)."""
    M, N, K, ta, tb, has_bias, acc = case
    rng = random.Random(hash(case) & 0xFFFF)
    A = ref.rand_list(rng, M * K)
    B = ref.rand_list(rng, K * N)
    bias = ref.rand_list(rng, N) if has_bias else None
    C0 = ref.rand_list(rng, M * N, -2.0, 2.0) if acc else None
    want, mag = ref.matmul(ta, tb, M, N, K, A, B, bias, C0)
    return A, B, bias, C0, want, mag


def run_gemm(case, threads, A, B, bias, C0):
    M, N, K, ta, tb, _, acc = case
    lib.pynn_set_threads(threads)
    tA, tB = ref.tensor(A), ref.tensor(B)
    tbias = ref.tensor(bias) if bias is not None else None
    # without accumulate, C starts as NaN garbage: the kernel must overwrite it
    tC = ref.tensor(C0) if acc else ref.tensor([NAN] * (M * N))
    lib.pynn_gemm(ta, tb, M, N, K, tA.ptr, tB.ptr, tbias.ptr if tbias else ffi.NULL,
                  tC.ptr, 1 if acc else 0)
    return tC.tolist()


def gemm_tolerance(K):
    """The largest error allowed, relative to the sum of |terms| of each element
    (max_rel_err). Not the worst case of a K-term float32 sum, (K + 1) u: the
    test data have random signs, so the partial sums, and the rounding errors
    with them, stay small next to sum |terms| whatever K is. Measured: at most
    3.7 u over every case here (K up to 2049, 1 and 2 threads), u = 2^-24. The
    bound is 32 u: room for other compilers and targets, while a product on
    float16 inputs (u = 2^-11) or one that drops a term fails it."""
    del K  # the same for every K (see above); the callers name theirs
    return 32 * 2.0 ** -24


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", GEMM_CASES, ids=_case_id)
def test_gemm_matches_reference(case, threads):
    A, B, bias, C0, want, mag = gemm_data(case)
    got = run_gemm(case, threads, A, B, bias, C0)
    err = ref.max_rel_err(got, want, mag)
    assert err <= gemm_tolerance(case[2]), f"max normalized error {err:.3g}"


PAR_MIN_FLOPS = 50000  # csrc/internal.h: a product opens a parallel region from here


@pytest.mark.parametrize("case", [c for c in GEMM_CASES
                                  if 2 * c[0] * c[1] * c[2] >= PAR_MIN_FLOPS], ids=_case_id)
def test_gemm_bit_identical_across_threads(case):
    # only the cases large enough to actually open a parallel region
    A, B, bias, C0, _, _ = gemm_data(case)
    one = run_gemm(case, 1, A, B, bias, C0)
    two = run_gemm(case, 2, A, B, bias, C0)
    three = run_gemm(case, 3, A, B, bias, C0)
    assert bits(one) == bits(two) == bits(three)


def test_gemm_all_four_layouts_covered():
    assert {(c[3], c[4]) for c in GEMM_CASES} == {(0, 0), (0, 1), (1, 0), (1, 1)}


@pytest.mark.parametrize("accumulate", [0, 1])
@pytest.mark.parametrize("with_bias", [False, True])
def test_gemm_k_zero_is_bias_or_zero(accumulate, with_bias):
    M, N = 3, 5
    bias = [float(j + 1) for j in range(N)]
    C0 = [10.0 * i for i in range(M * N)]
    tC = ref.tensor(C0 if accumulate else [NAN] * (M * N))
    dummy = ref.tensor([NAN])
    tbias = ref.tensor(bias)
    lib.pynn_gemm(0, 0, M, N, 0, dummy.ptr, dummy.ptr,
                  tbias.ptr if with_bias else ffi.NULL, tC.ptr, accumulate)
    want = []
    for i in range(M):
        for j in range(N):
            r = bias[j] if with_bias else 0.0
            want.append(C0[i * N + j] + r if accumulate else r)
    assert tC.tolist() == want


@pytest.mark.parametrize("M,N", [(0, 5), (5, 0), (0, 0)])
def test_gemm_empty_output_touches_nothing(M, N):
    C = ref.tensor([7.0] * 4)
    A = ref.tensor([1.0] * 4)
    lib.pynn_gemm(0, 0, M, N, 3, A.ptr, A.ptr, ffi.NULL, C.ptr, 0)
    assert C.tolist() == [7.0] * 4


def test_gemm_small_exact_hand_case():
    # [[1,2],[3,4]] . [[5,6],[7,8]] + [1, -1]: small integers are exact in float32
    A, B = ref.tensor([1, 2, 3, 4]), ref.tensor([5, 6, 7, 8])
    bias, C = ref.tensor([1, -1]), Tensor((4,))
    hand = {(0, 0): [19, 22, 43, 50],   # [[1,2],[3,4]] . [[5,6],[7,8]]
            (0, 1): [17, 23, 39, 53],   # A . B^T
            (1, 0): [26, 30, 38, 44],   # A^T . B
            (1, 1): [23, 31, 34, 46]}   # A^T . B^T
    for (ta, tb), prod in hand.items():
        want = [v + b for v, b in zip(prod, [1, -1, 1, -1])]
        assert ref.matmul(ta, tb, 2, 2, 2, [1, 2, 3, 4], [5, 6, 7, 8], [1, -1])[0] == want
        lib.pynn_gemm(ta, tb, 2, 2, 2, A.ptr, B.ptr, bias.ptr, C.ptr, 0)
        assert C.tolist() == want, (ta, tb)


def test_gemm_workspace_release_and_regrow():
    case = (9, 33, 257, 0, 0, True, True)
    A, B, bias, C0, _, _ = gemm_data(case)
    small = (7, 7, 7, 1, 1, False, False)
    before = run_gemm(case, 1, A, B, bias, C0)
    lib.pynn_release_workspaces()
    run_gemm(small, 1, *gemm_data(small)[:4])  # regrow small first
    after = run_gemm(case, 1, A, B, bias, C0)  # then larger again
    lib.pynn_release_workspaces()
    lib.pynn_release_workspaces()  # twice is harmless
    again = run_gemm(case, 1, A, B, bias, C0)
    assert bits(before) == bits(after) == bits(again)


# ---- dense layer ----------------------------------------------------------------

DENSE_SHAPES = [(1, 1, 1), (6, 5, 7), (13, 33, 9), (3, 257, 40)]


@pytest.mark.parametrize("B,C,OC", DENSE_SHAPES)
@pytest.mark.parametrize("threads", [1, 2])
def test_dense_forward(B, C, OC, threads):
    lib.pynn_set_threads(threads)
    rng = random.Random(B * 1000 + C * 10 + OC)
    inp, w, b = ref.rand_list(rng, B * C), ref.rand_list(rng, OC * C), ref.rand_list(rng, OC)
    out = ref.tensor([NAN] * (B * OC))
    for bias in (b, None):
        tb = ref.tensor(bias) if bias else None
        lib.dense_forward(out.ptr, ref.tensor(inp).ptr, ref.tensor(w).ptr,
                          tb.ptr if tb else ffi.NULL, B, C, OC)
        want, mag = ref.matmul(0, 1, B, OC, C, inp, w, bias)
        assert ref.max_rel_err(out.tolist(), want, mag) <= gemm_tolerance(C)


@pytest.mark.parametrize("B,C,OC", DENSE_SHAPES + [(64, 20, 130)])  # last: 3 dbias blocks
@pytest.mark.parametrize("with_dinp", [True, False])
@pytest.mark.parametrize("with_dbias", [True, False])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_dense_backward(B, C, OC, with_dinp, with_dbias, threads):
    # the three results share one parallel region (csrc/dense.c)
    lib.pynn_set_threads(threads)
    rng = random.Random(B * 7 + C * 3 + OC)
    inp, w = ref.rand_list(rng, B * C), ref.rand_list(rng, OC * C)
    dout = ref.rand_list(rng, B * OC)
    # pre-filled garbage: backward WRITES gradients, it never accumulates
    dinp, dw, db = (ref.tensor([NAN] * n) for n in (B * C, OC * C, OC))
    lib.dense_backward(dinp.ptr if with_dinp else ffi.NULL, dw.ptr,
                       db.ptr if with_dbias else ffi.NULL, ref.tensor(dout).ptr,
                       ref.tensor(inp).ptr, ref.tensor(w).ptr, B, C, OC)
    want_dinp, want_dw, want_db = ref.dense_backward(dout, inp, w, B, C, OC)
    _, mag_dw = ref.matmul(1, 0, OC, C, B, dout, inp)
    assert ref.max_rel_err(dw.tolist(), want_dw, mag_dw) <= gemm_tolerance(B)
    if with_dinp:
        _, mag_dinp = ref.matmul(0, 0, B, C, OC, dout, w)
        assert ref.max_rel_err(dinp.tolist(), want_dinp, mag_dinp) <= gemm_tolerance(OC)
    else:
        assert all(math.isnan(v) for v in dinp.tolist())  # NULL: nothing written
    if with_dbias:
        ref.assert_close(db.tolist(), want_db, rel=1e-5, abs_=1e-6 * B, what="dbias")
    else:
        assert all(math.isnan(v) for v in db.tolist())


@pytest.mark.parametrize("B,C,OC", DENSE_SHAPES + [(64, 20, 130)])  # last: parallel mask
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_dense_relu_forward_backward(B, C, OC, threads):
    """The fused Linear+ReLU pair against Linear then ReLU, done by hand."""
    lib.pynn_set_threads(threads)
    rng = random.Random(B * 11 + C * 5 + OC)
    inp, w, b = ref.rand_list(rng, B * C), ref.rand_list(rng, OC * C), ref.rand_list(rng, OC)
    out = ref.tensor([NAN] * (B * OC))
    lib.dense_relu_forward(out.ptr, ref.tensor(inp).ptr, ref.tensor(w).ptr, ref.tensor(b).ptr,
                           B, C, OC)
    z, mag = ref.matmul(0, 1, B, OC, C, inp, w, b)
    got = out.tolist()
    assert all(v >= 0.0 for v in got)  # also: no NaN left from the garbage
    assert ref.max_rel_err(got, ref.relu(z), mag) <= gemm_tolerance(C)

    dout = ref.rand_list(rng, B * OC)
    tdout = ref.tensor(dout)
    dinp, dw, db = (ref.tensor([NAN] * n) for n in (B * C, OC * C, OC))
    lib.dense_relu_backward(dinp.ptr, dw.ptr, db.ptr, tdout.ptr, out.ptr, ref.tensor(inp).ptr,
                            ref.tensor(w).ptr, B, C, OC)
    dz = [d if y > 0 else 0.0 for d, y in zip(dout, got)]
    assert tdout.tolist() == dz  # masked in place, as documented: exactly
    want_dinp, want_dw, want_db = ref.dense_backward(dz, inp, w, B, C, OC)
    _, mag_dw = ref.matmul(1, 0, OC, C, B, dz, inp)
    assert ref.max_rel_err(dw.tolist(), want_dw, mag_dw) <= gemm_tolerance(B)
    _, mag_dinp = ref.matmul(0, 0, B, C, OC, dz, w)
    assert ref.max_rel_err(dinp.tolist(), want_dinp, mag_dinp) <= gemm_tolerance(OC)
    ref.assert_close(db.tolist(), want_db, rel=1e-5, abs_=1e-6 * B, what="dbias")


@needs_threads
@pytest.mark.parametrize("relu", [False, True])
def test_dense_backward_bit_identical_across_threads(relu):
    # one parallel region shares the products and the bias sums among the
    # threads; no element may depend on how many there are
    B, C, OC = 64, 70, 130
    rng = random.Random(3)
    inp, w = ref.tensor(ref.rand_list(rng, B * C)), ref.tensor(ref.rand_list(rng, OC * C))
    out, dout = ref.rand_list(rng, B * OC), ref.rand_list(rng, B * OC)
    results = []
    for threads in THREAD_COUNTS:
        lib.pynn_set_threads(threads)
        d = ref.tensor(dout)
        dinp, dw, db = Tensor((B, C)), Tensor((OC, C)), Tensor((OC,))
        if relu:
            lib.dense_relu_backward(dinp.ptr, dw.ptr, db.ptr, d.ptr, ref.tensor(out).ptr,
                                    inp.ptr, w.ptr, B, C, OC)
        else:
            lib.dense_backward(dinp.ptr, dw.ptr, db.ptr, d.ptr, inp.ptr, w.ptr, B, C, OC)
        results.append(bits(dinp.tolist() + dw.tolist() + db.tolist() + d.tolist()))
    assert all(r == results[0] for r in results)


@pytest.mark.parametrize("ta,tb,M,N,K", [
    (0, 0, 9, 35, 6), (1, 1, 9, 35, 6),
    (0, 1, 35, 9, 6),     # NT, M >= N: computed as it stands
    (0, 1, 9, 35, 6),     # NT, M < N: computed as C^T = B . A^T, stored transposed
    (0, 1, 9, 40, 1100),  # ... over two KC blocks: the max only after the last one
])
def test_gemm_relu_flag_with_accumulate(ta, tb, M, N, K):
    """PYNN_GEMM_RELU applies max(., 0) to the final sum, after bias and accumulation."""
    rng = random.Random(5)
    A, B, C0 = ref.rand_list(rng, M * K), ref.rand_list(rng, K * N), ref.rand_list(rng, M * N)
    bias = ref.rand_list(rng, N)
    tC = ref.tensor(C0)
    lib.pynn_gemm(ta, tb, M, N, K, ref.tensor(A).ptr, ref.tensor(B).ptr, ref.tensor(bias).ptr,
                  tC.ptr, lib.PYNN_GEMM_ACCUMULATE | lib.PYNN_GEMM_RELU)
    want, mag = ref.matmul(ta, tb, M, N, K, A, B, bias, C0)
    assert ref.max_rel_err(tC.tolist(), ref.relu(want), mag) <= gemm_tolerance(K)


def test_dense_empty_batch():
    # a (0, C) batch is legal: forward writes nothing, backward writes zero gradients
    C, OC = 5, 3
    w, b = ref.tensor([1.0] * (OC * C)), ref.tensor([1.0] * OC)
    dummy = ref.tensor([NAN])
    out = ref.tensor([7.0])
    lib.dense_forward(out.ptr, dummy.ptr, w.ptr, b.ptr, 0, C, OC)
    assert out.tolist() == [7.0]
    dw, db = ref.tensor([NAN] * (OC * C)), ref.tensor([NAN] * OC)
    lib.dense_backward(dummy.ptr, dw.ptr, db.ptr, dummy.ptr, dummy.ptr, w.ptr, 0, C, OC)
    assert dw.tolist() == [0.0] * (OC * C) and db.tolist() == [0.0] * OC


# ---- activations ----------------------------------------------------------------

def activation_input(n, rng):
    """Random values plus the special points 0, -0, tiny and large ones."""
    special = ref.f32list([0.0, -0.0, 1e-30, -1e-30, 1.0, -1.0, 20.0, -20.0, 100.0, -100.0])
    x = special + ref.rand_list(rng, max(0, n - len(special)), -3.0, 3.0)
    return x[:n]


@pytest.mark.parametrize("n,threads", [(1, 1), (37, 1), (PAR, 2)])
def test_relu(n, threads):
    lib.pynn_set_threads(threads)
    rng = random.Random(n)
    x, dout = activation_input(n, rng), ref.rand_list(rng, n)
    out, dinp = Tensor((n,)), Tensor((n,))
    lib.relu_forward(out.ptr, ref.tensor(x).ptr, n)
    lib.relu_backward(dinp.ptr, ref.tensor(dout).ptr, ref.tensor(x).ptr, n)
    assert out.tolist() == ref.relu(x)
    assert dinp.tolist() == ref.relu_backward(dout, x)  # 0 at x == 0


@pytest.mark.parametrize("n,threads", [(1, 1), (37, 1), (PAR, 2), (PAR, 3)])
def test_residual(n, threads):
    """relu(x + F(x)) and, backward, dout [out > 0] + dbody (residual.c), against the
    plain versions, bit for bit; the sum's ReLU derivative is relu_backward's
    on the output (0 where the sum is 0 or less)."""
    lib.pynn_set_threads(threads)
    rng = random.Random(n)
    x, fx = activation_input(n, rng), ref.rand_list(rng, n, -3.0, 3.0)
    fx[:2] = [-v for v in x[:2]]  # sums of exactly 0 (x[0] is 0, x[1] is -0)
    dout, dbody = ref.rand_list(rng, n), ref.rand_list(rng, n)
    out, dsum, dinp = Tensor((n,)), Tensor((n,)), Tensor((n,))
    lib.residual_forward(out.ptr, ref.tensor(x).ptr, ref.tensor(fx).ptr, n)
    want = ref.residual(ref.f32list(x), ref.f32list(fx))
    assert bits(out.tolist()) == bits(want)
    lib.relu_backward(dsum.ptr, ref.tensor(dout).ptr, out.ptr, n)
    assert dsum.tolist() == [d if s > 0 else 0.0 for d, s in zip(ref.f32list(dout), want)]
    lib.residual_backward(dinp.ptr, ref.tensor(dout).ptr, out.ptr, ref.tensor(dbody).ptr, n)
    assert bits(dinp.tolist()) == bits(ref.residual_backward(ref.f32list(dout), want,
                                                               ref.f32list(dbody)))


@pytest.mark.parametrize("slope", [0.01, 0.2])
@pytest.mark.parametrize("n,threads", [(1, 1), (37, 1), (PAR, 2)])
def test_leaky_relu(n, threads, slope):
    lib.pynn_set_threads(threads)
    rng = random.Random(n + 1)
    x, dout = activation_input(n, rng), ref.rand_list(rng, n)
    s = ref.f32(slope)
    out, dinp = Tensor((n,)), Tensor((n,))
    lib.leaky_relu_forward(out.ptr, ref.tensor(x).ptr, slope, n)
    lib.leaky_relu_backward(dinp.ptr, ref.tensor(dout).ptr, ref.tensor(x).ptr, slope, n)
    # one float32 product of two float32 values: exact after rounding
    assert out.tolist() == ref.f32list(ref.leaky_relu(x, s))
    assert dinp.tolist() == ref.f32list(ref.leaky_relu_backward(dout, x, s))


@pytest.mark.parametrize("n,threads", [(1, 1), (37, 1), (PAR, 2)])
def test_tanh(n, threads):
    lib.pynn_set_threads(threads)
    rng = random.Random(n + 2)
    x, dout = activation_input(n, rng), ref.rand_list(rng, n)
    out, dinp = Tensor((n,)), Tensor((n,))
    lib.tanh_forward(out.ptr, ref.tensor(x).ptr, n)
    y = out.tolist()
    ref.assert_close(y, ref.tanh(x), rel=1e-6, abs_=1e-7, what="tanh")
    assert all(-1.0 <= v <= 1.0 for v in y)
    lib.tanh_backward(dinp.ptr, ref.tensor(dout).ptr, out.ptr, n)
    ref.assert_close(dinp.tolist(), ref.tanh_backward(dout, y), rel=1e-6, abs_=1e-7,
                     what="tanh backward")


@pytest.mark.parametrize("steepness", [1.0, 2.5])
@pytest.mark.parametrize("n,threads", [(1, 1), (37, 1), (PAR, 2), (PAR, 3)])
def test_sigmoid(n, threads, steepness):
    lib.pynn_set_threads(threads)
    rng = random.Random(n + 3)
    x, dout = activation_input(n, rng), ref.rand_list(rng, n)
    out, dinp = Tensor((n,)), Tensor((n,))
    lib.sigmoid_forward(out.ptr, ref.tensor(x).ptr, steepness, n)
    y = out.tolist()
    ref.assert_close(y, ref.sigmoid(x, steepness), rel=1e-6, abs_=1e-7, what="sigmoid")
    assert all(0.0 <= v <= 1.0 for v in y)
    lib.sigmoid_backward(dinp.ptr, ref.tensor(dout).ptr, out.ptr, steepness, n)
    ref.assert_close(dinp.tolist(), ref.sigmoid_backward(dout, y, steepness), rel=1e-6,
                     abs_=1e-7, what="sigmoid backward")


@pytest.mark.parametrize("B,V,threads", [(1, 1, 1), (7, 10, 1), (300, 13, 2), (300, 13, 3)])
def test_mse(B, V, threads):
    lib.pynn_set_threads(threads)
    rng = random.Random(B * V)
    y, d = ref.rand_list(rng, B * V), ref.rand_list(rng, B * V)
    total = lib.mse_forward(ref.tensor(y).ptr, ref.tensor(d).ptr, B, V)
    assert total == pytest.approx(ref.mse(ref.f32list(y), ref.f32list(d)), rel=1e-12)
    dy = Tensor((B * V,))
    lib.mse_backward(dy.ptr, ref.tensor(y).ptr, ref.tensor(d).ptr, B, V)
    ref.assert_close(dy.tolist(), ref.mse_backward(ref.f32list(y), ref.f32list(d), B),
                     rel=1e-6, abs_=1e-7, what="mse backward")


def test_elementwise_in_place_aliasing():
    # out == inp is how a caller may save memory; element-wise kernels allow it
    rng = random.Random(5)
    x = activation_input(100, rng)
    t = ref.tensor(x)
    lib.relu_forward(t.ptr, t.ptr, 100)
    assert t.tolist() == ref.relu(x)


# ---- dropout --------------------------------------------------------------------

@pytest.mark.parametrize("n,threads", [(1, 1), (37, 1), (PAR, 2)])
@pytest.mark.parametrize("p", [0.0, 0.25, 0.3, 0.5])  # 0.3: the presets', not exact in float
def test_dropout(n, threads, p):
    lib.pynn_set_threads(threads)
    rng = random.Random(n + int(p * 100))
    x, d = ref.rand_list(rng, n), ref.rand_list(rng, n)
    seed = rng.getrandbits(64)
    keep = [ref.dropout_keep(seed, i, p) for i in range(n)]
    scale = ref.f32(1.0 / ref.f32(1.0 - ref.f32(p)))
    out, dinp = ref.tensor([NAN] * n), ref.tensor([NAN] * n)
    lib.dropout_forward(out.ptr, ref.tensor(x).ptr, p, seed, n)
    lib.dropout_backward(dinp.ptr, ref.tensor(d).ptr, p, seed, n)
    assert out.tolist() == [ref.f32(v * scale) if k else 0.0 for v, k in zip(x, keep)]
    assert dinp.tolist() == [ref.f32(v * scale) if k else 0.0 for v, k in zip(d, keep)]
    if n == PAR:  # the share kept is 1 - p, within 5 standard deviations
        assert abs(sum(keep) / n - (1 - p)) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-12


def test_dropout_other_seed_other_mask():
    x = ref.tensor([1.0] * 1000)
    a, b = ref.tensor([0.0] * 1000), ref.tensor([0.0] * 1000)
    lib.dropout_forward(a.ptr, x.ptr, 0.5, 1, 1000)
    lib.dropout_forward(b.ptr, x.ptr, 0.5, 2, 1000)
    assert a.tolist() != b.tolist()


# ---- softmax + cross-entropy ---------------------------------------------------

def ce_run(logits, targets, B, V, with_losses=True):
    probs = ref.tensor([NAN] * (B * V))
    losses = ref.tensor([NAN] * B)
    correct = ffi.new("int32_t *", 12345)
    total = lib.crossentropy_softmax_forward(probs.ptr, losses.ptr if with_losses else ffi.NULL,
                                             correct, ref.tensor(logits).ptr,
                                             ref.ints(targets).ptr, 0.0, B, V)
    return total, correct[0], probs, losses


@pytest.mark.parametrize("B,V", [(1, 1), (1, 2), (6, 3), (17, 10), (4, 785)])
def test_crossentropy_forward_backward(B, V):
    rng = random.Random(B * 31 + V)
    logits = ref.rand_list(rng, B * V, -4.0, 4.0)
    targets = [rng.randrange(V) for _ in range(B)]
    total, correct, probs, losses = ce_run(logits, targets, B, V)
    want_p, want_l, want_total, want_correct = ref.softmax_ce(logits, targets, B, V)
    ref.assert_close(probs.tolist(), want_p, rel=1e-5, abs_=1e-7, what="probs")
    ref.assert_close(losses.tolist(), want_l, rel=1e-5, abs_=1e-6, what="losses")
    assert total == pytest.approx(want_total, rel=1e-5, abs=1e-6)
    assert correct == want_correct
    d = ref.tensor([NAN] * (B * V))
    lib.crossentropy_softmax_backward(d.ptr, probs.ptr, ref.ints(targets).ptr, 0.0, B, V)
    ref.assert_close(d.tolist(), ref.softmax_ce_backward(probs.tolist(), targets, B, V),
                     rel=1e-6, abs_=1e-8, what="dlogits")
    # every row of the gradient sums to ~0 (softmax minus one-hot)
    for b in range(B):
        assert abs(sum(d.tolist()[b * V:(b + 1) * V])) < 1e-6


def test_crossentropy_losses_may_be_null():
    logits, targets = [1.0, 2.0, 3.0, 0.5, 0.5, 0.0], [2, 0]
    t1, c1, p1, _ = ce_run(logits, targets, 2, 3, with_losses=True)
    t2, c2, p2, _ = ce_run(logits, targets, 2, 3, with_losses=False)
    assert (t1, c1) == (t2, c2) and p1.tolist() == p2.tolist()
    assert c1 == 2  # row 1: tie between 0 and 1 goes to the lowest index, 0


def test_crossentropy_ties_go_to_lowest_index():
    logits = [1.0, 1.0, 0.0] * 2
    _, correct, _, _ = ce_run(logits, [0, 1], 2, 3)
    assert correct == 1


def test_crossentropy_huge_logits_are_stable():
    logits = [1000.0, -1000.0, 0.0,
              -1000.0, 1000.0, 1000.0,
              -1000.0, -1000.0, -1000.0,
              3.0e38, -3.0e38, 0.0]
    targets = [1, 2, 0, 0]
    B, V = 4, 3
    total, correct, probs, losses = ce_run(logits, targets, B, V)
    p, l = probs.tolist(), losses.tolist()
    assert all(math.isfinite(v) for v in p + l) and math.isfinite(total)
    assert all(0.0 <= v <= 1.0 for v in p)
    assert p[0:3] == [1.0, 0.0, 0.0]
    assert p[3:6] == [0.0, 0.5, 0.5]
    assert p[6:9] == pytest.approx([1 / 3] * 3, rel=1e-6)
    assert l[0] == pytest.approx(2000.0, rel=1e-6)
    assert l[1] == pytest.approx(math.log(2.0), rel=1e-6)
    assert l[2] == pytest.approx(math.log(3.0), rel=1e-6)
    assert l[3] == pytest.approx(0.0, abs=1e-6)
    assert total == pytest.approx(sum(l), rel=1e-6)
    assert correct == 2  # rows 0, 1 wrong (row 1: tie -> index 1); rows 2 (tie -> 0), 3 right
    d = Tensor((B * V,))
    lib.crossentropy_softmax_backward(d.ptr, probs.ptr, ref.ints(targets).ptr, 0.0, B, V)
    assert all(math.isfinite(v) for v in d.tolist())


@pytest.mark.parametrize("row", [[NAN, 0.0, 1.0], [0.0, NAN, 1.0], [INF, 0.0, 1.0],
                                 [0.0, 1.0, INF], [-INF, -INF, -INF]])
def test_crossentropy_non_finite_logits_give_non_finite_loss(row):
    # train.fit relies on this to notice a diverged model
    total, _, _, _ = ce_run([0.0, 1.0, 2.0] + row, [2, 2], 2, 3)
    assert not math.isfinite(total)


@pytest.mark.parametrize("bad", [3, 4, -1, 2**31 - 1, -2**31])
def test_crossentropy_out_of_range_target(bad):
    B, V = 3, 3
    logits = [0.1 * i for i in range(B * V)]
    targets = [0, bad, 1]
    total, correct, probs, _ = ce_run(logits, targets, B, V)
    assert math.isnan(total)
    assert correct == -1
    # backward never indexes with the bad label: the row is just probs / B
    d = Tensor((B * V,))
    lib.crossentropy_softmax_backward(d.ptr, probs.ptr, ref.ints(targets).ptr, 0.0, B, V)
    row = d.tolist()[3:6]
    ref.assert_close(row, [p / B for p in probs.tolist()[3:6]], rel=1e-6, what="bad row")


def test_crossentropy_loss_class_rejects_bad_target():
    from pynn.loss import CrossEntropyLoss
    loss = CrossEntropyLoss()
    with pytest.raises(ValueError):
        loss.forward(ref.tensor([0.0, 1.0], (1, 2)), ref.ints([2]))
    mean, correct = loss.forward(ref.tensor([0.0, 1.0, 2.0, 0.0], (2, 2)), ref.ints([1, 0]))
    want = ref.softmax_ce([0.0, 1.0, 2.0, 0.0], [1, 0], 2, 2)
    assert mean == pytest.approx(want[2] / 2, rel=1e-6)
    assert correct == 2


# ---- optimizers ------------------------------------------------------------------

def split_update(update, n_decay, wd, *arrays):
    """A reference update over the whole arrays with weight decay wd on the
    first n_decay values and none on the rest: the reference run on the two
    parts, their results joined."""
    head = update(*[a[:n_decay] for a in arrays], wd)
    tail = update(*[a[n_decay:] for a in arrays], 0.0)
    return [h + t for h, t in zip(head, tail)]


@pytest.mark.parametrize("n,threads", [(1, 1), (41, 1), (PAR, 2)])
@pytest.mark.parametrize("momentum,wd", [(0.0, 0.0), (0.9, 0.0), (0.9, 5e-4)])
@pytest.mark.parametrize("decayed", ["all", "half", "none"])
def test_sgd_update(n, threads, momentum, wd, decayed):
    lib.pynn_set_threads(threads)
    rng = random.Random(n)
    lr = 0.05
    n_decay = {"all": n, "half": n // 2, "none": 0}[decayed]
    p = ref.tensor(ref.rand_list(rng, n))
    v = ref.tensor([0.0] * n)
    for step in range(3):
        grad = ref.rand_list(rng, n)
        want_p, want_v = split_update(
            lambda p_, g_, v_, wd_: ref.sgd(p_, g_, v_, ref.f32(lr), ref.f32(momentum),
                                            ref.f32(wd_)),
            n_decay, wd, p.tolist(), grad, v.tolist())
        lib.sgd_update(p.ptr, ref.tensor(grad).ptr, v.ptr, n, n_decay, lr, momentum, wd)
        ref.assert_close(v.tolist(), want_v, rel=1e-6, abs_=1e-7, what=f"velocity {step}")
        ref.assert_close(p.tolist(), want_p, rel=1e-6, abs_=2e-7, what=f"param {step}")


def test_sgd_hand_values():
    p, v = ref.tensor([1.0, -2.0]), ref.tensor([0.5, 0.0])
    lib.sgd_update(p.ptr, ref.tensor([0.25, 1.0]).ptr, v.ptr, 2, 2, 0.5, 0.5, 0.0)
    # v = 0.5*v + g = [0.5, 1.0]; p -= 0.5*v
    assert v.tolist() == [0.5, 1.0]
    assert p.tolist() == [0.75, -2.5]


@pytest.mark.parametrize("n,threads", [(1, 1), (41, 1), (PAR, 2)])
@pytest.mark.parametrize("wd", [0.0, 0.01])
@pytest.mark.parametrize("decayed", ["all", "half", "none"])
def test_adam_update(n, threads, wd, decayed):
    lib.pynn_set_threads(threads)
    rng = random.Random(n + 3)
    lr, b1, b2, eps = 1e-2, 0.9, 0.999, 1e-8
    n_decay = {"all": n, "half": n // 2, "none": 0}[decayed]
    p = ref.tensor(ref.rand_list(rng, n))
    m, v = ref.tensor([0.0] * n), ref.tensor([0.0] * n)
    F = ref.f32
    for t in range(1, 6):
        # gradients away from 0 so that mhat / sqrt(vhat) is well conditioned
        grad = [F(rng.choice((-1, 1)) * rng.uniform(0.1, 2.0)) for _ in range(n)]
        want_p, want_m, want_v = split_update(
            lambda p_, g_, m_, v_, wd_, t=t: ref.adam(p_, g_, m_, v_, F(lr), F(b1), F(b2),
                                                      F(eps), F(wd_), t),
            n_decay, wd, p.tolist(), grad, m.tolist(), v.tolist())
        lib.adam_update(p.ptr, ref.tensor(grad).ptr, m.ptr, v.ptr, n, n_decay, lr, b1, b2, eps,
                        wd, t)
        ref.assert_close(m.tolist(), want_m, rel=1e-5, abs_=1e-7, what=f"m at t={t}")
        ref.assert_close(v.tolist(), want_v, rel=1e-5, abs_=1e-9, what=f"v at t={t}")
        ref.assert_close(p.tolist(), want_p, rel=1e-6, abs_=lr * 1e-4, what=f"p at t={t}")


def test_adam_first_step_is_lr_times_sign():
    # bias correction with a 1-based t: the first step moves each parameter by
    # ~lr in the direction opposite to its gradient, whatever the gradient's size
    grads = [1e-3, -5.0, 42.0, -0.25]
    p = ref.tensor([0.0] * 4)
    m, v = Tensor((4,)), Tensor((4,))
    lib.adam_update(p.ptr, ref.tensor(grads).ptr, m.ptr, v.ptr, 4, 4, 0.1, 0.9, 0.999, 1e-8,
                    0.0, 1)
    ref.assert_close(p.tolist(), [-0.1 if g > 0 else 0.1 for g in grads], rel=1e-4)


def test_adam_weight_decay_is_decoupled_and_only_on_the_first_n_decay():
    # zero gradient: m = v = 0, so only the decoupled decay acts: p -= lr*wd*p,
    # on the first two values (weights); the third (a bias) stays
    p = ref.tensor([2.0, -4.0, 3.0])
    m, v = Tensor((3,)), Tensor((3,))
    lib.adam_update(p.ptr, ref.tensor([0.0, 0.0, 0.0]).ptr, m.ptr, v.ptr, 3, 2, 0.5, 0.9,
                    0.999, 1e-8, 0.1, 1)
    ref.assert_close(p.tolist(), [2.0 * (1 - 0.05), -4.0 * (1 - 0.05), 3.0], rel=1e-6)
    assert m.tolist() == [0.0] * 3 and v.tolist() == [0.0] * 3


# ---- data helpers ---------------------------------------------------------------

def test_argmax_first_max_on_ties():
    rows = [[1.0, 3.0, 3.0, 2.0],
            [5.0, 5.0, 5.0, 5.0],
            [-INF, -INF, -1.0, -1.0],
            [-1.0, -2.0, -3.0, -0.5],
            [0.0, -0.0, 0.0, 0.0]]
    flat = [v for r in rows for v in r]
    out = ref.ints([99] * len(rows))
    lib.pynn_argmax(out.ptr, ref.tensor(flat).ptr, len(rows), 4)
    assert out.tolist() == [1, 0, 2, 3, 0]
    assert out.tolist() == ref.argmax_rows(flat, len(rows), 4)


@pytest.mark.parametrize("B,V", [(1, 1), (5, 1), (33, 10), (7, 785)])
def test_argmax_random(B, V):
    rng = random.Random(B + V)
    # few distinct values: plenty of ties
    x = [float(rng.randrange(4)) for _ in range(B * V)]
    out = Tensor((B,), "int32")
    lib.pynn_argmax(out.ptr, ref.tensor(x).ptr, B, V)
    assert out.tolist() == ref.argmax_rows(x, B, V)


@pytest.mark.parametrize("n", [0, 1, 10, 1000])
def test_count_equal(n):
    rng = random.Random(n)
    a = [rng.randrange(3) for _ in range(n)]
    b = [rng.randrange(3) for _ in range(n)]
    ta, tb = ref.ints(a or [0]), ref.ints(b or [1])
    assert lib.pynn_count_equal(ta.ptr, tb.ptr, n) == sum(x == y for x, y in zip(a, b))
    assert lib.pynn_count_equal(ta.ptr, ta.ptr, n) == n


def run_moments(x, idx, n, C):
    mean, var = ffi.new("double *"), ffi.new("double *")
    tidx = ref.ints(idx) if idx else None
    lib.pynn_moments(ref.tensor(x or [0.0]).ptr, tidx.ptr if tidx else ffi.NULL, n, C,
                     mean, var)
    return mean[0], var[0]


# (N rows, C columns): C below, at and across the 8 partial sums of the kernel
@pytest.mark.parametrize("N,C", [(0, 5), (1, 1), (3, 7), (5, 8), (4, 17), (40, 785)])
def test_moments_all_rows(N, C):
    rng = random.Random(N * 100 + C)
    # a large offset: a one-pass float formula would lose the variance
    x = [ref.f32(1000.0 + rng.gauss(0.0, 0.5)) for _ in range(N * C)]
    mean, var = run_moments(x, None, N, C)
    want_mean, want_var = ref.moments(x)
    assert mean == pytest.approx(want_mean, rel=1e-12, abs=1e-12)
    assert var == pytest.approx(want_var, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("N,C", [(6, 3), (9, 17), (30, 785)])
def test_moments_selected_rows(N, C):
    rng = random.Random(N + C)
    x = [ref.f32(rng.uniform(0, 255)) for _ in range(N * C)]
    idx = [N - 1, 0, 2, 2, N // 2]  # any order, repeats count twice
    mean, var = run_moments(x, idx, len(idx), C)
    picked = [x[r * C + c] for r in idx for c in range(C)]
    want_mean, want_var = ref.moments(picked)
    assert mean == pytest.approx(want_mean, rel=1e-12)
    assert var == pytest.approx(want_var, rel=1e-9)


def test_moments_hand_case():
    assert run_moments([1.0, 2.0, 3.0, 4.0], None, 2, 2) == (2.5, 1.25)  # population
    assert run_moments([1.0, 2.0, 3.0, 4.0], [1], 1, 2) == (3.5, 0.25)
    assert run_moments([1.0, 2.0, 3.0, 4.0], None, 4, 1) == (2.5, 1.25)


@pytest.mark.parametrize("n,threads", [(1, 1), (100, 1), (PAR, 2)])
def test_scale_shift(n, threads):
    lib.pynn_set_threads(threads)
    rng = random.Random(n)
    x = ref.rand_list(rng, n, 0.0, 255.0)
    scale, shift = ref.f32(1 / 78.5), ref.f32(-0.42)
    t = ref.tensor(x)
    lib.pynn_scale_shift(t.ptr, n, scale, shift)
    # one float32 multiply-add (fused or not): within 2 ulp of the exact value
    want = [v * scale + shift for v in x]
    ref.assert_close(t.tolist(), want, rel=2.5e-7, abs_=4e-7, what="scale_shift")


@pytest.mark.parametrize("n", [0, 1, 2, 7, 1000])
@pytest.mark.parametrize("seed", [0, 42, 2**64 - 1])
def test_shuffle_matches_reference(n, seed):
    # the epoch's order of the rows: Fisher-Yates on draws 1, 2, ... of the seed
    start = [3 * i + 1 for i in range(n)]  # not 0..n-1: the values move, not positions
    idx = ref.ints(start)
    lib.pynn_shuffle(idx.ptr, n, seed)
    assert idx.tolist() == ref.shuffle(start, seed)
    assert sorted(idx.tolist()) == start  # a permutation


def test_shuffle_every_position_reachable():
    # each of 5 values lands in each of 5 places under some of 200 seeds (a j
    # drawn from [0, i) instead of [0, i], Sattolo's shuffle, never leaves a
    # value in its place)
    seen = set()
    for seed in range(200):
        idx = ref.ints(list(range(5)))
        lib.pynn_shuffle(idx.ptr, 5, seed)
        seen |= {(v, pos) for pos, v in enumerate(idx.tolist())}
    assert seen == {(v, pos) for v in range(5) for pos in range(5)}


def test_gather_rows_and_labels():
    N, C, B = 6, 5, 9
    inp = [float(r * 100 + c) for r in range(N) for c in range(C)]
    labels = [10 + r for r in range(N)]
    idx = [5, 0, 0, 3, 2, 5, 1, 4, 4]
    out = ref.tensor([NAN] * (B * C))
    lib.pynn_gather_rows(out.ptr, ref.tensor(inp).ptr, ref.ints(idx).ptr, B, C)
    assert out.tolist() == [inp[i * C + c] for i in idx for c in range(C)]
    lab = ref.ints([-1] * B)
    lib.pynn_gather_labels(lab.ptr, ref.ints(labels).ptr, ref.ints(idx).ptr, B)
    assert lab.tolist() == [labels[i] for i in idx]


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_gather_rows_threaded(threads):
    # B*C >= 16384: the rows are prefetched and copied by several threads
    N, C, B = 50, 301, 67
    rng = random.Random(threads)
    inp = ref.rand_list(rng, N * C)
    idx = [rng.randrange(N) for _ in range(B)]
    lib.pynn_set_threads(threads)
    out = ref.tensor([NAN] * (B * C))
    lib.pynn_gather_rows(out.ptr, ref.tensor(inp).ptr, ref.ints(idx).ptr, B, C)
    assert out.tolist() == [inp[i * C + c] for i in idx for c in range(C)]


def test_gather_rows_from_offset_pointer():
    # train.fit passes idx.ptr + b*B: a pointer into the middle of the index array
    inp = [float(v) for v in range(12)]  # (4, 3)
    idx = ref.ints([3, 2, 1, 0])
    out = Tensor((2, 3))
    lib.pynn_gather_rows(out.ptr, ref.tensor(inp).ptr, idx.ptr + 2, 2, 3)
    assert out.tolist() == [3.0, 4.0, 5.0, 0.0, 1.0, 2.0]


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
@pytest.mark.parametrize("where", [0, 6, 99])
def test_all_finite(bad, where):
    x = [float(i) for i in range(100)]
    assert lib.pynn_all_finite(ref.tensor(x).ptr, 100) == 1
    x[where] = bad
    assert lib.pynn_all_finite(ref.tensor(x).ptr, 100) == 0
    # only the first n values count
    assert lib.pynn_all_finite(ref.tensor(x).ptr, where) == 1


def test_all_finite_edge_values():
    x = [3.4028234663852886e38, -3.4028234663852886e38, 1e-45, -0.0]
    assert lib.pynn_all_finite(ref.tensor(x).ptr, 4) == 1
    assert lib.pynn_all_finite(ref.tensor([NAN]).ptr, 0) == 1


# ---- threads ---------------------------------------------------------------------

def test_set_get_threads():
    lib.pynn_set_threads(1)
    assert lib.pynn_get_threads() == 1
    if lib.pynn_have_openmp():
        lib.pynn_set_threads(2)
        assert lib.pynn_get_threads() == 2
        lib.pynn_set_threads(0)
        assert 1 <= lib.pynn_get_threads() <= 16


@pytest.mark.parametrize("n,threads", [(1, 1), (37, 2), (PAR + 3, 2), (PAR + 3, 3)])
def test_ema_update(n, threads):
    lib.pynn_set_threads(threads)
    rng = random.Random(n)
    ema, x = ref.rand_list(rng, n), ref.rand_list(rng, n)
    t = ref.tensor(ema)
    lib.pynn_ema_update(t.ptr, ref.tensor(x).ptr, n, 0.9)
    rate = ref.f32(1.0 - ref.f32(0.9))
    ref.assert_close(t.tolist(), [e + rate * (v - e) for e, v in zip(ema, x)], rel=1e-6,
                     abs_=1e-7, what="ema")
