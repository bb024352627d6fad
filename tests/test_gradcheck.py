"""Finite-difference gradient checks of whole small networks.

Every parameter entry (and, where the network computes it, every input entry)
is perturbed by +-eps; the central difference of the mean cross-entropy loss
is compared with the analytic gradient from model.backward(loss.backward()).
Everything runs in float32, so eps is large (1e-2) and the tolerance loose
(2e-2 relative): still far tighter than what a wrong sign, a missing factor or
a transposed gradient would give (see test_gradcheck_detects_wrong_gradients).

ReLU kinks: a perturbation that moves a pre-activation across 0 makes the
finite difference meaningless; the check asserts that never happens (the sign
pattern of every activation input is the same at +eps and -eps as at 0).
"""
import math
import random

import pytest

from pynn import (
    CrossEntropyLoss,
    Dropout,
    LeakyReLU,
    Linear,
    MSELoss,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
    mlp,
)
from pynn._kernels import lib
from pynn.fuse import LinearReLU, fuse
from pynn.tensor import Tensor

import cnn_reference as cnn_ref
import reference as ref

EPS = 1e-2
RTOL = 2e-2
ATOL = 2e-4

ACTS = {
    "relu": ReLU,
    "leaky_relu": LeakyReLU,           # slope 0.01
    "leaky_relu_0.3": lambda: LeakyReLU(0.3),
    "tanh": Tanh,
    "sigmoid": Sigmoid,                # the lecture's, lambda 1
    "sigmoid_2.5": lambda: Sigmoid(2.5),
}


def build_one(act_name, seed, sizes, act_first):
    rng = random.Random(seed)
    act = ACTS[act_name]
    layers = [act()] if act_first else []
    for i, (c, oc) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = Linear(c, oc, rng)
        # non-zero biases, so that their gradients and the bias path are tested too
        lin.bias.value.ptr[0:oc] = [rng.uniform(-0.3, 0.3) for _ in range(oc)]
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(act())
    return Sequential(*layers), rng


def make_batch(rng, B, D, V, away_from_zero=False):
    if away_from_zero:  # inputs that stay clear of a ReLU kink when act_first
        x = [rng.choice((-1, 1)) * rng.uniform(0.3, 1.5) for _ in range(B * D)]
    else:
        x = [rng.uniform(-1.5, 1.5) for _ in range(B * D)]
    y = [rng.randrange(V) for _ in range(B)]
    return Tensor.from_list(x, (B, D)), Tensor.from_list(y, (B,), "int32")


def activation_inputs(model, x):
    """Per kinked activation, the values entering it in a forward pass of x
    (before each ReLU/LeakyReLU: the layers run one by one)."""
    inputs, h = [], x
    for layer in model.layers:
        if isinstance(layer, (ReLU, LeakyReLU)):
            inputs.append(h.tolist())
        h = layer.forward(h)
    return inputs, h


def kink_inputs(model, x):
    """All values entering a ReLU/LeakyReLU in a forward pass of x."""
    return [v for values in activation_inputs(model, x)[0] for v in values]


def build(act_name, seed=0, sizes=(5, 7, 4, 3), B=6, act_first=False, margin=0.04):
    """(model, x, y): Sequential(Linear, act, Linear, act, Linear) (an extra act
    in front when act_first, so that the first Linear computes dL/dinput too)
    and a batch of B random inputs.

    With a kinked activation, seeds seed, seed+1, ... are tried (deterministic)
    until every activation input is at least ``margin`` away from 0."""
    for s in range(seed, seed + 200):
        model, rng = build_one(act_name, s, sizes, act_first)
        x, y = make_batch(rng, B, sizes[0], sizes[-1], away_from_zero=act_first)
        if all(abs(v) >= margin for v in kink_inputs(model, x)):
            return model, x, y
    raise AssertionError("no seed keeps the activations clear of their kinks")


def loss_and_pattern(model, loss_fn, x, y):
    """(mean loss, sign pattern of every activation input)."""
    inputs, h = activation_inputs(model, x)
    pattern = [tuple(v > 0 for v in values) for values in inputs]
    loss, _ = loss_fn.forward(h, y)
    return loss, pattern


def analytic(model, loss_fn, x, y):
    loss_fn.forward(model.forward(x), y)
    dx = model.backward(loss_fn.backward())
    grads = {id(p): p.grad.tolist() for p in model.parameters()}
    return grads, (dx.tolist() if dx is not None else None)


