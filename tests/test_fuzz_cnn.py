"""Fuzzing the CNN kernels (csrc/conv.c, csrc/norm.c, the augmenting gather)
with Hypothesis: random shapes, odd and tiny ones included (empty batches,
one-pixel images, kernels larger than the image), random values. Each result
is compared with the pure-Python references of cnn_reference.py, so that a
wrong index is an error here and, under scripts/sanitize.sh (AddressSanitizer),
an out-of-bounds read or write is one too.

PYNN_FUZZ_EXAMPLES sets the examples per test, as in test_fuzz.py.
"""
import math
import os

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pynn._kernels import ffi, lib
from pynn.tensor import Tensor

import cnn_reference as cref
import reference as ref
from reference import bits, f32, f32list

EXAMPLES = int(os.environ.get("PYNN_FUZZ_EXAMPLES", "100"))
# derandomized unless PYNN_FUZZ_RANDOM=1 (as tests/test_fuzz.py)
RANDOM = os.environ.get("PYNN_FUZZ_RANDOM", "") not in ("", "0")
FUZZ = settings(max_examples=max(10, EXAMPLES // 10), deadline=None, derandomize=not RANDOM,
                database=None, suppress_health_check=list(HealthCheck))
values = st.floats(-4.0, 4.0, allow_nan=False, width=32)
grid = st.integers(-32, 32).map(lambda v: v / 8.0)  # exact, and never all but equal


def t(vals):
    return Tensor.from_list(vals, (len(vals),))


def close(got, want, terms):
    return all(abs(g - w) <= 1e-5 * (1.0 + s) for g, w, s in zip(got, want, terms))


def summed_within(got, want, terms, K):
    """Each got[i] a float32 sum of at most K products (want[i] exactly, the
    size of its terms terms[i]) in any order, FMAs or not: off by at most
    gamma_K terms[i] (Higham: each product rounded once, each of the K - 1
    additions once; gamma_K = K u / (1 - K u) <= (K + 1) u while K (K + 1) <= 2^24,
    u = 2^-24), plus 2^-150 for each product that underflows (Hypothesis draws
    values down to the subnormal range)"""
    u = 2.0 ** -24
    return all(abs(g - w) <= (K + 1) * u * s + K * 2.0 ** -150 for g, w, s in zip(got, want, terms))


@st.composite
def conv_case(draw):
    B, H, W = draw(st.integers(0, 2)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    C, OC, k = draw(st.integers(1, 4)), draw(st.integers(1, 5)), draw(st.sampled_from([1, 3, 5, 7]))
    if draw(st.integers(0, 3)) == 0:  # one channel into whole 32-output blocks (and a partial one)
        C, OC, k = 1, draw(st.sampled_from([32, 37])), draw(st.sampled_from([1, 3]))
    n_in, n_w = B * H * W * C, OC * k * k * C
    inp = draw(st.lists(values, min_size=n_in, max_size=n_in))
    w = draw(st.lists(values, min_size=n_w, max_size=n_w))
    dout = draw(st.lists(values, min_size=B * H * W * OC, max_size=B * H * W * OC))
    return B, H, W, C, OC, k, inp, w, dout


@FUZZ
@given(conv_case(), st.booleans())
def test_fuzz_conv(case, with_bias):
    B, H, W, C, OC, k, inp, w, dout = case
    bias = [0.5 * (o + 1) for o in range(OC)] if with_bias else None
    out = Tensor((max(1, B * H * W * OC),))
    lib.conv2d_forward(out.ptr, t(inp).ptr, t(w).ptr, t(bias).ptr if bias else ffi.NULL,
                       B, H, W, C, OC, k)
    want = cref.conv2d_forward(inp, w, bias, B, H, W, C, OC, k)
    terms = cref.conv2d_forward([abs(v) for v in inp], [abs(v) for v in w],
                                [abs(v) for v in bias] if bias else None, B, H, W, C, OC, k)
    assert close(out.tolist()[:len(want)], want, terms)
    dinp, dw, db = Tensor((max(1, len(inp)),)), Tensor((len(w),)), Tensor((OC,))
    lib.conv2d_backward(dinp.ptr, dw.ptr, db.ptr, t(dout).ptr, t(inp).ptr, t(w).ptr,
                        B, H, W, C, OC, k)
    wants = cref.conv2d_backward(dout, inp, w, B, H, W, C, OC, k)
    sizes = cref.conv2d_backward(cref.absl(dout), cref.absl(inp), cref.absl(w), B, H, W, C, OC, k)
    # dinp[i] sums at most OC k k products, dweight and dbias at most B H W (and with
    # C <= 4 no shape here takes Winograd's road, whose transforms add other terms)
    for got, want, size, K in zip((dinp, dw, db), wants, sizes, (OC * k * k, B * H * W, B * H * W)):
        assert summed_within(got.tolist()[:len(want)], want, size, K)


@st.composite
def image_case(draw, values=values):
    B, H, W, C = (draw(st.integers(0, 3)), draw(st.integers(1, 7)), draw(st.integers(1, 7)),
                  draw(st.integers(1, 18)))
    n = B * H * W * C
    inp = draw(st.lists(values, min_size=n, max_size=n))
    m = B * (H // 2) * (W // 2) * C
    dout = draw(st.lists(values, min_size=m, max_size=m))
    return B, H, W, C, inp, dout


@FUZZ
@given(image_case())
def test_fuzz_maxpool(case):
    B, H, W, C, inp, dout = case
    out, dinp = Tensor((max(1, len(dout)),)), Tensor((max(1, len(inp)),)).fill_(7.0)
    lib.maxpool2x2_forward(out.ptr, t(inp).ptr, B, H, W, C)
    lib.maxpool2x2_backward(dinp.ptr, t(dout).ptr, t(inp).ptr, B, H, W, C)
    assert out.tolist()[:len(dout)] == cref.maxpool2x2_forward(inp, B, H, W, C)
    assert dinp.tolist()[:len(inp)] == cref.maxpool2x2_backward(dout, inp, B, H, W, C)


def untied(inp, H, W, C):
    """inp (grid values, 1/8 apart) plus (2 dy + dx) / 64 at window position
    (dy, dx): the four values of every window distinct, by at least 1/64, and
    every sum of them still exact in float32"""
    return [v + (2 * ((i // (W * C)) % H % 2) + (i // C) % W % 2) / 64.0
            for i, v in enumerate(inp)]


# The fused tail against the reference layers (double precision) one after
# another. Batch norm's statistics sum N <= 3 * 7 * 7 = 147 rows in float32
# (the sums of the mean are exact on these values, those of the variance are
# not): the variance is off by at most about (N + 3) u relative, invstd by
# half that, about 4.5e-6; the coefficients and y = scale z + shift add a few
# roundings of the size of their terms |gamma| (|z| + |mean|) invstd + |beta|.
# So 1e-5 of that scale (the largest of a window's: the pool's maximum is off
# by at most its inputs' largest error).
BN_POOL_ERR = 1e-5
# The backward's dinp = cd dy + ca z + cb: ca is the product of invstd^3 and
# a sum, so up to 3 x 4.5e-6 relative from invstd alone, plus the few
# roundings of the sums (dy summed per pooled row in float32, at most 3
# windows, the rows in double) and of the coefficients: 2e-5 of the sizes of
# the terms (bn_pool_grad_scale)
BN_POOL_GRAD_ERR = 2e-5


def bn_pool_grad_scale(dy, x, gamma, mean, invstd, N, C):
    """The sizes of the terms of (dinp, dgamma, dbeta) as the fused backward
    forms them (z - mean in float32, dinp = cd dy + ca z + cb, so |z| + |mean|
    where the textbook form has |z - mean|): per channel sb = sum |dy|,
    sg = invstd sum |dy| (|z| + |mean|), and dinp's
    |gamma| invstd (|dy| + (sb + invstd (|z| + |mean|) sg) / N)."""
    sb = [math.fsum(abs(v) for v in dy[c::C]) for c in range(C)]
    sg = [invstd[c] * math.fsum(abs(d) * (abs(z) + abs(mean[c]))
                                for d, z in zip(dy[c::C], x[c::C])) for c in range(C)]
    dinp = []
    for i, z in enumerate(x):
        c = i % C
        xhat_size = invstd[c] * (abs(z) + abs(mean[c]))
        dinp.append(abs(gamma[c]) * invstd[c] * (abs(dy[i]) + (sb[c] + xhat_size * sg[c]) / N))
    return dinp, sg, sb


def plain_tail(inp, gamma, beta, B, H, W, C, eps):
    """batchnorm_forward, relu_forward, maxpool2x2_forward: the kernels the
    fused forward must equal bit for bit (csrc/fused.c)"""
    N = B * H * W
    y, mean, invstd, rm, rv = Tensor((N * C,)), Tensor((C,)), Tensor((C,)), Tensor((C,)), \
        Tensor((C,)).fill_(1.0)
    lib.batchnorm_forward(y.ptr, mean.ptr, invstd.ptr, rm.ptr, rv.ptr, t(inp).ptr, t(gamma).ptr,
                          t(beta).ptr, N, C, 0.1, eps, 1, 0)
    lib.relu_forward(y.ptr, y.ptr, N * C)
    out = Tensor((max(1, B * (H // 2) * (W // 2) * C),))
    lib.maxpool2x2_forward(out.ptr, y.ptr, B, H, W, C)
    return out.tolist()[:B * (H // 2) * (W // 2) * C]


@settings(FUZZ, max_examples=max(10, EXAMPLES // 2))  # 50 by default: under 1 s
@given(image_case(grid))
def test_fuzz_fused_batchnorm_relu_pool(case):
    """The fused kernel pair against the reference layers one after another:
    batchnorm_forward, relu, maxpool2x2_forward, and back maxpool2x2_backward
    (the first maximum), the ReLU's mask and batchnorm_backward. The windows
    hold distinct values (untied) and gamma > 0, so each window's winner is
    the same for any rounding; examples where a winner's y lies within
    rounding of 0 (the ReLU's edge) are left out."""
    B, H, W, C, inp, dout = case
    N = B * H * W
    if N < 2:
        return  # batch statistics of fewer than two values: no variance
    inp = untied(inp, H, W, C)
    gamma = f32list([0.5 + 0.1 * c for c in range(C)])
    beta = f32list([0.3 - 0.07 * c for c in range(C)])  # never 0: y = 0 never at z = mean
    eps = f32(1e-5)
    mean, invstd, rm, rv = Tensor((C,)), Tensor((C,)), Tensor((C,)), Tensor((C,)).fill_(1.0)
    out = Tensor((max(1, len(dout)),))
    way, zway = Tensor((max(1, len(dout)),)), Tensor((max(1, len(dout)),))
    lib.batchnorm_relu_maxpool_forward(out.ptr, way.ptr, zway.ptr, mean.ptr, invstd.ptr, rm.ptr,
                                       rv.ptr, t(inp).ptr, t(gamma).ptr, t(beta).ptr, B, H, W,
                                       C, 0.1, eps, 1)
    assert bits(out.tolist()[:len(dout)]) == bits(plain_tail(inp, gamma, beta, B, H, W, C, eps))
    y, w_mean, w_invstd, *_ = cref.batchnorm_forward(inp, gamma, beta, N, C, [0.0] * C,
                                                     [1.0] * C, 0.1, eps, True, relu=False)
    size = [abs(gamma[c]) * (abs(z) + abs(w_mean[c])) * w_invstd[c] + abs(beta[c])
            for i, z in enumerate(inp) for c in (i % C,)]
    top, top_size = (cref.maxpool2x2_forward(v, B, H, W, C) for v in (y, size))
    # each window's winner is the largest z (gamma > 0); whether its gradient gets
    # through the ReLU must not hang on rounding: its y well outside the error bound
    assume(all(abs(v) > 4 * BN_POOL_ERR * s for v, s in zip(top, top_size)))
    relu = [v if v > 0 else 0.0 for v in y]
    want = cref.maxpool2x2_forward(relu, B, H, W, C)
    assert ref.max_rel_err(out.tolist()[:len(want)], want, top_size) <= BN_POOL_ERR
    dinp, dg, db = Tensor((len(inp),)), Tensor((C,)), Tensor((C,))
    lib.batchnorm_relu_maxpool_backward(dinp.ptr, dg.ptr, db.ptr, t(dout).ptr, way.ptr,
                                        zway.ptr, t(inp).ptr, mean.ptr, invstd.ptr,
                                        t(gamma).ptr, B, H, W, C)
    routed = cref.maxpool2x2_backward(dout, relu, B, H, W, C)
    dy = [d if v > 0 else 0.0 for d, v in zip(routed, y)]
    wants = cref.batchnorm_backward(dy, inp, gamma, N, C, eps)
    scales = bn_pool_grad_scale(dy, inp, gamma, w_mean, w_invstd, N, C)
    for what, got, w, s in zip(("dinp", "dgamma", "dbeta"), (dinp, dg, db), wants, scales):
        assert ref.max_rel_err(got.tolist(), w, s) <= BN_POOL_GRAD_ERR, what


@FUZZ
@given(st.integers(0, 5), st.integers(1, 6), st.integers(1, 6), st.integers(0, 3),
       st.booleans(), st.integers(0, 2**64 - 1))
def test_fuzz_gather_augment(B, H, W, shift, flip, seed):
    n = 3
    inp = [float(i % 251) for i in range(n * H * W)]
    idx = [(7 * i) % n for i in range(B)]
    out = Tensor((max(1, B * H * W),))
    lib.pynn_gather_augment(out.ptr, t(inp).ptr, Tensor.from_list(idx or [0], dtype="int32").ptr,
                            B, H, W, shift, int(flip), 0.5, -1.0, seed)
    want = cref.gather_augment(inp, idx, H, W, shift, flip, -1.0, seed, 0.5)
    assert out.tolist()[:len(want)] == want
