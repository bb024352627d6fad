"""The lecture's examples (scripts/examples/): XOR learned by a 2-2-1 sigmoid
network with batch gradient descent on the squared error, and a regression
of sin by a small tanh network. Each runs in well under a second or two."""
import importlib.util
import re

from conftest import SCRIPTS_DIR


def example(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS_DIR / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_xor_learns_all_four_points(capsys):
    assert example("xor").main([]) == 0
    out = capsys.readouterr().out
    assert "4 of 4 right" in out
    rows = re.findall(r"^ ([01])   ([01])   \|  ([01])  \| (\d\.\d{4})    ([01])$", out, re.MULTILINE)
    assert len(rows) == 4
    for x1, x2, want, got, cls in rows:
        assert int(want) == int(x1) ^ int(x2) == int(cls)
        assert (float(got) > 0.5) == (want == "1")
    # the error went down, and each hidden neuron's line is printed in the slides' form
    errors = [float(e) for e in re.findall(r"E = ([0-9.]+)", out)]
    assert errors[-1] < 0.1 * errors[0]
    lines = re.findall(r"neuron \d: -?\d+\.\d\d [+-] \d+\.\d\d x1 [+-] \d+\.\d\d x2 = 0$", out,
                       re.MULTILINE)
    assert len(lines) == 2, out


def test_xor_lines_separate_the_points():
    """The two hidden lines w0 + w1 x1 + w2 x2 = 0 cut the plane into parts
    so that no point of class 1 shares its part (its pair of sides) with a
    point of class 0: what the output neuron, itself a line over the hidden
    outputs, needs (no single line can: XOR is not linearly separable)."""
    net, _ = example("xor").train(out=lambda _: None)
    hidden = net.layers[0]
    w, b = hidden.weight.value.tolist(), hidden.bias.value.tolist()
    points = ((0, 0), (0, 1), (1, 0), (1, 1))
    sides = [[b[j] + w[2 * j] * x1 + w[2 * j + 1] * x2 > 0 for x1, x2 in points]
             for j in range(2)]
    parts = list(zip(*sides))
    assert not {parts[1], parts[2]} & {parts[0], parts[3]}


def test_regression_fits_sin_and_draws_it(tmp_path, capsys):
    svg = tmp_path / "runs" / "fit.svg"  # its folder made as the default runs/ is
    assert example("regression").main(["--out", str(svg)]) == 0
    out = capsys.readouterr().out
    error, worst = re.search(r"E = ([0-9.e+-]+), largest \|y - d\| = ([0-9.]+)", out).groups()
    assert float(error) < 1e-3 and float(worst) < 0.1, out
    text = svg.read_text()
    assert text.startswith("<svg") and text.count("<path") == 2