def numeric(model, loss_fn, x, y, tensor):
    """Central differences of the loss w.r.t. every entry of ``tensor``."""
    _, base = loss_and_pattern(model, loss_fn, x, y)
    out = []
    for i in range(tensor.size):
        v0 = tensor.ptr[i]
        tensor.ptr[i] = v0 + EPS
        up = tensor.ptr[i]  # the float32 value actually stored
        lp, pat_p = loss_and_pattern(model, loss_fn, x, y)
        tensor.ptr[i] = v0 - EPS
        down = tensor.ptr[i]
        lm, pat_m = loss_and_pattern(model, loss_fn, x, y)
        tensor.ptr[i] = v0
        assert pat_p == base and pat_m == base, f"entry {i} crosses an activation kink"
        out.append((lp - lm) / (up - down))
    return out


def mismatches(num, ana, what):
    bad = []
    for i, (n, a) in enumerate(zip(num, ana)):
        if not abs(n - a) <= ATOL + RTOL * max(abs(n), abs(a)):
            bad.append(f"{what}[{i}]: numeric {n:.6g} analytic {a:.6g}")
    return bad


def gradcheck(model, x, y, check_input=False, loss_fn=None):
    """All mismatches between numeric and analytic gradients (empty: pass)."""
    loss_fn = loss_fn or CrossEntropyLoss()
    grads, dx = analytic(model, loss_fn, x, y)
    bad, checked = [], 0
    for k, p in enumerate(model.parameters()):
        bad += mismatches(numeric(model, loss_fn, x, y, p.value), grads[id(p)],
                          f"param{k}.{p.name}")
        checked += p.value.size
    if check_input:
        assert dx is not None, "model.backward returned no input gradient"
        bad += mismatches(numeric(model, loss_fn, x, y, x), dx, "input")
        checked += x.size
    return bad, checked, grads


@pytest.mark.parametrize("act", list(ACTS))
def test_whole_network_parameter_gradients(act):
    model, x, y = build(act, seed=0)
    bad, checked, grads = gradcheck(model, x, y)
    assert checked == 5 * 7 + 7 + 7 * 4 + 4 + 4 * 3 + 3
    assert not bad, "\n".join(bad)
    # the check is not vacuous: most gradient entries are clearly non-zero
    flat = [g for gs in grads.values() for g in gs]
    assert sum(abs(g) > 1e-3 for g in flat) > len(flat) // 2


@pytest.mark.parametrize("act", list(ACTS))
def test_whole_network_input_gradient(act):
    # an activation in front keeps the first Linear's input_grad=True, so
    # model.backward returns dL/dx
    model, x, y = build(act, seed=1, act_first=True)
    assert model.layers[1].input_grad
    bad, checked, _ = gradcheck(model, x, y, check_input=True)
    assert checked == 89 + 30
    assert not bad, "\n".join(bad)


def test_explicit_input_grad_on_inner_linear():
    # Linear(..., input_grad=True) not in first position: the Tanh's input gradient
    rng = random.Random(2)
    model = Sequential(Tanh(), Linear(4, 6, rng, input_grad=True), Tanh(), Linear(6, 3, rng))
    x, y = make_batch(rng, 5, 4, 3)
    bad, _, _ = gradcheck(model, x, y, check_input=True)
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("B", [1, 2, 33])
def test_batch_sizes(B):
    # B=1 and B > one 32-wide GEMM tile: the 1/B of the mean loss and the dbias sum
    model, x, y = build("tanh", seed=3, B=B)
    bad, _, _ = gradcheck(model, x, y)
    assert not bad, "\n".join(bad)


def test_first_linear_skips_input_gradient():
    """build() makes the first layer skip dL/d(input), which nobody needs."""
    _, x, y = build("tanh", seed=0)
    model = mlp([5, 7, 4, 3], "tanh", random.Random(0))
    assert model.layers[0].input_grad is False
    loss_fn = CrossEntropyLoss()
    loss_fn.forward(model.forward(x), y)
    assert model.backward(loss_fn.backward()) is None


def test_backward_writes_not_accumulates():
    model, x, y = build("relu", seed=0)
    loss_fn = CrossEntropyLoss()
    first, _ = analytic(model, loss_fn, x, y)
    second, _ = analytic(model, loss_fn, x, y)
    assert first == second


