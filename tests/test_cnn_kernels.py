"""The CNN kernels (csrc/conv.c, csrc/norm.c, pynn_gather_augment in
csrc/data.c, label smoothing in csrc/loss.c) against the pure-Python
references of tests/cnn_reference.py.

Shapes are chosen to cross the edges of the C code: odd and non-square
images, images smaller than the kernel, k = 1, 3, 5; more rows than one
forward chunk of conv.c (4096 rows at most, fewer for wide kernels) and more
than one chunk of its dweight sum (2^19 / (k*k*C) rows); batch norm over more
than one block of 256 rows; everything large enough for a parallel region
also runs on 1, 2 and 3 threads and must give the same bits.

Tolerances are relative to the sum of |terms| of each result (the natural
scale of float32 rounding), as in test_kernels.py; copies (pooling, the
gather) are compared bit for bit.
"""
import functools
import math
import random
import struct

import pytest

from pynn._kernels import ffi, lib
from pynn.tensor import Tensor

import cnn_reference as cref
import reference as ref
from conftest import THREAD_COUNTS, needs_threads
from reference import bits

NAN = float("nan")
INF = float("inf")



def nans(n):
    return ref.tensor([NAN] * n)


def tol(K):
    """The largest error of a K-term float32 sum allowed, relative to its sum
    of |terms|: 32 u, as test_kernels.gemm_tolerance says why (random signs
    keep the error near u for any K; at most 2.6 u measured over CONV_SHAPES).
    For the im2col and direct roads; Winograd's own bound is in test_winograd."""
    del K
    return 32 * 2.0 ** -24


# ---- convolution -----------------------------------------------------------------

# (B, H, W, C, OC, k)
CONV_SHAPES = [
    (1, 5, 5, 1, 1, 3),
    (3, 5, 5, 3, 2, 3),
    (1, 7, 7, 5, 3, 5),
    (3, 7, 7, 3, 4, 1),      # k = 1: a dense layer per pixel
    (1, 5, 7, 3, 2, 3),      # non-square
    (2, 7, 5, 5, 3, 5),      # non-square, the other way
    (3, 5, 5, 5, 4, 3),
    (1, 28, 28, 1, 2, 3),
    (1, 28, 28, 1, 3, 5),
    (1, 1, 1, 3, 2, 3),      # one pixel: only the kernel's center is inside
    (2, 2, 3, 2, 3, 5),      # image smaller than the kernel on both axes
    (1, 1, 7, 2, 2, 5),      # one row
    (2, 6, 1, 3, 2, 3),      # one column
    (1, 3, 3, 1, 1, 7),      # kernel wider than the image
    (2, 5, 6, 1, 12, 3),     # k*k*C < OC: dweight computed transposed
    (1, 4, 4, 2, 5, 1),      # k*k*C < OC with a 1x1 kernel
    (2, 7, 9, 1, 32, 3),     # one channel (direct loops): whole blocks of 32 outputs,
                             # rows not a multiple of the 4-pixel block
    (1, 6, 5, 1, 40, 5),     # one channel: a whole block of 32 outputs and a partial one
    (2, 7, 9, 1, 16, 3),     # one channel: one vec of 16 outputs (AVX-512), a block (AVX2)
    (1, 6, 5, 1, 24, 3),     # one channel: a whole vec and 8 outputs past it (AVX-512)
    (2, 3, 12, 1, 40, 3),    # one channel: rows of 8 + 4 pixels, 32 + 8 outputs (conv.c
                             # compiles whole blocks of 8 and 4 pixels apart, AVX-512)
]


def _shape_id(s):
    B, H, W, C, OC, k = s
    return f"B{B}-{H}x{W}-C{C}-OC{OC}-k{k}"


@functools.cache
def conv_data(shape, seed=0):
    """Inputs, reference results and their magnitudes for one shape (cached)."""
    B, H, W, C, OC, k = shape
    rng = random.Random(hash(shape) & 0xFFFFF ^ seed)
    inp = ref.rand_list(rng, B * H * W * C)
    w = ref.rand_list(rng, OC * k * k * C)
    bias = ref.rand_list(rng, OC)
    dout = ref.rand_list(rng, B * H * W * OC)
    return inp, w, bias, dout


@functools.cache
def conv_want(shape, with_bias, need_dinp=True):
    B, H, W, C, OC, k = shape
    inp, w, bias, dout = conv_data(shape)
    b = bias if with_bias else None
    out = cref.conv2d_forward(inp, w, b, B, H, W, C, OC, k)
    out_mag = cref.conv2d_forward(cref.absl(inp), cref.absl(w), cref.absl(b), B, H, W, C, OC, k)
    grads = cref.conv2d_backward(dout, inp, w, B, H, W, C, OC, k, need_dinp)
    mags = cref.conv2d_backward(cref.absl(dout), cref.absl(inp), cref.absl(w), B, H, W, C, OC,
                                k, need_dinp)
    return out, out_mag, grads, mags


def run_conv_forward(shape, inp, w, bias):
    B, H, W, C, OC, k = shape
    out = nans(B * H * W * OC)
    tb = ref.tensor(bias) if bias is not None else None
    lib.conv2d_forward(out.ptr, ref.tensor(inp).ptr, ref.tensor(w).ptr,
                       tb.ptr if tb else ffi.NULL, B, H, W, C, OC, k)
    return out.tolist()


def run_conv_backward(shape, dout, inp, w, with_dinp=True, with_dbias=True, fill=NAN):
    B, H, W, C, OC, k = shape
    dinp = ref.tensor([fill] * (B * H * W * C))
    dw = ref.tensor([fill] * (OC * k * k * C))
    db = ref.tensor([fill] * OC)
    lib.conv2d_backward(dinp.ptr if with_dinp else ffi.NULL, dw.ptr,
                        db.ptr if with_dbias else ffi.NULL, ref.tensor(dout).ptr,
                        ref.tensor(inp).ptr, ref.tensor(w).ptr, B, H, W, C, OC, k)
    return dinp.tolist(), dw.tolist(), db.tolist()


def check_conv_forward(shape, with_bias):
    _, _, _, C, _, k = shape
    inp, w, bias, _ = conv_data(shape)
    want, mag, _, _ = conv_want(shape, with_bias)
    got = run_conv_forward(shape, inp, w, bias if with_bias else None)
    err = ref.max_rel_err(got, want, mag)
    assert err <= tol(k * k * C), f"forward: max normalized error {err:.3g}"


def check_conv_backward(shape, with_dinp, with_dbias, need_dinp=True):
    B, H, W, _, OC, k = shape
    inp, w, _, dout = conv_data(shape)
    _, _, (want_dinp, want_dw, want_db), (mag_dinp, mag_dw, mag_db) = conv_want(
        shape, True, need_dinp)
    dinp, dw, db = run_conv_backward(shape, dout, inp, w, with_dinp, with_dbias)
    err = ref.max_rel_err(dw, want_dw, mag_dw)
    assert err <= tol(B * H * W), f"dweight: max normalized error {err:.3g}"
    if with_dbias:
        err = ref.max_rel_err(db, want_db, mag_db)
        assert err <= tol(B * H * W), f"dbias: max normalized error {err:.3g}"
    else:
        assert all(math.isnan(v) for v in db)  # NULL: nothing written
    if with_dinp:
        err = ref.max_rel_err(dinp, want_dinp, mag_dinp)
        assert err <= tol(k * k * OC), f"dinp: max normalized error {err:.3g}"
    else:
        assert all(math.isnan(v) for v in dinp)


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("shape", CONV_SHAPES, ids=_shape_id)
def test_conv_forward(shape, with_bias):
    check_conv_forward(shape, with_bias)


@pytest.mark.parametrize("with_dinp,with_dbias", [(True, True), (False, True), (True, False),
                                                  (False, False)])
