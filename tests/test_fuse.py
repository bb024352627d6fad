"""fuse(): the fused kernels compute what the layers they replace compute.

For each pattern of pynn/fuse.py the same network is run as plain layers and
as its fused plan, from the same weights: the forward values are the same
bits (in training and in evaluation mode, with the same running statistics),
and one training step's gradients agree to 1e-5 (relative, over each whole
gradient: the fused backward adds a few sums in another order). Then the
whole run: predicting with a saved model under --no-fuse gives the same
files as with fusion, and the model table names what runs. The fused kernel
pairs alone, at odd sizes, give the same bits on any thread count."""
import io
import math
import random

import pytest

import pynn
from pynn import (
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    CrossEntropyLoss,
    Flatten,
    Linear,
    MaxPool2d,
    ReLU,
    Residual,
    Sequential,
    Tanh,
    build,
)
from pynn._kernels import lib
from pynn.config import configure
from pynn.fuse import (
    BatchNormReLU,
    BatchNormReLUMaxPool,
    Conv2dBatchNormReLUMaxPool,
    LinearReLU,
    fuse,
)
from pynn.io import PREDICTION_NAMES
from pynn.report import Reporter
from pynn.tensor import Tensor

from conftest import HAVE_DATA, THREAD_COUNTS, needs_threads
from reference import bits, rand_list

REL = 1e-5