def test_gradient_of_loss_wrt_logits():
    # the loss alone: d(mean CE)/dlogits = (softmax - onehot) / B, by differences
    rng = random.Random(4)
    B, V = 3, 5
    logits = Tensor.from_list([rng.uniform(-2, 2) for _ in range(B * V)], (B, V))
    y = Tensor.from_list([0, 4, 2], (B,), "int32")
    loss_fn = CrossEntropyLoss()
    loss_fn.forward(logits, y)
    ana = loss_fn.backward().tolist()
    num = []
    for i in range(B * V):
        v0 = logits.ptr[i]
        logits.ptr[i] = v0 + EPS
        lp, up = loss_fn.forward(logits, y)[0], logits.ptr[i]
        logits.ptr[i] = v0 - EPS
        lm, down = loss_fn.forward(logits, y)[0], logits.ptr[i]
        logits.ptr[i] = v0
        num.append((lp - lm) / (up - down))
    assert not mismatches(num, ana, "dlogits")
    probs, _, _, _ = ref.softmax_ce(logits.tolist(), [0, 4, 2], B, V)
    ref.assert_close(ana, ref.softmax_ce_backward(probs, [0, 4, 2], B, V), rel=1e-5,
                     abs_=1e-7)


def test_gradcheck_detects_wrong_gradients():
    """The comparison can fail: corrupt the analytic gradient in the ways a
    buggy backward would (sign, factor 2, a transposed/shuffled weight gradient)
    and check that every corruption is caught."""
    model, x, y = build("tanh", seed=0)
    loss_fn = CrossEntropyLoss()
    grads, _ = analytic(model, loss_fn, x, y)
    w = model.parameters()[2]  # the (4, 7) weight of the second Linear
    num = numeric(model, loss_fn, x, y, w.value)
    ana = grads[id(w)]
    assert not mismatches(num, ana, "w")
    wrong = {
        "sign": [-g for g in ana],
        "double": [2 * g for g in ana],
        "missing 1/B": [6 * g for g in ana],
        "transposed": ref.transpose(ana, 4, 7),  # (7,4) read as (4,7)
        "one entry off": [g + (0.05 if i == 3 else 0.0) for i, g in enumerate(ana)],
    }
    for name, g in wrong.items():
        assert mismatches(num, g, "w"), f"a {name} gradient went unnoticed"


class _TanhBackwardFromInput(Tanh):
    """A plausible bug: tanh_backward fed the input instead of the saved output."""

    def _df(self, dinp, dout):
        from pynn._kernels import lib
        lib.tanh_backward(dinp.ptr, dout.ptr, self._inp.ptr, dout.size)


class _LeakyBackwardWrongSlope(LeakyReLU):
    """A plausible bug: the backward pass forgets the negative slope."""

    def _df(self, dinp, dout):
        from pynn._kernels import lib
        lib.leaky_relu_backward(dinp.ptr, dout.ptr, self._inp.ptr, 0.0, dout.size)


@pytest.mark.parametrize("mutant", [_TanhBackwardFromInput, _LeakyBackwardWrongSlope])
def test_gradcheck_detects_buggy_layer(mutant):
    ACTS["mutant"] = lambda: mutant(0.3) if mutant is _LeakyBackwardWrongSlope else mutant()
    try:
        model, x, y = build("mutant", seed=0)
    finally:
        del ACTS["mutant"]
    bad, _, _ = gradcheck(model, x, y)
    assert len(bad) > 5


class _FixedSeed:
    """A stand-in rng for Dropout: the same mask seed for every forward, so
    the loss is a fixed function of the parameters, as finite differences need."""

    def getrandbits(self, k):
        return 0x1234_5678_9ABC_DEF0


@pytest.mark.parametrize("fused", [False, True])
def test_dropout_network_gradients(fused):
    # Linear, ReLU (fused: LinearReLU, dense_relu_forward/_backward), Dropout,
    # Linear, Tanh, Dropout, Linear: the mask is fixed by the seed, so the
    # network is an ordinary function to check
    rng = random.Random(7)
    model = Sequential(Linear(5, 9, rng), ReLU(), Dropout(0.3, _FixedSeed()), Linear(9, 6, rng),
                       Tanh(), Dropout(0.5, _FixedSeed()), Linear(6, 3, rng))
    x, y = make_batch(rng, 6, 5, 3)
    inputs, _ = activation_inputs(model, x)
    assert all(abs(v) >= 0.02 for values in inputs for v in values), "pick another seed"
    net = fuse(model) if fused else model
    assert any(isinstance(layer, LinearReLU) for layer in net.layers) == fused
    bad, checked, _ = gradcheck(net, x, y)
    assert checked == 5 * 9 + 9 + 9 * 6 + 6 + 6 * 3 + 3
    assert not bad, "\n".join(bad)
    # the masks really drop (and scale) in training mode...
    ones = Tensor.from_list([1.0] * 54, (6, 9))
    dropped = model.layers[2].forward(ones).tolist()
    assert 5 <= dropped.count(0.0) <= 30 and set(dropped) == {0.0, ref.f32(1 / 0.7)}
    # ...and evaluation mode lets everything through
    model.train(False)
    assert model.layers[2].forward(x) is x