@pytest.mark.parametrize("shape", CONV_SHAPES, ids=_shape_id)
def test_conv_backward(shape, with_dinp, with_dbias):
    check_conv_backward(shape, with_dinp, with_dbias)


def test_direct_conv_channels_do_not_depend_on_their_neighbours():
    """The one-channel conv's direct loops compute each output channel as its
    own sum over the taps (forward) and over the pixels (weight gradient),
    in whole blocks of two vecs, a block of one, or lane by lane for the last
    few: a channel's bits are the same whichever way it falls, so they do
    not depend on how many channels are computed beside it, nor on the
    vector width."""
    B, H, W, k, wide = 3, 9, 11, 3, 48
    rng = random.Random(5)
    inp = ref.rand_list(rng, B * H * W)
    w = ref.rand_list(rng, wide * k * k)
    dout = ref.rand_list(rng, B * H * W * wide)
    out = run_conv_forward((B, H, W, 1, wide, k), inp, w, None)
    _, dw, _ = run_conv_backward((B, H, W, 1, wide, k), dout, inp, w, with_dinp=False,
                                 with_dbias=False)
    for oc in (1, 5, 8, 16, 17, 24, 32, 40):
        shape = (B, H, W, 1, oc, k)
        got = run_conv_forward(shape, inp, w[:oc * k * k], None)
        assert bits(got) == bits([v for i, v in enumerate(out) if i % wide < oc]), oc
        d = [v for i, v in enumerate(dout) if i % wide < oc]
        _, got_dw, _ = run_conv_backward(shape, d, inp, w[:oc * k * k], with_dinp=False,
                                         with_dbias=False)
        assert bits(got_dw) == bits(dw[:oc * k * k]), oc


def test_conv_empty_batch():
    # B = 0 is legal, as for dense_backward (test_kernels.test_dense_empty_batch):
    # the forward writes nothing, the backward writes zero parameter gradients
    C, OC, k = 2, 3, 3
    w = ref.tensor([1.0] * (OC * k * k * C))
    dummy = ref.tensor([7.0])
    lib.conv2d_forward(dummy.ptr, dummy.ptr, w.ptr, ffi.NULL, 0, 5, 5, C, OC, k)
    assert dummy.tolist() == [7.0]
    dw, db = nans(OC * k * k * C), nans(OC)
    lib.conv2d_backward(dummy.ptr, dw.ptr, db.ptr, dummy.ptr, dummy.ptr, w.ptr, 0, 5, 5, C, OC,
                        k)
    assert dummy.tolist() == [7.0]
    assert db.tolist() == [0.0] * OC
    assert dw.tolist() == [0.0] * (OC * k * k * C)


# larger shapes, for the chunked paths of conv.c (N = B*H*W rows):
#   forward: chunks of min(4096, 65536/(k*k*C) rounded down to 8) rows, at least 64
#   dweight: chunks of 2^18/(k*k*C) rows, at least 64, each thread its own
#   dinp:    a forward of dout with OC input channels
CHUNKED = [
    # N = 980 > 904 rows of a forward chunk (k*k*C = 72); dinp: 3 chunks of 448;
    # OC = 20: two 16-column shares of the dbias sums
    (5, 14, 14, 8, 20, 3),
    # N = 4704 > 4096: two forward chunks; dinp (k*k*OC = 36): 3 chunks of 1816
    (6, 28, 28, 1, 4, 3),
]
# N = 400 > 262 rows of a dweight chunk (k*k*C = 1000), the second chunk 138
# rows (not a multiple of 64, starting mid image row); 7 forward chunks of 64;
# N = 450 > 2 * 163 (k*k*C = 1600): three dweight chunks, the last one 124 rows
DW_CHUNKED = [(1, 20, 20, 40, 3, 5), (2, 15, 15, 64, 2, 5)]