def networks():
    """name -> (layers maker, input shape, batch, the fused layer expected)"""
    def conv_tail(H):
        def make(rng):
            return [Conv2d(2, 5, 3, rng, bias=False), BatchNorm2d(5), ReLU(), MaxPool2d(),
                    Flatten(), Linear(5 * (H // 2) ** 2, 3, rng)]
        return make, (H, H, 2), BatchNormReLUMaxPool

    def first_block(H, W, C, k=3):
        def make(rng):
            return [Conv2d(1, C, k, rng, bias=False, input_grad=False), BatchNorm2d(C), ReLU(),
                    MaxPool2d(), Flatten(), Linear(C * (H // 2) * (W // 2), 3, rng)]
        return make, (H, W, 1), Conv2dBatchNormReLUMaxPool

    return {
        # 7 images of 7x7 (49 pixels): batch norm's blocks of 256 rows start mid-image;
        # 33 channels: a partial block of the direct loops' channels on every target
        "first-block-odd": first_block(7, 7, 33),
        "first-block-even": first_block(6, 10, 5),
        "first-block-wide": first_block(9, 30, 16),
        # 7 x 16 x 16 x 48 values: above PAR_MIN, the kernels' parallel branches, run on
        # each of THREAD_COUNTS (thread_counts)
        "first-block-threads": first_block(16, 16, 48),
        "first-block-k5-tiny": first_block(2, 3, 5, k=5),
        "linear-relu": (lambda rng: [Linear(9, 33, rng), ReLU(), Linear(33, 4, rng)],
                        None, LinearReLU),
        "batchnorm1d-relu": (lambda rng: [Linear(9, 12, rng), BatchNorm1d(12), ReLU(),
                                          Linear(12, 4, rng)], None, BatchNormReLU),
        "batchnorm2d-relu": (lambda rng: [Conv2d(2, 4, 3, rng, bias=False), BatchNorm2d(4),
                                          ReLU(), Flatten(), Linear(4 * 25, 3, rng)],
                             (5, 5, 2), BatchNormReLU),
        "batchnorm-relu-pool-even": conv_tail(6),
        "batchnorm-relu-pool-odd": conv_tail(7),
    }


def make(name):
    layers, shape, _ = networks()[name]
    model = Sequential(*layers(random.Random(5)), input_shape=shape)
    for p in model.parameters():  # gammas, betas and biases away from 1 and 0
        if not p.decay:
            p.value.ptr[0:p.value.size] = [random.Random(p.value.size).uniform(-0.5, 1.5)
                                           for _ in range(p.value.size)]
    return model


def step(model, x, y):
    """One forward and backward in training mode; the outputs, running
    statistics, evaluation-mode outputs and gradients."""
    loss_fn = CrossEntropyLoss(0.1)
    out = model.forward(x).tolist()
    loss_fn.forward(model.forward(x), y)  # a second forward moves the running stats again
    model.backward(loss_fn.backward())
    grads = [p.grad.tolist() for p in model.parameters()]
    model.train(False)
    evaluation = model.forward(x).tolist()
    model.train(True)
    return out, [b.tolist() for b in model.buffers()], evaluation, grads


def batch(rng, B, width, classes):
    x = Tensor.from_list([rng.uniform(-1.5, 1.5) for _ in range(B * width)], (B, width))
    y = Tensor.from_list([rng.randrange(classes) for _ in range(B)], (B,), "int32")
    return x, y


def thread_counts(name):
    """The thread counts a case runs at: each of THREAD_COUNTS for a case
    named "-threads" (its sizes open the kernels' parallel regions, which
    must then give the same bits on any count), the current one otherwise."""
    return THREAD_COUNTS if name.endswith("-threads") else (lib.pynn_get_threads(),)


@pytest.mark.parametrize("name", sorted(networks()))
def test_a_fused_pattern_computes_what_its_layers_compute(name):
    counts, fused_steps = thread_counts(name), []
    for threads in counts:
        lib.pynn_set_threads(threads)
        plain, twin = make(name), make(name)
        plan = fuse(twin)
        expected = networks()[name][2]
        assert sum(isinstance(layer, expected) for layer in plan.layers) == 1
        assert len(plan.layers) < len(plain.layers) and plan.parameters() is twin.parameters()
        width = math.prod(plain.input_shape) if plain.input_shape else 9
        x, y = batch(random.Random(1), 7, width, 4 if not plain.input_shape else 3)
        fused_step = step(plan, x, y)
        (p_out, p_buf, p_eval, p_grad), (f_out, f_buf, f_eval, f_grad) = step(plain, x, y), \
            fused_step
        assert p_out == f_out and p_buf == f_buf and p_eval == f_eval  # the same bits
        for a, b in zip(p_grad, f_grad):
            diff = math.sqrt(sum((u - v) ** 2 for u, v in zip(a, b)))
            size = math.sqrt(sum(u * u for u in a))
            assert diff <= REL * size, (name, threads, diff, size)
        fused_steps.append(fused_step)
    for threads, other in zip(counts[1:], fused_steps[1:]):  # the same bits on any count
        assert other == fused_steps[0], (name, threads)


def test_fuse_leaves_other_runs_alone():
    """Only the patterns fuse: a Tanh after a Linear, a subclass of a layer
    (it may compute something else), a ReLU alone stay as they are."""
    class MyLinear(Linear):
        pass

    rng = random.Random(0)
    model = Sequential(Linear(4, 5, rng), Tanh(), MyLinear(5, 6, rng), ReLU(), ReLU(),
                       Linear(6, 2, rng))
    assert [type(layer) for layer in fuse(model).layers] == [Linear, Tanh, MyLinear, ReLU, ReLU,
                                                             Linear]


def test_a_residual_body_that_changes_its_dout_in_place():
    """A fused Linear + ReLU masks its dout in place, and a residual body's
    dout is the block's dsum: the block's input gradient must not read it
    back (the skip's part comes from the block's own dout and output)."""
    def model():
        rng = random.Random(2)
        return Sequential(Linear(6, 8, rng), Residual(Linear(8, 8, rng), ReLU()),
                          Linear(8, 3, rng))
    plain, plan = model(), fuse(model())
    assert type(plan.layers[1].body[0]) is LinearReLU
    x, y = batch(random.Random(4), 5, 6, 3)
    (*_, p_grad), (*_, f_grad) = step(plain, x, y), step(plan, x, y)
    for a, b in zip(p_grad, f_grad):
        diff = math.sqrt(sum((u - v) ** 2 for u, v in zip(a, b)))
        assert diff <= REL * math.sqrt(sum(u * u for u in a))


def test_a_residual_block_is_fused_inside():
    """fuse() fuses a residual block's body as it would the same layers
    outside one: the same forward bits, and gradients within REL."""
    def model():
        return build("c5,r5,p", 49, 3, "relu", random.Random(3), batchnorm="all")
    plain, plan = model(), fuse(model())
    block = next(layer for layer in plan.layers if isinstance(layer, Residual))
    assert [type(layer) for layer in block.body] == [Conv2d, BatchNormReLU, Conv2d, BatchNorm2d]
    assert block.plain is not block and block.parameters() == block.plain.parameters()
    x, y = batch(random.Random(1), 7, 49, 3)
    (p_out, p_buf, p_eval, p_grad), (f_out, f_buf, f_eval, f_grad) = step(plain, x, y), \
        step(plan, x, y)
    assert p_out == f_out and p_buf == f_buf and p_eval == f_eval
    for a, b in zip(p_grad, f_grad):
        diff = math.sqrt(sum((u - v) ** 2 for u, v in zip(a, b)))
        assert diff <= REL * math.sqrt(sum(u * u for u in a))


@pytest.mark.parametrize("B", [1, 7])
@pytest.mark.parametrize("name", [name for name in networks() if name.startswith("first-block")])
def test_the_first_block_is_the_same_bits_as_conv_then_its_fused_tail(name, B):
    """Conv2dBatchNormReLUMaxPool recomputes the conv's output where
    Conv2d + BatchNormReLUMaxPool store it: the same bits in everything,
    the gradients too (the same sums in the same order)."""
    counts, steps = thread_counts(name), []
    for threads in counts:
        lib.pynn_set_threads(threads)
        plain, twin = make(name), make(name)
        conv, norm, relu, pool, *rest = plain.layers
        stored = Sequential(conv, BatchNormReLUMaxPool(norm, relu, pool), *rest,
                            input_shape=plain.input_shape, parameters=plain.parameters())
        x, y = batch(random.Random(3), B, math.prod(plain.input_shape), 3)
        steps.append(step(fuse(twin), x, y))
        assert step(stored, x, y) == steps[-1], threads
    for threads, other in zip(counts[1:], steps[1:]):  # the same bits on any count
        assert other == steps[0], threads


# The kernel pairs alone, at odd sizes: 19 images of 15 x 13 pixels (an odd last
# row and column, in no window), 21 channels (norm.c sums 16 at a time, the
# direct conv's blocks are 2 vecs of channels: a partial one), 19 images in
# conv.c's 16 weight-gradient slots, 3705 rows in batch norm's blocks of 256
# (the last partial); 19 x 15 x 13 x 21 = 77805 values >= PAR_MIN (65536,
# csrc/internal.h): every parallel region of the pairs opens (checked under gdb:
# each of their GOMP_parallel calls asks for all threads, none for one)
ODD_BLOCK = (19, 15, 13, 21, 3)  # B, H, W, C, k


def fused_pair(first, B, H, W, C, k):
    """Everything one training forward and its backward of a fused pair
    write (the first block's when first, else the tail's), as bits"""
    rng = random.Random(7)
    inp = Tensor.from_list(rand_list(rng, B * H * W * (1 if first else C)))
    gamma, beta = Tensor.from_list(rand_list(rng, C)), Tensor.from_list(rand_list(rng, C))
    P = B * (H // 2) * (W // 2) * C
    dout = Tensor.from_list(rand_list(rng, P))
    out, way, zway = Tensor((P,)), Tensor((P,)), Tensor((P,))
    mean, invstd, rm, rv = Tensor((C,)), Tensor((C,)), Tensor((C,)), Tensor((C,)).fill_(1.0)
    dgamma, dbeta = Tensor((C,)), Tensor((C,))
    if first:
        weight = Tensor.from_list(rand_list(rng, C * k * k))
        lib.conv_batchnorm_relu_maxpool_forward(
            out.ptr, way.ptr, zway.ptr, mean.ptr, invstd.ptr, rm.ptr, rv.ptr, inp.ptr,
            weight.ptr, gamma.ptr, beta.ptr, B, H, W, C, k, 0.1, 1e-5, 1)
        grad = Tensor((C * k * k,))
        lib.conv_batchnorm_relu_maxpool_backward(
            grad.ptr, dgamma.ptr, dbeta.ptr, dout.ptr, way.ptr, zway.ptr, inp.ptr, weight.ptr,
            mean.ptr, invstd.ptr, gamma.ptr, B, H, W, C, k)
    else:
        lib.batchnorm_relu_maxpool_forward(
            out.ptr, way.ptr, zway.ptr, mean.ptr, invstd.ptr, rm.ptr, rv.ptr, inp.ptr,
            gamma.ptr, beta.ptr, B, H, W, C, 0.1, 1e-5, 1)
        grad = Tensor((B * H * W * C,))
        lib.batchnorm_relu_maxpool_backward(
            grad.ptr, dgamma.ptr, dbeta.ptr, dout.ptr, way.ptr, zway.ptr, inp.ptr, mean.ptr,
            invstd.ptr, gamma.ptr, B, H, W, C)
    return {name: bits(t.tolist()) for name, t in (
        ("out", out), ("way", way), ("zway", zway), ("mean", mean), ("invstd", invstd),
        ("running_mean", rm), ("running_var", rv), ("dinp or dweight", grad),
        ("dgamma", dgamma), ("dbeta", dbeta))}


@needs_threads
@pytest.mark.parametrize("first", [False, True], ids=["tail", "first-block"])
def test_the_fused_kernels_are_the_same_bits_on_any_thread_count(first):
    """route_coefficients' per-row sums, batch norm's block statistics
    (recomputed from the image for the first block: pynn_bn_statistics_of)
    and the first block's weight-gradient slots (pynn_direct_dweight) are
    merged in a fixed order: the same bits on every thread count."""
    B, H, W, C, k = ODD_BLOCK
    assert B * H * W * C >= 65536 and B % 16 and C % 16 and H % 2 and W % 2
    results = []
    for threads in THREAD_COUNTS:
        lib.pynn_set_threads(threads)
        results.append(fused_pair(first, B, H, W, C, k))
    for threads, other in zip(THREAD_COUNTS[1:], results[1:]):
        for name, value in results[0].items():
            assert other[name] == value, (name, threads)


def test_a_first_conv_fuses_only_without_bias_or_input_gradient():
    rng = random.Random(0)
    for conv in (Conv2d(1, 4, 3, rng, bias=True, input_grad=False),
                 Conv2d(1, 4, 3, rng, bias=False, input_grad=True),
                 Conv2d(2, 4, 3, rng, bias=False, input_grad=False)):
        model = Sequential(conv, BatchNorm2d(4), ReLU(), MaxPool2d(),
                           input_shape=(6, 6, conv.in_channels))
        assert [type(layer) for layer in fuse(model).layers] == [Conv2d, BatchNormReLUMaxPool]


@pytest.mark.parametrize("name", ["first-block-odd", "first-block-even",
                                  "batchnorm-relu-pool-odd", "batchnorm-relu-pool-even"])
def test_ties_in_the_windows_go_where_the_layers_send_them(name):
    """Images of a few distinct values (flat regions, as the background
    of Fashion-MNIST): many windows hold equal maxima, or only values the
    ReLU closes. The fused routes send each gradient where the plain layers
    do (MaxPool2d's first maximum, the ReLU's mask): the same bits forward,
    the same gradients up to the order of the sums."""
    plain, twin = make(name), make(name)
    plan = fuse(twin)
    width = math.prod(plain.input_shape)
    rng = random.Random(4)
    values = (0.0,) * 12 + (-1.0, 0.5, 1.0)  # mostly background: flat patches, equal outputs
    x = Tensor.from_list([rng.choice(values) for _ in range(7 * width)], (7, width))
    y = Tensor.from_list([rng.randrange(3) for _ in range(7)], (7,), "int32")
    (p_out, p_buf, p_eval, p_grad), (f_out, f_buf, f_eval, f_grad) = step(plain, x, y), \
        step(plan, x, y)
    assert p_out == f_out and p_buf == f_buf and p_eval == f_eval
    for a, b in zip(p_grad, f_grad):
        diff = math.sqrt(sum((u - v) ** 2 for u, v in zip(a, b)))
        assert diff <= REL * math.sqrt(sum(u * u for u in a)), (name, diff)


@pytest.mark.parametrize("name", ["first-block-odd", "batchnorm-relu-pool-odd"])
def test_a_fused_pool_backward_needs_the_routes_of_a_training_forward(name):
    """The backward reads the windows' routes that the last forward kept:
    after a forward in evaluation mode it refuses instead of using stale
    ones."""
    plan = fuse(make(name))
    loss_fn = CrossEntropyLoss(0.0)
    x, y = batch(random.Random(2), 5, math.prod(plan.input_shape), 3)
    loss_fn.forward(plan.forward(x), y)
    dout = loss_fn.backward()
    plan.train(False)
    plan.forward(x)
    plan.train(True)
    with pytest.raises(RuntimeError, match="needs a forward in training mode"):
        plan.backward(dout)


def test_the_default_network_fuses_into_eight_kernel_pairs():
    model = build(configure().arch, 784, 10, "relu", random.Random(0), 0.3, "all")
    kinds = [type(layer).__name__ for layer in fuse(model).layers]
    assert kinds == ["Conv2dBatchNormReLUMaxPool", "Conv2d", "BatchNormReLUMaxPool",
                     "Flatten", "Linear", "BatchNormReLU", "Dropout", "Linear"]


def test_training_the_plan_trains_the_model():
    model = make("batchnorm-relu-pool-even")
    plan = fuse(model)
    opt = pynn.Adam(plan.parameters(), lr=0.01)
    x, y = batch(random.Random(2), 4, 72, 3)
    before = model.parameters().values.tolist()
    loss_fn = CrossEntropyLoss()
    loss_fn.forward(plan.forward(x), y)
    plan.backward(loss_fn.backward())
    opt.step()
    assert model.parameters().values.tolist() != before
    assert model.predict(x).tolist() == plan.predict(x).tolist()


# ---- the whole run ------------------------------------------------------------------

def quiet(cfg):
    stream = io.StringIO()
    return pynn.run(cfg, reporter=Reporter(stream)), stream.getvalue()


@pytest.mark.skipif(not HAVE_DATA, reason="the course CSVs in data/ are missing")
def test_no_fuse_predicts_the_same_files_with_a_saved_model(subset_dir, tmp_path):
    """The forward arithmetic of the fused kernels is the layers' own: a saved
    model predicts byte-identical files either way. The model table shows
    the plain layers, and with fusion which kernel runs each."""
    common = {"data_dir": str(subset_dir), "runs_dir": "", "threads": 1}
    quiet(configure("cnn", arch="c4,p,c8,p,f16", epochs=1, out_dir=str(tmp_path / "train"),
                    save=str(tmp_path / "m.bin"), **common))
    files = {}
    for fused in (True, False):
        out = tmp_path / f"fuse-{fused}"
        _, text = quiet(configure("cnn", load=str(tmp_path / "m.bin"), out_dir=str(out),
                                  fuse=fused, **common))
        files[fused] = {k: (out / name).read_bytes() for k, name in PREDICTION_NAMES.items()}
        assert ("conv_batchnorm_relu_maxpool (fused)" in text) == fused, text
        assert (" batchnorm_relu_maxpool (fused)" in text) == fused, text
    assert files[True] == files[False]
    _, text = quiet(configure("cnn", arch="c4,p,f16", epochs=1, fuse=False,
                              out_dir=str(tmp_path / "plain"), **common))
    assert "each layer run as written" in text and "(fused" not in text
    assert "  ReLU()" in text and " relu" in text and "maxpool2x2" in text


def test_layers_of_one_model_cannot_silently_join_another_block():
    model = make("linear-relu")
    with pytest.raises(ValueError, match="another model's block"):
        Sequential(*model.layers)
    again = Sequential(*model.layers, parameters=model.parameters())  # as fuse() does
    assert again.parameters() is model.parameters()