# ---- the lecture's sigmoid and mean squared error ------------------------------

@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_mse_gradients_against_class_labels(smoothing):
    model, x, y = build("sigmoid", seed=4)
    bad, checked, _ = gradcheck(model, x, y, loss_fn=MSELoss(smoothing))
    assert checked == 89 and not bad, "\n".join(bad)


def test_mse_gradients_against_real_targets():
    """Regression: float targets (B, V), identity outputs; the input gradient too."""
    model, x, _ = build("tanh", seed=5, act_first=True)
    rng = random.Random(5)
    d = Tensor.from_list([rng.uniform(-1, 1) for _ in range(6 * 3)], (6, 3))
    bad, _, _ = gradcheck(model, x, d, check_input=True, loss_fn=MSELoss())
    assert not bad, "\n".join(bad)


def test_mse_value_is_the_lectures():
    """E = 1/p sum_k 1/2 sum_j (y_kj - d_kj)^2, against one-hot targets."""
    y = Tensor.from_list([0.2, 0.9, -0.1, 0.5, 0.5, 0.0], (2, 3))
    labels = Tensor.from_list([1, 2], (2,), "int32")
    loss, correct = MSELoss().forward(y, labels)
    want = 0.5 * ((0.2 ** 2 + 0.1 ** 2 + 0.1 ** 2) + (0.5 ** 2 + 0.5 ** 2 + 1.0)) / 2
    assert abs(loss - want) < 1e-6 and correct == 1  # row 2's argmax is class 0
    with pytest.raises(ValueError, match="targets"):
        MSELoss().forward(y, Tensor.from_list([1, 3], (2,), "int32"))


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_mse_value_with_smoothed_targets(smoothing):
    """With class labels, the targets are d = (1 - eps) onehot + eps / V
    (cnn_reference.smoothed_target), and E is the lecture's against them."""
    B, V, rng = 5, 7, random.Random(11)
    ys = [rng.uniform(-1, 2) for _ in range(B * V)]
    labels = [rng.randrange(V) for _ in range(B)]
    loss_fn = MSELoss(smoothing)
    loss, _ = loss_fn.forward(Tensor.from_list(ys, (B, V)), Tensor.from_list(labels, (B,), "int32"))
    d = [q for t in labels for q in cnn_ref.smoothed_target(t, V, smoothing)]
    assert loss_fn._d.tolist() == pytest.approx(d, rel=1e-6, abs=1e-7)  # float32 targets
    want = math.fsum(0.5 * (y - q) ** 2 for y, q in zip(ys, d)) / B
    assert loss == pytest.approx(want, rel=1e-5)  # mse_forward sums in double: float32 inputs
    dy = loss_fn.backward().tolist()
    assert dy == pytest.approx([(y - q) / B for y, q in zip(ys, d)], rel=1e-5, abs=1e-7)


def test_sigmoid_is_safe_for_any_input():
    xs = [-1e4, -100.0, -1.0, 0.0, 1.0, 100.0, 1e4, float("inf"), float("-inf")]
    for lam in (1.0, 2.5):
        x = Tensor.from_list(xs, (len(xs),))
        out = Tensor(x.shape)
        lib.sigmoid_forward(out.ptr, x.ptr, lam, x.size)
        got = out.tolist()
        want = [1.0 / (1.0 + math.exp(-lam * v)) if -lam * v < 700 else 0.0 for v in xs]
        assert all(abs(g - w) < 1e-6 for g, w in zip(got, want)), got
        d = Tensor(x.shape)
        lib.sigmoid_backward(d.ptr, Tensor.from_list([1.0] * len(xs), x.shape).ptr, out.ptr,
                             lam, x.size)
        assert all(math.isfinite(v) and v >= 0 for v in d.tolist())
        assert abs(d.tolist()[3] - lam * 0.25) < 1e-7  # lambda sigma(0) (1 - sigma(0))