def test_chunk_shapes_cross_the_chunk_edges():
    """The shapes above really do cover more than one chunk (the formulas of conv.c)."""
    def fwd_rows(kkC):
        return min(4096, max(64, 65536 // kkC // 8 * 8))

    def dw_rows(kkC):
        return max(64, (1 << 18) // kkC)

    B, H, W, C, OC, k = CHUNKED[0]
    assert B * H * W > fwd_rows(k * k * C) and B * H * W > 2 * fwd_rows(k * k * OC)
    B, H, W, C, OC, k = CHUNKED[1]
    assert B * H * W > 4096 and B * H * W > 2 * fwd_rows(k * k * OC)
    B, H, W, C, OC, k = DW_CHUNKED[0]
    assert dw_rows(k * k * C) < B * H * W < 2 * dw_rows(k * k * C)
    assert (B * H * W - dw_rows(k * k * C)) % 64 and dw_rows(k * k * C) % W
    B, H, W, C, OC, k = DW_CHUNKED[1]
    assert 2 * dw_rows(k * k * C) < B * H * W < 3 * dw_rows(k * k * C)


@pytest.mark.parametrize("shape", CHUNKED, ids=_shape_id)
def test_conv_chunked_forward_backward(shape, conv_path):
    # the chunks counted above are im2col's: CHUNKED[0] would go to winograd.c by shape
    conv_path(lib.PYNN_CONV_IM2COL)
    check_conv_forward(shape, True)
    check_conv_backward(shape, True, True)


@pytest.mark.parametrize("shape", DW_CHUNKED, ids=_shape_id)
def test_conv_dweight_over_several_chunks(shape):
    # the reference's dinp would be slow here; the kernel's dinp is NULL too
    check_conv_forward(shape, True)
    check_conv_backward(shape, with_dinp=False, with_dbias=True, need_dinp=False)


# More chunks (or images) than the 16 slots of partial sums, so that a slot sums
# several: N = 2700 rows in 17 chunks of 163 (k*k*C = 1600); 20 one-channel images
SLOTTED = [(3, 30, 30, 64, 1, 5), (20, 5, 5, 1, 32, 3)]


def test_slotted_shapes_have_more_parts_than_slots():
    B, H, W, C, _, k = SLOTTED[0]
    assert -(-B * H * W // max(64, (1 << 18) // (k * k * C))) > 16
    assert SLOTTED[1][0] > 16 and SLOTTED[1][3] == 1


@pytest.mark.parametrize("shape", SLOTTED, ids=_shape_id)
def test_conv_dweight_over_more_parts_than_slots(shape):
    check_conv_backward(shape, with_dinp=False, with_dbias=False, need_dinp=False)


@pytest.mark.parametrize("shape", [(3, 5, 7, 3, 4, 3), (5, 14, 14, 8, 20, 3)], ids=_shape_id)
def test_conv_backward_writes_not_accumulates(shape):
    inp, w, _, dout = conv_data(shape)
    clean = run_conv_backward(shape, dout, inp, w, fill=0.0)
    for fill in (NAN, 1e30, -3.0):
        assert [bits(v) for v in run_conv_backward(shape, dout, inp, w, fill=fill)] == \
            [bits(v) for v in clean], f"prefill {fill}"
    # a second call on the same buffers: the same values, not twice them
    B, H, W, C, OC, k = shape
    dinp, dw, db = Tensor((B * H * W * C,)), Tensor((OC * k * k * C,)), Tensor((OC,))
    args = (ref.tensor(dout).ptr, ref.tensor(inp).ptr, ref.tensor(w).ptr, B, H, W, C, OC, k)
    for _ in range(2):
        lib.conv2d_backward(dinp.ptr, dw.ptr, db.ptr, *args)
    assert [bits(dinp.tolist()), bits(dw.tolist()), bits(db.tolist())] == \
        [bits(v) for v in clean]


def test_conv_hand_case():
    # a 3x3 one-channel image, the 3x3 kernel of ones: each output is the sum of
    # its in-image neighbourhood (small integers: exact in float32)
    img = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    shape = (1, 3, 3, 1, 1, 3)
    got = run_conv_forward(shape, img, [1.0] * 9, [0.5])
    assert got == [12.5, 21.5, 16.5, 27.5, 45.5, 33.5, 24.5, 39.5, 28.5]
    # a kernel with a single 1 at (i, j) = (0, 2) reads the pixel up and to the right
    w = [0.0] * 9
    w[2] = 1.0
    got = run_conv_forward(shape, img, w, None)
    assert got == [0.0, 0.0, 0.0, 2.0, 3.0, 0.0, 5.0, 6.0, 0.0]
    # its input gradient: every output pixel sends its gradient there
    dinp, dw, db = run_conv_backward(shape, [1.0] * 9, img, w)
    assert dinp == [0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert db == [9.0]
    assert dw == [12.0, 21.0, 16.0, 27.0, 45.0, 33.0, 24.0, 39.0, 28.0]


def test_conv_reference_is_the_adjoint_of_its_forward():
    """Self-check of the reference: L(x, w) = <conv(x, w), g> is bilinear, so
    <dinp, x> = <dweight, w> = L - <g, bias-part> exactly (up to rounding), and
    perturbing one input / weight changes L by dinp / dweight times the step."""
    shape = (2, 4, 5, 3, 2, 3)
    B, H, W, C, OC, k = shape
    inp, w, bias, dout = conv_data(shape)
    out = cref.conv2d_forward(inp, w, None, B, H, W, C, OC, k)
    L = math.fsum(a * g for a, g in zip(out, dout))
    dinp, dw, db = cref.conv2d_backward(dout, inp, w, B, H, W, C, OC, k)
    assert math.fsum(a * b for a, b in zip(dinp, inp)) == pytest.approx(L, rel=1e-12)
    assert math.fsum(a * b for a, b in zip(dw, w)) == pytest.approx(L, rel=1e-12)
    out_b = cref.conv2d_forward(inp, w, bias, B, H, W, C, OC, k)
    Lb = math.fsum(a * g for a, g in zip(out_b, dout))
    assert Lb - L == pytest.approx(math.fsum(a * b for a, b in zip(db, bias)), rel=1e-9)
    rng = random.Random(9)
    for _ in range(10):
        t = rng.randrange(len(inp))
        x2 = list(inp)
        x2[t] += 1.0
        L2 = math.fsum(a * g for a, g in
                       zip(cref.conv2d_forward(x2, w, None, B, H, W, C, OC, k), dout))
        assert L2 - L == pytest.approx(dinp[t], rel=1e-9, abs=1e-12)
        t = rng.randrange(len(w))
        w2 = list(w)
        w2[t] += 1.0
        L2 = math.fsum(a * g for a, g in
                       zip(cref.conv2d_forward(inp, w2, None, B, H, W, C, OC, k), dout))
        assert L2 - L == pytest.approx(dw[t], rel=1e-9, abs=1e-12)


# ---- 2x2 max-pool --------------------------------------------------------------------

# (B, H, W, C)
POOL_SHAPES = [(1, 5, 7, 1), (2, 4, 4, 3), (3, 5, 5, 5), (1, 28, 28, 2), (2, 7, 5, 3),
               (2, 3, 2, 1), (1, 2, 2, 1), (2, 6, 9, 5), (1, 3, 1, 2), (2, 2, 5, 3)]


def pool_input(rng, n, ties):
    if ties:  # a few distinct values: most windows hold equal maxima
        return [float(rng.choice((-1, 0, 0, 1, 2, 2))) for _ in range(n)]
    return ref.rand_list(rng, n)


def run_pool(inp, B, H, W, C, dout):
    out, dinp = nans(B * (H // 2) * (W // 2) * C), nans(B * H * W * C)
    t = ref.tensor(inp)
    lib.maxpool2x2_forward(out.ptr, t.ptr, B, H, W, C)
    lib.maxpool2x2_backward(dinp.ptr, ref.tensor(dout).ptr, t.ptr, B, H, W, C)
    return out.tolist(), dinp.tolist()


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("B,H,W,C", POOL_SHAPES)
def test_maxpool_forward_backward(B, H, W, C, ties):
    rng = random.Random(B * 1000 + H * 100 + W * 10 + C + ties)
    inp = pool_input(rng, B * H * W * C, ties)
    n_out = B * (H // 2) * (W // 2) * C
    # distinct nonzero gradients: a misrouted one cannot go unnoticed
    dout = [float(i + 1) for i in range(n_out)]
    out, dinp = run_pool(inp, B, H, W, C, dout)
    assert bits(out) == bits(cref.maxpool2x2_forward(inp, B, H, W, C))
    assert bits(dinp) == bits(cref.maxpool2x2_backward(dout, inp, B, H, W, C))
    # every gradient arrives exactly once; the odd last row/column gets 0
    assert sorted(v for v in dinp if v != 0.0) == dout
    for b in range(B):
        for y in range(H):
            for x in range(W):
                if y >= 2 * (H // 2) or x >= 2 * (W // 2):
                    at = ((b * H + y) * W + x) * C
                    assert dinp[at:at + C] == [0.0] * C


@pytest.mark.parametrize("B,H,W,C", [(1, 1, 1, 1), (1, 1, 4, 2), (2, 1, 5, 3), (3, 1, 2, 1)])
def test_maxpool_backward_writes_dinp_whole_when_no_window_fits(B, H, W, C):
    # H = 1: no 2x2 window at all, the output is empty and the whole input
    # gradient is 0 ("dinp (B,H,W,C) is written whole", pynn.h)
    rng = random.Random(H * W + C)
    inp = ref.rand_list(rng, B * H * W * C)
    out, dinp = run_pool(inp, B, H, W, C, [])
    assert out == [] and dinp == [0.0] * (B * H * W * C)


def test_maxpool_ties_go_to_the_first_maximum():
    # one channel, a 2x2 image per case: (window (0,0),(0,1),(1,0),(1,1), winner)
    cases = [([3.0, 3.0, 3.0, 3.0], 0), ([1.0, 3.0, 2.0, 3.0], 1), ([1.0, 2.0, 3.0, 3.0], 2),
             ([0.0, 1.0, 1.0, 0.0], 1), ([-1.0, -2.0, -1.0, -3.0], 0),
             ([1.0, 2.0, 3.0, 4.0], 3), ([-0.0, 0.0, 0.0, -0.0], 0), ([0.0, -0.0, 0.0, 0.0], 0)]
    inp = [v for window, _ in cases for v in window]
    B = len(cases)
    dout = [float(10 + i) for i in range(B)]
    out, dinp = run_pool(inp, B, 2, 2, 1, dout)
    for i, (window, winner) in enumerate(cases):
        assert bits([out[i]]) == bits([window[winner]]), (window, out[i])
        want = [0.0] * 4
        want[winner] = dout[i]
        assert dinp[4 * i:4 * i + 4] == want, window


def test_maxpool_channels_are_pooled_separately():
    # 2x2 image, 3 channels: each channel has its maximum elsewhere
    inp = [9.0, 0.0, 0.0,   0.0, 9.0, 0.0,
           0.0, 0.0, 9.0,   1.0, 1.0, 1.0]
    out, dinp = run_pool(inp, 1, 2, 2, 3, [1.0, 2.0, 3.0])
    assert out == [9.0, 9.0, 9.0]
    assert dinp == [1.0, 0.0, 0.0,  0.0, 2.0, 0.0,
                    0.0, 0.0, 3.0,  0.0, 0.0, 0.0]


def test_maxpool_nan_and_inf_do_not_crash():
    # a NaN anywhere in the window, and infinities: the kernel follows the '>'
    # comparisons of the documented rule (a NaN wins only in the first place)
    windows = [[NAN, 1.0, 2.0, 3.0], [1.0, NAN, 2.0, 0.0], [1.0, 2.0, NAN, 0.0],
               [1.0, 2.0, 3.0, NAN], [NAN, NAN, NAN, NAN], [INF, 1.0, INF, 0.0],
               [-INF, -INF, -INF, -INF], [-INF, NAN, -INF, 5.0]]
    inp = [v for w in windows for v in w]
    B = len(windows)
    dout = [float(i + 1) for i in range(B)]
    out, dinp = run_pool(inp, B, 2, 2, 1, dout)
    assert bits(out) == bits(cref.maxpool2x2_forward(inp, B, 2, 2, 1))
    assert bits(dinp) == bits(cref.maxpool2x2_backward(dout, inp, B, 2, 2, 1))
    assert math.isnan(out[0]) and math.isnan(out[4])
    assert out[5] == INF and out[6] == -INF and out[7] == 5.0
    assert all(math.isfinite(v) for v in dinp)  # the gradient itself stays clean


def run_global_avgpool(inp, B, HW, C, dout):
    out, dinp = nans(B * C), nans(B * HW * C)
    lib.avgpool_global_forward(out.ptr, ref.tensor(inp).ptr, B, HW, C)
    lib.avgpool_global_backward(dinp.ptr, ref.tensor(dout).ptr, B, HW, C)
    return out.tolist(), dinp.tolist()


@pytest.mark.parametrize("B,H,W,C", [(1, 1, 1, 1), (2, 3, 5, 7), (3, 7, 7, 17), (2, 4, 4, 33)])
def test_global_avgpool_forward_backward(B, H, W, C):
    rng = random.Random(B * 100 + H * 10 + C)
    inp, dout = ref.rand_list(rng, B * H * W * C), ref.rand_list(rng, B * C)
    out, dinp = run_global_avgpool(inp, B, H * W, C, dout)
    assert bits(out) == bits(cref.avgpool_global_forward(inp, B, H * W, C))
    assert bits(dinp) == bits(cref.avgpool_global_backward(dout, B, H * W, C))


# ---- batch norm ----------------------------------------------------------------------

MOMENTUM, EPS = 0.1, 1e-5
F = ref.f32


def bn_input(rng, N, C):
    """Columns with their own offset and spread (so the mean matters)."""
    offs = [rng.uniform(-2.0, 2.0) for _ in range(C)]
    spread = [rng.uniform(0.2, 3.0) for _ in range(C)]
    return [F(offs[c] + spread[c] * rng.uniform(-1.0, 1.0)) for _ in range(N) for c in range(C)]


@functools.cache
def bn_data(N, C):
    rng = random.Random(N * 100 + C)
    x = bn_input(rng, N, C)
    gamma = [F(rng.uniform(0.5, 1.5) * rng.choice((-1, 1))) for _ in range(C)]
    beta = ref.rand_list(rng, C)
    rm = ref.rand_list(rng, C)
    rv = [F(rng.uniform(0.5, 2.0)) for _ in range(C)]
    dout = ref.rand_list(rng, N * C)
    return x, gamma, beta, rm, rv, dout


def run_bn_forward(x, gamma, beta, rm, rv, N, C, training, relu, momentum=MOMENTUM, eps=EPS):
    out, mean, invstd = nans(N * C), nans(C), nans(C)
    trm, trv = ref.tensor(rm), ref.tensor(rv)
    lib.batchnorm_forward(out.ptr, mean.ptr, invstd.ptr, trm.ptr, trv.ptr, ref.tensor(x).ptr,
                          ref.tensor(gamma).ptr, ref.tensor(beta).ptr, N, C, momentum, eps,
                          training, relu)
    return out.tolist(), mean.tolist(), invstd.tolist(), trm.tolist(), trv.tolist()


def run_bn_backward(dout, x, mean, invstd, gamma, beta, N, C, relu):
    dinp, dgamma, dbeta = nans(N * C), nans(C), nans(C)
    lib.batchnorm_backward(dinp.ptr, dgamma.ptr, dbeta.ptr, ref.tensor(dout).ptr,
                           ref.tensor(x).ptr, ref.tensor(mean).ptr, ref.tensor(invstd).ptr,
                           ref.tensor(gamma).ptr, ref.tensor(beta).ptr, N, C, relu)
    return dinp.tolist(), dgamma.tolist(), dbeta.tolist()


def bn_out_scale(x, gamma, beta, mean, invstd, N, C):
    """|gamma| (|x| + |mean|) invstd + |beta|: the size of the terms of out."""
    return [abs(gamma[c]) * (abs(x[r * C + c]) + abs(mean[c])) * invstd[c] + abs(beta[c])
            for r in range(N) for c in range(C)]


# (N, C): one row (variance 0), C = 1, C = 5, several 256-row blocks (a partial
# last one); norm.c sums 16 channels at a time: C = 16 (one full group), 20 and
# 33 (full groups and a partial one); its backward merges the blocks' sums 64
# channels at a time: C = 70 (a full group and a partial one)
BN_SHAPES = [(1, 1), (1, 3), (2, 1), (6, 3), (5, 5), (256, 2), (257, 1), (700, 3),
             (300, 16), (40, 20), (513, 33), (300, 70)]


@pytest.mark.parametrize("relu", [0, 1])
@pytest.mark.parametrize("N,C", BN_SHAPES)
def test_batchnorm_training_forward(N, C, relu):
    x, gamma, beta, rm, rv, _ = bn_data(N, C)
    out, mean, invstd, nrm, nrv = run_bn_forward(x, gamma, beta, rm, rv, N, C, 1, relu)
    w_out, w_mean, w_invstd, w_rm, w_rv = cref.batchnorm_forward(
        x, gamma, beta, N, C, rm, rv, F(MOMENTUM), F(EPS), True, relu)
    ref.assert_close(mean, w_mean, rel=1e-6, abs_=1e-7, what="mean")
    ref.assert_close(invstd, w_invstd, rel=1e-6, abs_=0, what="invstd")
    # running statistics, PyTorch's rule with the unbiased variance
    ref.assert_close(nrm, w_rm, rel=1e-6, abs_=1e-7, what="running_mean")
    ref.assert_close(nrv, w_rv, rel=1e-6, abs_=1e-7, what="running_var")
    err = ref.max_rel_err(out, w_out, bn_out_scale(x, gamma, beta, w_mean, w_invstd, N, C))
    assert err <= 1e-6, f"out: max normalized error {err:.3g}"
    if relu:
        assert all(v >= 0.0 for v in out)
    if N == 1:  # one row: variance 0, the output is beta (up to the rounding of
        # gamma * invstd * x, invstd = 1/sqrt(eps) being large)
        assert mean == x and nrv == pytest.approx([(1 - MOMENTUM) * v for v in rv], rel=1e-6)
        assert invstd == pytest.approx([1 / math.sqrt(F(EPS))] * C, rel=1e-6)
        for c in range(C):
            size = abs(gamma[c] * x[c]) * invstd[c] + abs(beta[c])
            assert out[c] == pytest.approx(max(beta[c], 0.0) if relu else beta[c],
                                           abs=1e-6 * size)


def test_batchnorm_running_stats_hand_values():
    # x = [1, 2, 3, 6]: mean 3, biased var 3.5, unbiased 14/3
    x = [1.0, 2.0, 3.0, 6.0]
    _, mean, invstd, rm, rv = run_bn_forward(x, [1.0], [0.0], [1.0], [2.0], 4, 1, 1, 0,
                                             momentum=0.25, eps=0.5)
    assert mean == [3.0]
    assert invstd == [F(1 / math.sqrt(4.0))]
    assert rm == [0.75 * 1.0 + 0.25 * 3.0]
    assert rv[0] == pytest.approx(0.75 * 2.0 + 0.25 * 14 / 3, rel=1e-7)
    # momentum 0 keeps them; momentum 1 replaces them by the batch statistics
    _, _, _, rm, rv = run_bn_forward(x, [1.0], [0.0], [1.0], [2.0], 4, 1, 1, 0, momentum=0.0)
    assert rm == [1.0] and rv == [2.0]
    _, _, _, rm, rv = run_bn_forward(x, [1.0], [0.0], [1.0], [2.0], 4, 1, 1, 0, momentum=1.0)
    assert rm == [3.0] and rv == [F(14 / 3)]


@pytest.mark.parametrize("relu", [0, 1])
@pytest.mark.parametrize("N,C", [(1, 3), (6, 3), (5, 5), (700, 3)])
def test_batchnorm_eval_forward(N, C, relu):
    x, gamma, beta, rm, rv, _ = bn_data(N, C)
    out, mean, invstd, nrm, nrv = run_bn_forward(x, gamma, beta, rm, rv, N, C, 0, relu)
    w_out, _, w_invstd, _, _ = cref.batchnorm_forward(x, gamma, beta, N, C, rm, rv,
                                                      F(MOMENTUM), F(EPS), False, relu)
    assert bits(nrm) == bits(rm) and bits(nrv) == bits(rv)  # untouched
    assert bits(mean) == bits(rm)
    ref.assert_close(invstd, w_invstd, rel=1e-6, abs_=0, what="invstd")
    err = ref.max_rel_err(out, w_out, bn_out_scale(x, gamma, beta, rm, w_invstd, N, C))
    assert err <= 1e-6, f"out: max normalized error {err:.3g}"


def bn_backward_scale(dy, x, gamma, N, C):
    """|gamma| invstd (|dy| + (sum|dy| + |xhat| sum|dy xhat|) / N) per element."""
    mean, var = cref.batch_stats(x, N, C)
    scale = [0.0] * (N * C)
    for c in range(C):
        istd = 1.0 / math.sqrt(var[c] + F(EPS))
        xhat = [(v - mean[c]) * istd for v in x[c::C]]
        g = dy[c::C]
        sb = math.fsum(abs(v) for v in g)
        sg = math.fsum(abs(v * h) for v, h in zip(g, xhat))
        for r in range(N):
            scale[r * C + c] = abs(gamma[c]) * istd * (abs(g[r]) + (sb + abs(xhat[r]) * sg) / N)
    return scale


@pytest.mark.parametrize("relu", [0, 1])
@pytest.mark.parametrize("N,C", BN_SHAPES)
def test_batchnorm_backward(N, C, relu):
    x, gamma, beta, rm, rv, dout = bn_data(N, C)
    out, mean, invstd, _, _ = run_bn_forward(x, gamma, beta, rm, rv, N, C, 1, relu)
    dinp, dgamma, dbeta = run_bn_backward(dout, x, mean, invstd, gamma, beta, N, C, relu)
    # the ReLU mask is where the forward's own output is > 0 (recomputed, as documented)
    mask_from = out if relu else None
    w_dinp, w_dgamma, w_dbeta = cref.batchnorm_backward(dout, x, gamma, N, C, F(EPS), mask_from)
    dy = dout if not relu else [d if y > 0 else 0.0 for d, y in zip(dout, out)]
    sb = [math.fsum(abs(v) for v in dy[c::C]) for c in range(C)]
    # dbeta: a sum of float32 values in double, rounded once
    ref.assert_close(dbeta, w_dbeta, rel=1e-6, abs_=1e-7 * max(sb), what="dbeta")
    ref.assert_close(dgamma, w_dgamma, rel=1e-5, abs_=1e-6 * max(sb), what="dgamma")
    scale = bn_backward_scale(dy, x, gamma, N, C)
    err = ref.max_rel_err(dinp, w_dinp, scale)
    assert err <= 1e-5, f"dinp: max normalized error {err:.3g}"
    # through the batch statistics: every column of dinp sums to ~0 (relative
    # to the size of its terms: for N = 2 the true gradient is ~0 itself)
    for c in range(C):
        assert abs(math.fsum(dinp[c::C])) <= 1e-5 * math.fsum(scale[c::C])
    if N == 1:  # one row: the output does not depend on the input at all
        assert all(abs(v) <= 1e-6 * m for v, m in zip(dinp, scale))


def test_batchnorm_backward_masks_where_the_forward_output_is_positive():
    """The backward recomputes the ReLU's mask from inp, gamma and beta by the
    forward's own expression (muladd(scale, inp, shift)). With statistics
    that make scale = gamma and shift = beta exactly (mean 0, invstd 1, as
    the forward's evaluation mode writes them from these running ones) and
    inputs within a few ulps of -beta / gamma, each pre-activation is a
    rounding error away from the kink, where a product rounded apart would
    put it on the other side; with dout all ones, dbeta (the sum of the
    masked dout) still counts exactly the forward outputs > 0 of each channel."""
    N, C = 2048, 16
    rng = random.Random(4)
    gamma = [F(rng.uniform(0.5, 1.5)) for _ in range(C)]
    beta = [F(rng.choice((-1, 1)) * rng.uniform(0.1, 1.0)) for _ in range(C)]
    x = [0.0] * (N * C)
    for c in range(C):
        kink = struct.unpack("<i", struct.pack("<f", -beta[c] / gamma[c]))[0]
        for r in range(N):  # the float32 values k ulps from the kink, k in [-8, 8]
            x[r * C + c] = struct.unpack("<f", struct.pack("<i", kink + r % 17 - 8))[0]
    rv = [F(1.0 - EPS)] * C  # invstd = 1 / sqrt(rv + eps) = 1
    out, mean, invstd, _, _ = run_bn_forward(x, gamma, beta, [0.0] * C, rv, N, C, 0, 1)
    assert mean == [0.0] * C and invstd == [1.0] * C
    _, _, dbeta = run_bn_backward([1.0] * (N * C), x, mean, invstd, gamma, beta, N, C, 1)
    positive = [float(sum(1 for v in out[c::C] if v > 0)) for c in range(C)]
    assert dbeta == positive
    assert 0 < sum(positive) < N * C  # both sides of the kink are there


def test_batchnorm_backward_writes_not_accumulates():
    N, C = 300, 2
    x, gamma, beta, rm, rv, dout = bn_data(N, C)
    _, mean, invstd, _, _ = run_bn_forward(x, gamma, beta, rm, rv, N, C, 1, 0)
    first = run_bn_backward(dout, x, mean, invstd, gamma, beta, N, C, 0)
    dinp, dgamma, dbeta = (ref.tensor([1e30] * n) for n in (N * C, C, C))
    for _ in range(2):
        lib.batchnorm_backward(dinp.ptr, dgamma.ptr, dbeta.ptr, ref.tensor(dout).ptr,
                               ref.tensor(x).ptr, ref.tensor(mean).ptr, ref.tensor(invstd).ptr,
                               ref.tensor(gamma).ptr, ref.tensor(beta).ptr, N, C, 0)
    assert [bits(t.tolist()) for t in (dinp, dgamma, dbeta)] == [bits(v) for v in first]


def bn_objective(x, gamma, beta, g, N, C, relu, eps):
    """sum(out * g) of the double reference's training forward."""
    out = cref.batchnorm_forward(x, gamma, beta, N, C, [0.0] * C, [1.0] * C, 0.1, eps, True,
                                 relu)[0]
    return math.fsum(a * b for a, b in zip(out, g)), out


@pytest.mark.parametrize("relu", [0, 1])
def test_batchnorm_reference_backward_by_finite_differences(relu):
    """Self-check of the double reference: central differences (h = 1e-6, in
    double) of sum(out * g) agree with its analytic backward."""
    N, C = 6, 3
    x, gamma, beta, _, _, g = bn_data(N, C)
    eps = F(EPS)
    _, out = bn_objective(x, gamma, beta, g, N, C, relu, eps)
    if relu:  # no pre-activation within reach of a kink (keep the check meaningful)
        pre = bn_objective(x, gamma, beta, g, N, C, 0, eps)[1]
        assert min(abs(v) for v in pre) > 1e-3
    dinp, dgamma, dbeta = cref.batchnorm_backward(g, x, gamma, N, C, eps, out if relu else None)
    h = 1e-6

    def central(f, values, t):
        up, down = list(values), list(values)
        up[t] += h
        down[t] -= h
        return (f(up) - f(down)) / (2 * h)

    for t in range(N * C):
        num = central(lambda v: bn_objective(v, gamma, beta, g, N, C, relu, eps)[0], x, t)
        assert num == pytest.approx(dinp[t], rel=1e-5, abs=1e-7), f"dinp[{t}]"
    for c in range(C):
        num = central(lambda v: bn_objective(x, v, beta, g, N, C, relu, eps)[0], gamma, c)
        assert num == pytest.approx(dgamma[c], rel=1e-5, abs=1e-7), f"dgamma[{c}]"
        num = central(lambda v: bn_objective(x, gamma, v, g, N, C, relu, eps)[0], beta, c)
        assert num == pytest.approx(dbeta[c], rel=1e-5, abs=1e-7), f"dbeta[{c}]"


@pytest.mark.parametrize("relu", [0, 1])
def test_batchnorm_kernel_backward_by_finite_differences(relu):
    """The float32 kernels directly: central differences (h = 1e-2) of
    sum(out * g) through batchnorm_forward against batchnorm_backward, with
    and without the fused ReLU (no output of this data lies within a step of
    its kink, which the assert below makes sure of)."""
    N, C = 5, 4  # 12 of the 20 values above 0 before the ReLU, none within 0.09 of it
    x, gamma, beta, rm, rv, g = bn_data(N, C)

    def objective(xv, gv, bv):
        out = run_bn_forward(xv, gv, bv, rm, rv, N, C, 1, relu)[0]
        return math.fsum(a * b for a, b in zip(out, g))

    pre = run_bn_forward(x, gamma, beta, rm, rv, N, C, 1, 0)[0]
    assert not relu or min(abs(v) for v in pre) > 0.05, "pick other data"
    _, mean, invstd, _, _ = run_bn_forward(x, gamma, beta, rm, rv, N, C, 1, relu)
    dinp, dgamma, dbeta = run_bn_backward(g, x, mean, invstd, gamma, beta, N, C, relu)
    h = 1e-2
    biggest = max(abs(v) for v in dinp + dgamma + dbeta)

    def check(name, values, analytic, which):
        for t in range(len(values)):
            up, down = list(values), list(values)
            up[t] += h
            down[t] -= h
            args_up, args_down = [x, gamma, beta], [x, gamma, beta]
            args_up[which], args_down[which] = up, down
            num = (objective(*args_up) - objective(*args_down)) / (2 * h)
            assert abs(num - analytic[t]) <= 2e-2 * max(abs(num), abs(analytic[t])) \
                + 2e-3 * biggest, f"{name}[{t}]: numeric {num}, analytic {analytic[t]}"

    check("dinp", x, dinp, 0)
    check("dgamma", gamma, dgamma, 1)
    check("dbeta", beta, dbeta, 2)


# ---- thread invariance -------------------------------------------------------------

def _across_threads(run):
    results = []
    for threads in THREAD_COUNTS:
        lib.pynn_set_threads(threads)
        results.append(run())
    lib.pynn_set_threads(0)
    return results


@needs_threads
@pytest.mark.parametrize("road", ["by-shape", "im2col"])
@pytest.mark.parametrize("shape", [CHUNKED[0], DW_CHUNKED[1], (4, 28, 28, 1, 8, 5),
                                   (5, 12, 12, 1, 32, 3)],
                         ids=_shape_id)
def test_conv_bit_identical_across_threads(shape, road, conv_path):
    # CHUNKED[0] takes Winograd's road by shape, im2col's when forced; the
    # one-channel shapes take the direct loops either way
    B, H, W, C, OC, k = shape
    assert 2.0 * B * H * W * k * k * C * OC >= 50000.0  # a parallel region opens
    inp, w, bias, dout = conv_data(shape)
    if road == "im2col":
        conv_path(lib.PYNN_CONV_IM2COL)

    def run():
        out = run_conv_forward(shape, inp, w, bias)
        dinp, dw, db = run_conv_backward(shape, dout, inp, w)
        return bits(out) + bits(dinp) + bits(dw) + bits(db)

    one, *others = _across_threads(run)
    assert all(other == one for other in others)


@needs_threads
def test_maxpool_bit_identical_across_threads():
    B, H, W, C = 4, 29, 27, 24  # odd sizes, B*H*W*C >= 65536: parallel
    assert B * H * W * C >= 65536
    rng = random.Random(4)
    inp = pool_input(rng, B * H * W * C, ties=True)
    dout = ref.rand_list(rng, B * (H // 2) * (W // 2) * C)
    one, *others = _across_threads(lambda: [bits(v) for v in
                                            run_pool(inp, B, H, W, C, dout)])
    assert all(other == one for other in others)
    assert one[0] == bits(cref.maxpool2x2_forward(inp, B, H, W, C))
    assert one[1] == bits(cref.maxpool2x2_backward(dout, inp, B, H, W, C))


@needs_threads
def test_global_avgpool_bit_identical_across_threads():
    B, HW, C = 37, 49, 40  # B*HW*C >= 65536: parallel, one image per thread
    assert B * HW * C >= 65536
    rng = random.Random(5)
    inp, dout = ref.rand_list(rng, B * HW * C), ref.rand_list(rng, B * C)
    one, *others = _across_threads(lambda: [bits(v) for v in
                                            run_global_avgpool(inp, B, HW, C, dout)])
    assert all(other == one for other in others)
    assert one[0] == bits(cref.avgpool_global_forward(inp, B, HW, C))


@needs_threads
@pytest.mark.parametrize("relu", [0, 1])
def test_batchnorm_bit_identical_across_threads(relu):
    N, C = 3301, 20  # N*C >= 65536: parallel; 13 blocks, the last partial; 16 + 4 channels
    assert N * C >= 65536
    rng = random.Random(8)
    x = bn_input(rng, N, C)
    gamma, beta = ref.rand_list(rng, C), ref.rand_list(rng, C)
    rm, rv = ref.rand_list(rng, C), [1.0] * C
    dout = ref.rand_list(rng, N * C)

    def run():
        out, mean, invstd, nrm, nrv = run_bn_forward(x, gamma, beta, rm, rv, N, C, 1, relu)
        grads = run_bn_backward(dout, x, mean, invstd, gamma, beta, N, C, relu)
        return [bits(v) for v in (out, mean, invstd, nrm, nrv) + grads]

    one, *others = _across_threads(run)
    assert all(other == one for other in others)
    # and the batch statistics are still right at this size
    w_mean, w_var = cref.batch_stats(x, N, C)
    mean = struct.unpack(f"{C}f", one[1])
    invstd = struct.unpack(f"{C}f", one[2])
    ref.assert_close(mean, w_mean, rel=1e-6, abs_=1e-7, what="mean")
    ref.assert_close(invstd, [1 / math.sqrt(v + F(EPS)) for v in w_var], rel=1e-6,
                     what="invstd")


# ---- the augmenting gather ----------------------------------------------------------

def gather_images(rng, N, H, W):
    """N images of distinct values (a misplaced pixel shows)."""
    return [F(n * 1000 + p + rng.random() * 0.5) for n in range(N) for p in range(H * W)]


def run_gather(inp, idx, H, W, shift, flip, fill, seed, erase=0.0):
    out = nans(len(idx) * H * W)
    lib.pynn_gather_augment(out.ptr, ref.tensor(inp).ptr, ref.ints(idx).ptr, len(idx), H, W,
                            shift, flip, erase, fill, seed)
    return out.tolist()


SEEDS = [0, 1, 12345, 0xDEADBEEFCAFEBABE, 2**64 - 1]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shift,flip", [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)])
@pytest.mark.parametrize("H,W", [(5, 7), (6, 4), (28, 28)])
def test_gather_augment_matches_reference(H, W, shift, flip, seed):
    rng = random.Random(H * 100 + W + shift)
    N = 7
    inp = gather_images(rng, N, H, W)
    B = 12 if H * W < 100 else 3
    idx = [rng.randrange(N) for _ in range(B)]
    fill = F(-0.4242)
    got = run_gather(inp, idx, H, W, shift, flip, fill, seed)
    assert bits(got) == bits(cref.gather_augment(inp, idx, H, W, shift, flip, fill, seed))


@pytest.mark.parametrize("erase", [0.5, 1.0])
@pytest.mark.parametrize("H,W", [(5, 7), (2, 3), (28, 28), (1, 9)])
def test_gather_augment_with_erasing_matches_reference(H, W, erase):
    rng = random.Random(H * 31 + W)
    N, B = 5, 16 if H * W < 100 else 4
    inp = gather_images(rng, N, H, W)
    idx = [rng.randrange(N) for _ in range(B)]
    fill = F(-0.4242)
    got = run_gather(inp, idx, H, W, 1, 1, fill, 4242, erase)
    assert bits(got) == bits(cref.gather_augment(inp, idx, H, W, 1, 1, fill, 4242, erase))
    plain = run_gather(inp, idx, H, W, 1, 1, fill, 4242)  # the same shifts and flips
    erased = [g != p for g, p in zip(got, plain)]
    assert all(got[k] == fill for k, e in enumerate(erased) if e)
    if erase == 1.0 and H > 1:  # every sample loses one rectangle of at most half each way:
        # seen without shifts and flips, against the image itself (not the reference)
        still = run_gather(inp, idx, H, W, 0, 0, fill, 4242, erase)
        for i in range(B):
            image, out = inp[idx[i] * H * W:(idx[i] + 1) * H * W], still[i * H * W:(i + 1) * H * W]
            lost = [(y, x) for y in range(H) for x in range(W) if out[y * W + x] != image[y * W + x]]
            assert all(out[y * W + x] == fill for y, x in lost)
            ys, xs = {y for y, _ in lost}, {x for _, x in lost}
            assert 1 <= len(ys) <= H // 2 and 1 <= len(xs) <= W // 2
            assert len(lost) == len(ys) * len(xs) == (max(ys) - min(ys) + 1) * (max(xs) - min(xs) + 1)


def test_gather_augment_parallel_batch_matches_reference():
    H = W = 28
    B, N = 24, 30  # B*H*W >= 16384: the parallel path
    rng = random.Random(11)
    inp = gather_images(rng, N, H, W)
    idx = [rng.randrange(N) for _ in range(B)]
    for threads in (1, 2, 3):
        lib.pynn_set_threads(threads)
        got = run_gather(inp, idx, H, W, 2, 1, -1.0, 777)
        assert bits(got) == bits(cref.gather_augment(inp, idx, H, W, 2, 1, -1.0, 777))


def test_gather_augment_same_seed_same_batch_other_seed_other_batch():
    H, W, N = 6, 5, 10
    rng = random.Random(3)
    inp = gather_images(rng, N, H, W)
    idx = list(range(N)) * 2
    a = run_gather(inp, idx, H, W, 2, 1, 0.0, 99)
    b = run_gather(inp, idx, H, W, 2, 1, 0.0, 99)
    c = run_gather(inp, idx, H, W, 2, 1, 0.0, 100)
    assert bits(a) == bits(b)
    assert bits(a) != bits(c)
    # the draw depends on the position i in the batch, not on the image: the
    # two copies of each image (positions n and n + N) are moved differently
    assert any(a[n * H * W:(n + 1) * H * W] != a[(n + N) * H * W:(n + N + 1) * H * W]
               for n in range(N))


@pytest.mark.parametrize("H,W", [(5, 7), (28, 28)])
def test_gather_augment_without_augmentation_is_plain_gather(H, W):
    rng = random.Random(5)
    N, B = 9, 13
    inp = gather_images(rng, N, H, W)
    idx = [rng.randrange(N) for _ in range(B)]
    plain = nans(B * H * W)
    lib.pynn_gather_rows(plain.ptr, ref.tensor(inp).ptr, ref.ints(idx).ptr, B, H * W)
    for seed in (0, 123, 2**64 - 1):
        got = run_gather(inp, idx, H, W, 0, 0, 7.0, seed)
        assert bits(got) == bits(plain.tolist())
        assert got == [v for n in idx for v in inp[n * H * W:(n + 1) * H * W]]


def test_gather_augment_flip_only_mirrors():
    H, W, N = 4, 5, 3
    rng = random.Random(6)
    inp = gather_images(rng, N, H, W)
    idx = [0, 1, 2] * 10
    seed = 4242
    got = run_gather(inp, idx, H, W, 0, 1, 0.0, seed)
    mirrored = 0
    for i, n in enumerate(idx):
        img = inp[n * H * W:(n + 1) * H * W]
        flipped = [img[y * W + W - 1 - x] for y in range(H) for x in range(W)]
        mine = got[i * H * W:(i + 1) * H * W]
        assert mine in (img, flipped)
        mirrored += mine == flipped
        assert (mine == flipped) == bool(cref.augment_draw(seed, i, 0, 1)[2])
    assert 0 < mirrored < len(idx)


@pytest.mark.parametrize("flip", [0, 1])
def test_gather_augment_moves_a_single_pixel(flip):
    """An independent check of the direction: a one-hot image's pixel (y0, x0)
    lands at (y0 + dy, x0' + dx), x0' = W-1-x0 when mirrored; everything else
    is background 0 or, where the image was moved away, the fill value."""
    H, W, y0, x0 = 7, 6, 3, 2  # at least shift = 2 from every edge, mirrored too
    img = [0.0] * (H * W)
    img[y0 * W + x0] = 1.0
    B, seed, shift, fill = 40, 31337, 2, -5.0
    got = run_gather(img, [0] * B, H, W, shift, flip, fill, seed)
    seen = set()
    for i in range(B):
        dy, dx, mirror = cref.augment_draw(seed, i, shift, flip)
        seen.add((dy, dx, mirror))
        xs = W - 1 - x0 if mirror else x0
        o = got[i * H * W:(i + 1) * H * W]
        assert o.count(1.0) == 1 and o[(y0 + dy) * W + xs + dx] == 1.0, (i, dy, dx, mirror)
        # the fill: exactly the pixels whose source lies outside the image
        n_fill = H * W - (H - abs(dy)) * (W - abs(dx))
        assert o.count(fill) == n_fill
        for y in range(H):
            for x in range(W):
                outside = not (0 <= y - dy < H and 0 <= x - dx < W)
                assert (o[y * W + x] == fill) == outside
    assert len(seen) > 10  # the draws do vary


def test_gather_augment_draws_cover_every_shift_and_both_flips():
    """The hash's three fields: every (dy, dx) in [-2, 2]^2 comes up, and the
    mirror bit is set about half the time (the fields are not degenerate)."""
    seed, n = 2024, 4000
    draws = [cref.augment_draw(seed, i, 2, 1) for i in range(n)]
    pairs = {(dy, dx) for dy, dx, _ in draws}
    assert pairs == {(a, b) for a in range(-2, 3) for b in range(-2, 3)}
    flips = sum(m for _, _, m in draws)
    assert abs(flips - n / 2) < 5 * math.sqrt(n / 4)
    # the same draws, seen through the kernel: a one-pixel image at the center
    H = W = 5
    img = [0.0] * 25
    img[12] = 1.0
    got = run_gather(img, [0] * 200, H, W, 2, 1, 0.0, seed)
    for i in range(200):
        dy, dx, _ = draws[i]
        assert got[i * 25 + (2 + dy) * W + 2 + dx] == 1.0


# ---- softmax cross-entropy with label smoothing --------------------------------------

def ce_run(logits, targets, B, V, eps, with_losses=True):
    probs, losses = nans(B * V), nans(B)
    correct = ffi.new("int32_t *", 12345)
    total = lib.crossentropy_softmax_forward(probs.ptr, losses.ptr if with_losses else ffi.NULL,
                                             correct, ref.tensor(logits).ptr,
                                             ref.ints(targets).ptr, eps, B, V)
    return total, correct[0], probs.tolist(), losses.tolist()


def ce_backward(probs, targets, B, V, eps):
    d = nans(B * V)
    lib.crossentropy_softmax_backward(d.ptr, ref.tensor(probs).ptr, ref.ints(targets).ptr, eps,
                                      B, V)
    return d.tolist()


CE_SHAPES = [(1, 1), (1, 2), (6, 3), (17, 10), (4, 100)]


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("B,V", CE_SHAPES)
def test_smoothed_crossentropy_forward_backward(B, V, eps):
    rng = random.Random(B * 31 + V + int(eps * 10))
    logits = ref.rand_list(rng, B * V, -4.0, 4.0)
    targets = [rng.randrange(V) for _ in range(B)]
    total, correct, probs, losses = ce_run(logits, targets, B, V, eps)
    w_p, w_l, w_total, w_correct = cref.softmax_ce_smooth(logits, targets, B, V, F(eps))
    ref.assert_close(probs, w_p, rel=1e-5, abs_=1e-7, what="probs")
    ref.assert_close(losses, w_l, rel=1e-5, abs_=1e-6, what="losses")
    assert total == pytest.approx(w_total, rel=1e-5, abs=1e-6)
    assert correct == w_correct
    # the same as reference.py's plain cross-entropy when eps = 0
    if eps == 0.0:
        plain = ref.softmax_ce(logits, targets, B, V)
        ref.assert_close(w_l, plain[1], rel=1e-12, abs_=1e-12, what="eps=0 reference")
    # probabilities and hits do not depend on the smoothing
    total0, correct0, probs0, _ = ce_run(logits, targets, B, V, 0.0)
    assert bits(probs) == bits(probs0) and correct == correct0
    if eps > 0.0 and V > 1:  # smoothing moves every loss (up, unless p is uniform)
        assert total != total0
    d = ce_backward(probs, targets, B, V, eps)
    want = cref.softmax_ce_smooth_backward(probs, targets, B, V, F(eps))
    ref.assert_close(d, want, rel=1e-6, abs_=2e-7 / B, what="dlogits")
    for b in range(B):  # every row sums to ~0: p and q are both distributions
        assert abs(math.fsum(d[b * V:(b + 1) * V])) < 1e-6


@pytest.mark.parametrize("B,V", CE_SHAPES)
def test_smoothing_zero_is_the_old_gradient_bit_for_bit(B, V):
    """eps = 0: dlogits = p * (1/B), minus 1/B at the target, each rounded to
    float32 once, exactly as before label smoothing existed."""
    rng = random.Random(B + V)
    logits = ref.rand_list(rng, B * V, -4.0, 4.0)
    targets = [rng.randrange(V) for _ in range(B)]
    _, _, probs, losses = ce_run(logits, targets, B, V, 0.0)
    scale = F(1.0 / F(float(B)))
    want = []
    for b in range(B):
        row = [F(p * scale) for p in probs[b * V:(b + 1) * V]]
        row[targets[b]] = F(row[targets[b]] - scale)
        want += row
    assert bits(ce_backward(probs, targets, B, V, 0.0)) == bits(want)
    # and the loss is still log(sum) - (x_t - max): no smoothing term at all,
    # so a loss of 0 stays exactly 0 (a one-class row)
    if V == 1:
        assert losses == [0.0] * B


def test_smoothing_hand_values():
    # two equal logits: p = (1/2, 1/2) whatever the target; with smoothing eps
    # q = (1 - eps/2, eps/2): loss = log 2 for every eps, gradient (p - q) / B
    B, V, eps = 2, 2, 0.25
    _, _, probs, losses = ce_run([0.0, 0.0, 3.0, 3.0], [0, 1], B, V, eps)
    assert probs == [0.5] * 4
    assert losses == pytest.approx([math.log(2.0)] * 2, rel=1e-7)
    d = ce_backward(probs, [0, 1], B, V, eps)
    assert d == pytest.approx([(0.5 - 0.875) / 2, (0.5 - 0.125) / 2,
                               (0.5 - 0.125) / 2, (0.5 - 0.875) / 2], rel=1e-7)
    # a confident, right prediction: smoothing makes its loss larger
    t0, _, _, _ = ce_run([10.0, 0.0], [0], 1, 2, 0.0)
    t1, _, _, _ = ce_run([10.0, 0.0], [0], 1, 2, 0.2)
    assert t1 > t0 and t1 == pytest.approx(0.9 * t0 + 0.1 * (t0 + 10.0), rel=1e-6)


def test_smoothed_crossentropy_losses_null_and_bad_target():
    logits, targets = [1.0, 2.0, 3.0, 0.5, 0.5, 0.0], [2, 0]
    a = ce_run(logits, targets, 2, 3, 0.1, with_losses=True)
    b = ce_run(logits, targets, 2, 3, 0.1, with_losses=False)
    assert a[:3] == b[:3]
    total, correct, probs, _ = ce_run(logits, [2, 3], 2, 3, 0.1)
    assert math.isnan(total) and correct == -1
    # backward never indexes with the bad label: that row is just (p - eps/V) / B
    d = ce_backward(probs, [2, 3], 2, 3, 0.1)
    ref.assert_close(d[3:6], [(p - F(0.1) / 3) / 2 for p in probs[3:6]], rel=1e-6,
                     abs_=1e-8, what="bad row")


def test_smoothed_reference_gradient_by_finite_differences():
    """Self-check of the reference, in double: the central difference of the
    MEAN smoothed loss is (p - q) / B."""
    B, V, eps = 3, 5, 0.2
    rng = random.Random(17)
    logits = [rng.uniform(-3, 3) for _ in range(B * V)]
    targets = [rng.randrange(V) for _ in range(B)]
    probs = cref.softmax_ce_smooth(logits, targets, B, V, eps)[0]
    grad = cref.softmax_ce_smooth_backward(probs, targets, B, V, eps)
    h = 1e-6
    for t in range(B * V):
        up, down = list(logits), list(logits)
        up[t] += h
        down[t] -= h
        num = (cref.softmax_ce_smooth(up, targets, B, V, eps)[2]
               - cref.softmax_ce_smooth(down, targets, B, V, eps)[2]) / (2 * h * B)
        assert num == pytest.approx(grad[t], rel=1e-6, abs=1e-9)


def test_smoothed_kernel_gradient_by_finite_differences():
    """The kernels themselves: the forward returns the SUMMED loss, the
    backward the gradient of the MEAN; central differences in float32
    (h = 2^-6) of total / B match it."""
    B, V, eps = 4, 6, 0.2
    rng = random.Random(23)
    logits = ref.rand_list(rng, B * V, -2.0, 2.0)
    targets = [rng.randrange(V) for _ in range(B)]
    _, _, probs, _ = ce_run(logits, targets, B, V, eps)
    grad = ce_backward(probs, targets, B, V, eps)
    h = 2.0 ** -6
    for t in range(B * V):
        up, down = list(logits), list(logits)
        up[t] += h
        down[t] -= h
        num = (ce_run(up, targets, B, V, eps)[0] - ce_run(down, targets, B, V, eps)[0]) / (2 * h)
        num /= B
        assert abs(num - grad[t]) <= 2e-2 * abs(grad[t]) + 2e-4, \
            f"dlogits[{t}]: numeric {num}, analytic {grad[t]}"


def test_crossentropy_loss_class_passes_smoothing():
    from pynn.loss import CrossEntropyLoss
    logits, targets = [0.0, 1.0, 2.0, 0.0], [1, 0]
    want = cref.softmax_ce_smooth(logits, targets, 2, 2, F(0.3))
    mean, correct = CrossEntropyLoss(0.3).forward(ref.tensor(logits, (2, 2)),
                                                  ref.ints(targets))
    assert mean == pytest.approx(want[2] / 2, rel=1e-6)
    assert correct == want[3]
