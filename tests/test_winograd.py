"""Winograd F(4x4, 3x3) convolutions, with F(2, 3) on edges of 4q + 1 and
4q + 2 pixels (csrc/winograd.c), against the double-precision reference
(tests/cnn_reference.py) and against the im2col road, forward, input
gradient and weight gradient; the road a layer takes; thread-count
invariance.

The error of a result is measured against the sum of the magnitudes of its
terms (ref.max_rel_err with the reference run on |values|). Winograd's
transforms add terms of different sizes (up to 8 times a value, and G's 1/6,
1/12, 1/24), so it loses about three bits against a direct float32 sum:
measured here, at most 1.8e-6 on the shapes below where im2col's is 1.8e-7,
and up to 5.6e-6 against im2col on the larger layers (an input gradient of
16 channels). The bounds are about four times that."""
import random

import pytest
from test_cnn_kernels import conv_data, conv_want, run_conv_backward, run_conv_forward, tol

from pynn._kernels import lib

import cnn_reference as cref
import reference as ref
from conftest import THREAD_COUNTS, needs_threads
from reference import bits

ERR = 1e-5  # against the double-precision reference
ERR_LARGE = 2e-5  # against the im2col road, on the larger layers

# (B, H, W, C, OC, k): image sides that are no multiple of the 4x4 tile (4q + 1
# and 4q + 2 end in 2-pixel tiles, 4q + 3 in a 4-pixel one), sides of only a
# 2-pixel tile, one pixel, one row, more channels than a vector, fewer
SHAPES = [(2, 5, 7, 3, 4, 3), (1, 1, 1, 3, 2, 3), (2, 9, 6, 8, 5, 3), (1, 4, 4, 17, 9, 3),
          (1, 1, 6, 4, 4, 3), (3, 8, 8, 8, 16, 3), (1, 14, 14, 16, 8, 3), (2, 2, 3, 9, 8, 3),
          (1, 13, 10, 8, 16, 3), (2, 3, 2, 5, 17, 3)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_winograd_forward_and_gradients_against_the_reference(shape, conv_path):
    conv_path(lib.PYNN_CONV_WINOGRAD)
    B, H, W = shape[:3]
    inp, w, bias, dout = conv_data(shape)
    want, mag, (want_dinp, want_dw, want_db), (mag_dinp, mag_dw, mag_db) = conv_want(shape, True)
    got = run_conv_forward(shape, inp, w, bias)
    assert ref.max_rel_err(got, want, mag) <= ERR
    dinp, dw, db = run_conv_backward(shape, dout, inp, w)
    assert ref.max_rel_err(dinp, want_dinp, mag_dinp) <= ERR
    assert ref.max_rel_err(dw, want_dw, mag_dw) <= ERR
    assert ref.max_rel_err(db, want_db, mag_db) <= tol(B * H * W)


@pytest.mark.parametrize("shape", [(2, 9, 6, 8, 5, 3), (1, 14, 14, 16, 8, 3), (2, 10, 8, 4, 32, 3)],
                         ids=str)
def test_winograd_forward_without_a_bias(shape, conv_path):
    """Without a bias (the presets' convolutions, batch norm after them) the
    output transform writes the tiles wholly inside the image where they lie
    in the output when OC is 16, 32 or 64 (32 here), through its tile buffer
    otherwise: both against the reference."""
    conv_path(lib.PYNN_CONV_WINOGRAD)
    inp, w, _, _ = conv_data(shape)
    want, mag, _, _ = conv_want(shape, False)
    assert ref.max_rel_err(run_conv_forward(shape, inp, w, None), want, mag) <= ERR


def with_a_zero_channel(values, rows, n):
    """(rows, n) values as (rows, n + 1), the new last column zeros"""
    return [x for r in range(rows) for x in values[r * n:(r + 1) * n] + [0.0]]


def without_the_last_channel(values, rows, n):
    """(rows, n + 1) values as (rows, n): the inverse of with_a_zero_channel"""
    return [x for r in range(rows) for x in values[r * (n + 1):r * (n + 1) + n]]


@pytest.mark.parametrize("H,W", [(13, 14), (14, 14)])
@pytest.mark.parametrize("C,OC", [(16, 32), (32, 32), (32, 64), (64, 64), (64, 16)])
def test_winograd_in_place_road_gives_the_copying_roads_bits(C, OC, H, W, conv_path):
    """With 16, 32 or 64 channels the tile transforms read and write the
    values where they lie (winograd.c: bt_tile, at_tile, a_tile with cs > 0);
    with any other count they copy them through lanes vectors (cs = 0), the
    plain version. One more channel each way, all zeros (input, weights,
    output gradient), takes the copying road; its extra terms are exact
    zeros, so the other channels' results must be the same bits. Both sizes
    give all four kinds of tiles: 13 rows leave the bottom ones partly past
    the image (copied), 14 keep them whole (written in place). Two images
    make one weight-gradient chunk of each kind either way (the chunk size,
    which fixes the order of that sum, depends on the channels)."""
    conv_path(lib.PYNN_CONV_WINOGRAD)
    B = 2
    n, shape, wider = B * H * W, (B, H, W, C, OC, 3), (B, H, W, C + 1, OC + 1, 3)
    inp, w, _, dout = big(shape)
    inp1, dout1 = with_a_zero_channel(inp, n, C), with_a_zero_channel(dout, n, OC)
    w1 = with_a_zero_channel(w, OC * 9, C) + [0.0] * 9 * (C + 1)
    out, out1 = run_conv_forward(shape, inp, w, None), run_conv_forward(wider, inp1, w1, None)
    assert bits(out) == bits(without_the_last_channel(out1, n, OC))
    dinp, dw, _ = run_conv_backward(shape, dout, inp, w)
    dinp1, dw1, _ = run_conv_backward(wider, dout1, inp1, w1)
    assert bits(dinp) == bits(without_the_last_channel(dinp1, n, C))
    assert bits(dw) == bits(without_the_last_channel(dw1[:OC * 9 * (C + 1)], OC * 9, C))


def big(shape, seed=1):
    B, H, W, C, OC, k = shape
    rng = random.Random(seed)
    return [ref.rand_list(rng, n) for n in (B * H * W * C, OC * k * k * C, OC, B * H * W * OC)]


def both_roads(shape, conv_path):
    """The forward and backward of the im2col road and of Winograd's, and
    the sizes of their terms: the im2col road's results on |values| (not
    Winograd's, the road under test: a scale it made could hide its error)."""
    inp, w, bias, dout = big(shape)
    results = []
    for road in (lib.PYNN_CONV_IM2COL, lib.PYNN_CONV_WINOGRAD):
        conv_path(road)
        results.append((run_conv_forward(shape, inp, w, bias),
                        *run_conv_backward(shape, dout, inp, w)))
    conv_path(lib.PYNN_CONV_IM2COL)
    mags = (run_conv_forward(shape, cref.absl(inp), cref.absl(w), cref.absl(bias)),
            *run_conv_backward(shape, cref.absl(dout), cref.absl(inp), cref.absl(w)))
    return results, mags


# the layers of the presets (batch 4 here), and shapes of several chunks of
# tiles (the chunk is about 128 K floats of transformed tiles: 40 tiles at
# C + OC = 80; the weight gradient's twice that), the last one partial
@pytest.mark.parametrize("shape", [(4, 14, 14, 32, 64, 3), (4, 28, 28, 32, 32, 3),
                                   (4, 14, 14, 64, 64, 3), (3, 16, 16, 64, 16, 3),
                                   (9, 15, 13, 40, 24, 3)], ids=str)
def test_winograd_against_the_im2col_road_on_larger_layers(shape, conv_path):
    (im2col, winograd), mags = both_roads(shape, conv_path)
    for what, a, b, m in zip(("out", "dinp", "dweight", "dbias"), im2col, winograd, mags):
        assert ref.max_rel_err(b, a, m) <= ERR_LARGE, what


def test_the_road_is_chosen_by_the_shape(conv_path):
    """By default a 3x3 layer with 8 or more channels each way takes Winograd's
    road (the same bits as forcing it), others im2col; a one-channel layer
    takes the direct loops whatever is forced."""
    for shape, winograd in (((2, 6, 6, 8, 8, 3), True), ((2, 6, 6, 4, 8, 3), False),
                            ((2, 6, 6, 8, 8, 5), False)):
        inp, w, bias, dout = big(shape)
        conv_path(lib.PYNN_CONV_BY_SHAPE)
        default = run_conv_forward(shape, inp, w, bias), run_conv_backward(shape, dout, inp, w)
        conv_path(lib.PYNN_CONV_WINOGRAD if winograd else lib.PYNN_CONV_IM2COL)
        forced = run_conv_forward(shape, inp, w, bias), run_conv_backward(shape, dout, inp, w)
        assert bits(default[0]) == bits(forced[0]) and \
            [bits(v) for v in default[1]] == [bits(v) for v in forced[1]]
    shape = (2, 6, 6, 1, 8, 3)
    inp, w, bias, _ = big(shape)
    outs = []
    for road in (lib.PYNN_CONV_IM2COL, lib.PYNN_CONV_WINOGRAD):
        conv_path(road)
        outs.append(bits(run_conv_forward(shape, inp, w, bias)))
    assert outs[0] == outs[1]


# several forward chunks of two kinds of tiles; then tiles of all four kinds
# (4x4, 4x2, 2x4 and 2x2 outputs), the 4x4 ones in 5 weight-gradient chunks
# (112 tiles each at C + OC = 64), so 3 slots of 1, 2 and 2 chunks
@needs_threads
@pytest.mark.parametrize("shape", [(9, 15, 13, 40, 24, 3), (50, 14, 13, 40, 24, 3)], ids=str)
def test_winograd_is_the_same_on_any_thread_count(conv_path, shape):
    conv_path(lib.PYNN_CONV_WINOGRAD)
    inp, w, bias, dout = big(shape)
    results = []
    for threads in THREAD_COUNTS:
        lib.pynn_set_threads(threads)
        results.append([bits(run_conv_forward(shape, inp, w, bias))] +
                       [bits(v) for v in run_conv_backward(shape, dout, inp, w)])
    assert all(r == results[0] for r in results[1:])
