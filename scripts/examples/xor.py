#!/usr/bin/env python3
"""XOR, as the lecture poses it: the problem one neuron cannot solve.

A 2-2-1 network of logistic sigmoid units (steepness lambda = 1) learns XOR
from its four points by batch gradient descent on the mean squared error
E = 1/p sum_k 1/2 (y_k - d_k)^2, from small random weights:

    w(t+1) = w(t) - epsilon * dE/dw          (all four points in every step)

It prints the error as it goes, the truth table it learned, and each hidden
neuron's separating line xi = w0 + w1 x1 + w2 x2 = 0 (w0 is the bias): the
two lines cut the plane so that the output neuron can tell the classes apart.

    python scripts/examples/xor.py [--seed S] [--steps N] [--lr EPSILON]
"""
import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))  # this checkout's pynn

from pynn import SGD, Linear, MSELoss, Sequential, Sigmoid, Tensor

POINTS = [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)]
XOR = [0.0, 1.0, 1.0, 0.0]


def small_weights(layer, rng, scale=0.5):
    """Weights and bias uniform in [-scale, scale] (the lecture's start)."""
    for t in (layer.weight.value, layer.bias.value):
        for i in range(t.size):
            t.ptr[i] = rng.uniform(-scale, scale)


def train(seed=0, steps=4000, lr=2.0, report_every=500, out=print):
    """The trained network after ``steps`` steps of batch gradient descent."""
    rng = random.Random(seed)
    hidden, output = Linear(2, 2, rng), Linear(2, 1, rng)
    small_weights(hidden, rng)
    small_weights(output, rng)
    net = Sequential(hidden, Sigmoid(), output, Sigmoid())
    x = Tensor.from_list([v for p in POINTS for v in p], (4, 2))
    d = Tensor.from_list(XOR, (4, 1))
    loss_fn, opt = MSELoss(), SGD(net.parameters(), lr=lr, momentum=0.0)
    for t in range(steps + 1):
        error, _ = loss_fn.forward(net.forward(x), d)  # E over all four points
        if t % report_every == 0:
            out(f"step {t:5d}  E = {error:.6f}")
        if t == steps:
            break
        net.backward(loss_fn.backward())  # dE/dw by backpropagation
        opt.step()                        # w -= epsilon * dE/dw
    return net, x


def line(w0, w1, w2):
    """w0 + w1 x1 + w2 x2 = 0 as the slides write it: '-1.00 + 2.00 x1 + 2.00 x2 = 0'"""
    def term(w, name):
        return f" {'-' if w < 0 else '+'} {abs(w):.2f} {name}"

    return f"{w0:.2f}{term(w1, 'x1')}{term(w2, 'x2')} = 0"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--lr", type=float, default=2.0, help="learning rate epsilon")
    args = p.parse_args(argv)
    net, x = train(args.seed, args.steps, args.lr)
    y = net.forward(x).tolist()
    print("\n x1  x2  | XOR | output  class")
    right = 0
    for (x1, x2), want, got in zip(POINTS, XOR, y):
        cls = int(got > 0.5)
        right += cls == want
        print(f" {x1:.0f}   {x2:.0f}   |  {want:.0f}  | {got:.4f}    {cls}")
    print(f"{right} of 4 right\n\nhidden neurons' separating lines (xi = 0):")
    hidden = net.layers[0]
    w, b = hidden.weight.value.tolist(), hidden.bias.value.tolist()
    for j in range(2):
        print(f"  neuron {j + 1}: {line(b[j], w[2 * j], w[2 * j + 1])}")
    return 0 if right == 4 else 1


if __name__ == "__main__":
    sys.exit(main())
