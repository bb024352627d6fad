"""pynn.serialize: the saved-model file format, its errors, and --save/--load."""
import io
import json
import random
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from pynn import Normalizer, PynnError, Tensor, mlp, run
from pynn.config import configure
from pynn.io import CSV_NAMES, PREDICTION_NAMES
from pynn.report import Reporter
from pynn.serialize import MAGIC, VERSION, load, save

from conftest import SCRIPTS_DIR


def small_model(activation="relu", sizes=(12, 8, 6, 5)):
    return mlp(list(sizes), activation, random.Random(3))


def inputs(n=40, d=12):
    rng = random.Random(9)
    return Tensor.from_list([rng.gauss(0, 2) for _ in range(n * d)], (n, d))


def weights(model):
    return [p.value.tolist() for p in model.parameters()]


def one_line_error(excinfo, *words):
    message = str(excinfo.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh"])
def test_round_trip_identical_predictions(tmp_path, activation):
    model, norm = small_model(activation), Normalizer(3.25, 1.5)
    model.layers[0].bias.value.fill_(0.125)  # a non-zero bias must survive too
    path = tmp_path / "model.bin"
    save(path, model, norm)
    loaded, norm2 = load(path)
    assert (norm2.mean, norm2.std) == (norm.mean, norm.std)
    assert repr(loaded) == repr(model)
    assert weights(loaded) == weights(model)
    x1, x2 = norm(inputs()), norm2(inputs())
    assert loaded.forward(x2).tolist() == model.forward(x1).tolist()
    assert loaded.predict(x2).tolist() == model.predict(x1).tolist()


def test_single_layer_model(tmp_path):
    model = small_model(sizes=(12, 3))
    save(tmp_path / "m", model, Normalizer())
    loaded, _ = load(tmp_path / "m")
    assert weights(loaded) == weights(model)


def test_file_layout_is_as_documented(tmp_path):
    model, path = small_model(), tmp_path / "model.bin"
    save(path, model, Normalizer(1.0, 2.0))
    data = path.read_bytes()
    magic, version, length = struct.unpack_from("<8sII", data)
    assert magic == MAGIC == b"PYNNMLP\0" and version == VERSION == 2
    header = json.loads(data[16:16 + length])
    assert header["arch"] == "f8,f6" and header["activation"] == "relu"
    assert (header["width"], header["classes"], header["batchnorm"]) == (12, 5, "off")
    assert header["tensors"] == [[8, 12], [8], [6, 8], [6], [5, 6], [5]]
    assert (header["mean"], header["std"]) == (1.0, 2.0)
    payload = data[16 + length:]
    expected = [v for p in model.parameters() for v in p.value.tolist()]
    assert len(payload) == 4 * len(expected) == 4 * (12 * 8 + 8 + 8 * 6 + 6 + 6 * 5 + 5)
    assert list(struct.unpack(f"<{len(expected)}f", payload)) == expected  # float32 LE


def version_1_file(model, norm):
    """A model file as pynn wrote it before version 2 (MLPs only)."""
    payload = struct.pack(f"<{sum(p.value.size for p in model.parameters())}f",
                          *[v for p in model.parameters() for v in p.value.tolist()])
    linears = [layer for layer in model.layers if hasattr(layer, "in_features")]
    sizes = [linears[0].in_features] + [layer.out_features for layer in linears]
    header = json.dumps({"sizes": sizes, "activation": "tanh", "mean": norm.mean,
                         "std": norm.std, "crc32": zlib.crc32(payload)}).encode()
    return struct.pack("<8sII", MAGIC, 1, len(header)) + header + payload


def test_version_1_file_still_loads(tmp_path):
    model, norm = small_model("tanh"), Normalizer(0.25, 3.0)
    path = tmp_path / "old.bin"
    path.write_bytes(version_1_file(model, norm))
    loaded, norm2 = load(path)
    assert (norm2.mean, norm2.std) == (0.25, 3.0)
    assert repr(loaded) == repr(model) and weights(loaded) == weights(model)
    assert loaded.predict(norm(inputs())).tolist() == model.predict(norm2(inputs())).tolist()


def cnn_model(arch="c3,p,c4k5,f6"):
    from pynn import build
    model = build(arch, 36, 3, "relu", random.Random(4), batchnorm="all")
    rng = random.Random(5)
    x = Tensor.from_list([rng.gauss(0, 1) for _ in range(8 * 36)], (8, 36))
    for _ in range(3):  # training-mode passes move the running statistics off 0 and 1
        model.forward(x)
    return model, x


@pytest.mark.parametrize("arch", ["c3,p,c4k5,f6", "c3,r3,p,f6"])  # and a residual block's
def test_cnn_round_trip_keeps_batch_norm_statistics(tmp_path, arch):
    model, x = cnn_model(arch)
    assert any(b.tolist() != [0.0] * b.size and b.tolist() != [1.0] * b.size
               for b in model.buffers())
    save(tmp_path / "cnn.bin", model, Normalizer(0.5, 2.0))
    loaded, _ = load(tmp_path / "cnn.bin")
    assert repr(loaded) == repr(model)
    assert weights(loaded) == weights(model)
    assert [b.tolist() for b in loaded.buffers()] == [b.tolist() for b in model.buffers()]
    model.train(False)
    loaded.train(False)
    assert loaded.forward(x).tolist() == model.forward(x).tolist()  # evaluation mode
    assert loaded.predict(x).tolist() == model.predict(x).tolist()


def test_cnn_file_with_shapes_that_do_not_match_is_an_error(tmp_path):
    model, _ = cnn_model()
    path = tmp_path / "cnn.bin"
    save(path, model, Normalizer())
    data = path.read_bytes()
    path.write_bytes(data.replace(b'"c3,p,c4k5,f6"', b'"c3,p,c4k3,f6"'))
    with pytest.raises(PynnError) as e:
        load(path)
    one_line_error(e, str(path), "corrupt", "shapes")


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "model.bin"
    save(path, small_model(), Normalizer(0.5, 2.0))
    return path, path.read_bytes()


def test_other_version_is_a_one_line_error(saved):
    path, data = saved
    path.write_bytes(data[:8] + struct.pack("<I", 3) + data[12:])
    with pytest.raises(PynnError) as e:
        load(path)
    one_line_error(e, str(path), "version 3", "reads versions 1, 2")


@pytest.mark.parametrize("keep", [0, 5, 14, 40, -1, -100])
def test_truncated_file_is_a_one_line_error(saved, keep):
    path, data = saved
    path.write_bytes(data[:keep])
    with pytest.raises(PynnError) as e:
        load(path)
    one_line_error(e, str(path))
    assert ("truncated" if keep not in (0, 5) else "not a pynn model file") in str(e.value)


@pytest.mark.parametrize("damage, words", [
    (lambda d: d[:-7] + bytes([d[-7] ^ 0x10]) + d[-6:], ["corrupt", "checksum"]),
    (lambda d: d + b"\0\0\0\0", ["corrupt", "after the weights"]),
    (lambda d: d[:16] + b"\xff" + d[17:], ["corrupt", "header"]),  # not UTF-8
    (lambda d: d.replace(b'"arch"', b'"arcx"'), ["corrupt", "header"]),
    (lambda d: d.replace(b'"f8,f6"', b'"f8,x6"'), ["corrupt", "bad token"]),
    (lambda d: d.replace(b'"relu"', b'"selu"'), ["corrupt", "header"]),
    (lambda d: d.replace(b'"std": 2.0', b'"std": 0.0'), ["corrupt", "header"]),
    (lambda d: b"1,2,3\n" + d, ["not a pynn model file"]),
])
def test_corrupt_file_is_a_one_line_error(saved, damage, words):
    path, data = saved
    path.write_bytes(damage(data))
    with pytest.raises(PynnError) as e:
        load(path)
    one_line_error(e, str(path), *words)


def test_missing_file(tmp_path):
    with pytest.raises(PynnError) as e:
        load(tmp_path / "nope.bin")
    one_line_error(e, "no such file")


# ---- through scripts/run.py ----------------------------------------------------------

def cli(*args, cwd):
    return subprocess.run([sys.executable, str(SCRIPTS_DIR / "run.py"), *map(str, args),
                           "--threads", "1"], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


def test_cli_save_then_load_gives_identical_files(subset_dir, tmp_path):
    trained, loaded = tmp_path / "trained", tmp_path / "loaded"
    trained.mkdir()
    loaded.mkdir()
    model = tmp_path / "model.bin"
    common = ("--data-dir", subset_dir, "--hidden", "24,12", "--epochs", 2)
    proc = cli(*common, "--out-dir", trained, "--save", model, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"model: {model}" in proc.stdout
    # other training options do not matter: nothing is trained
    proc2 = cli(*common, "--out-dir", loaded, "--load", model, "--seed", 0, "--epochs", 50,
                cwd=tmp_path)
    assert proc2.returncode == 0, proc2.stderr
    assert "epoch" not in proc2.stdout and f"loaded from {model}" in proc2.stdout
    for name in PREDICTION_NAMES.values():
        assert (loaded / name).read_bytes() == (trained / name).read_bytes(), name
    test_line = [line for line in proc.stdout.splitlines() if line.startswith("test accuracy")]
    assert len(test_line) == 1 and test_line[0] in proc2.stdout.splitlines()
    summary = json.loads(next((loaded / "runs").glob("*/summary.json")).read_text())
    assert summary["loaded_from"] == str(model) and summary["validation"] is None
    assert summary["test"]["count"] == 500


def test_cli_load_errors(subset_dir, tmp_path):
    model = tmp_path / "model.bin"
    save(model, small_model(sizes=(12, 4, 10)), Normalizer())
    # the model takes 12 inputs, the data has 784 values a line
    proc = cli("--data-dir", subset_dir, "--out-dir", tmp_path, "--load", model, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"error: {subset_dir / CSV_NAMES['train_vectors']}:1: "
                                  "expected 12 values, found 784")
    model.write_bytes(model.read_bytes()[:-3])
    proc = cli("--data-dir", subset_dir, "--out-dir", tmp_path, "--load", model, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"error: {model}: truncated model file")
    assert not any((tmp_path / name).exists() for name in PREDICTION_NAMES.values())


def test_cli_save_to_a_missing_folder_creates_it(subset_dir, tmp_path):
    proc = cli("--data-dir", subset_dir, "--out-dir", tmp_path, "--save",
               tmp_path / "no" / "model.bin", "--epochs", 1, "--hidden", 8, "--runs-dir", "",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"note: created the folder {tmp_path / 'no'} for --save" in proc.stdout
    assert (tmp_path / "no" / "model.bin").exists()


def test_cli_save_under_a_file_fails_before_training(subset_dir, tmp_path):
    (tmp_path / "a_file").write_bytes(b"")
    proc = cli("--data-dir", subset_dir, "--out-dir", tmp_path, "--save",
               tmp_path / "a_file" / "model.bin", cwd=tmp_path)
    assert proc.returncode == 2 and "epoch" not in proc.stdout
    assert proc.stderr.startswith(f"error: {tmp_path / 'a_file'}: output folder is a file"), \
        proc.stderr


def test_save_to_a_folder_fails_before_training(subset_dir, tmp_path):
    stream = io.StringIO()
    with pytest.raises(PynnError, match="is a folder"):
        run(configure("mlp", data_dir=str(subset_dir), out_dir=str(tmp_path), save=str(tmp_path)),
            reporter=Reporter(stream))
    assert "epoch" not in stream.getvalue()


# A model file written by the pynn before the parameter block and the fuse pass
# (commit d86a6cf): a small CNN with every kind of layer (c4,p,c6,f12,d0.2 on 8x8
# images, batch norm everywhere, trained 40 steps on random data). That pynn's
# evaluation-mode logits of 40 fixed inputs had this sha256 (scripts: the test's
# inputs, model.forward after model.train(False)).
OLD_MODEL = Path(__file__).resolve().parent / "data" / "model-v2.bin"
OLD_LOGITS_SHA256 = "b0dccbbdc25dcde605559535d8884fab6999c4ff544a1f412e75b26597da9c6a"


@pytest.mark.parametrize("fused", [False, True])
def test_a_model_file_of_the_previous_pynn_predicts_the_same_bits(fused):
    import hashlib

    from pynn._kernels import ffi
    from pynn.fuse import fuse

    model, norm = load(OLD_MODEL)
    assert (norm.mean, norm.std) == (0.5, 2.0)
    model = fuse(model) if fused else model
    x = Tensor.from_list([random.Random(9).uniform(-1, 1) for _ in range(40 * 64)], (40, 64))
    model.train(False)
    logits = model.forward(x)
    assert hashlib.sha256(ffi.buffer(logits.ptr, logits.nbytes)[:]).hexdigest() == OLD_LOGITS_SHA256


@pytest.mark.parametrize("header, words", [
    ({"sizes": []}, "unreadable header"),
    ({"sizes": [4, 3], "activation": ["relu"]}, "impossible header values"),
    ({"arch": "f8", "width": 10 ** 10, "classes": 3, "batchnorm": "off", "activation": "relu",
      "tensors": [[8, 10 ** 10], [8], [3, 8], [3]]}, "truncated model file"),
])
def test_a_corrupt_header_is_bad_input_before_anything_is_built(tmp_path, header, words):
    """Not a bug's traceback, and no absurd allocation: the header's sizes are
    checked against the payload before build() sees them."""
    version = 1 if "sizes" in header else VERSION
    head = json.dumps({"mean": 0.0, "std": 1.0, "crc32": 0, "activation": "relu",
                       **header}).encode()
    path = tmp_path / "m.bin"
    path.write_bytes(struct.pack("<8sII", MAGIC, version, len(head)) + head + b"\0" * 64)
    with pytest.raises(PynnError, match=words):
        load(path)
