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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pynn._kernels import ffi, lib
from pynn.tensor import Tensor

import cnn_reference as cref

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
    rdinp, rdw, rdb = cref.conv2d_backward(dout, inp, w, B, H, W, C, OC, k)
    scale = 1.0 + sum(abs(v) for v in dout) * (1.0 + max(map(abs, inp + w), default=0.0))
    assert all(abs(g - r) <= 1e-5 * scale for g, r in zip(dinp.tolist(), rdinp))
    assert all(abs(g - r) <= 1e-5 * scale for g, r in zip(dw.tolist(), rdw))
    assert all(abs(g - r) <= 1e-5 * scale for g, r in zip(db.tolist(), rdb))


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


@FUZZ
@given(image_case(grid))
def test_fuzz_fused_batchnorm_relu_pool(case):
    """The fused kernel against the reference layers one after another."""
    B, H, W, C, inp, dout = case
    N = B * H * W
    if N < 2:
        return  # batch statistics of fewer than two values: no variance
    gamma, beta = [0.5 + 0.1 * c for c in range(C)], [0.2 - 0.05 * c for c in range(C)]
    mean, invstd, rm, rv = Tensor((C,)), Tensor((C,)), Tensor((C,)), Tensor((C,)).fill_(1.0)
    out = Tensor((max(1, len(dout)),))
    way, zway = Tensor((max(1, len(dout)),)), Tensor((max(1, len(dout)),))
    lib.batchnorm_relu_maxpool_forward(out.ptr, way.ptr, zway.ptr, mean.ptr, invstd.ptr, rm.ptr,
                                       rv.ptr, t(inp).ptr, t(gamma).ptr, t(beta).ptr, B, H, W,
                                       C, 0.1, 1e-5, 1)
    y, *_ = cref.batchnorm_forward(inp, gamma, beta, N, C, [0.0] * C, [1.0] * C, 0.1, 1e-5,
                                   True, relu=True)
    want = cref.maxpool2x2_forward(y, B, H, W, C)
    assert all(abs(g - w) <= 1e-3 * (1 + abs(w)) for g, w in zip(out.tolist(), want))
    dinp, dg, db = Tensor((len(inp),)), Tensor((C,)), Tensor((C,))
    lib.batchnorm_relu_maxpool_backward(dinp.ptr, dg.ptr, db.ptr, t(dout).ptr, way.ptr,
                                        zway.ptr, t(inp).ptr, mean.ptr, invstd.ptr,
                                        t(gamma).ptr, B, H, W, C)
    for v in dinp.tolist() + dg.tolist() + db.tolist():
        assert math.isfinite(v)  # (near-ties make exact comparison moot)


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
