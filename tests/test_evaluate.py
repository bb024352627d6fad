"""Tests for scripts/evaluate.py."""

import random
import subprocess
import sys

import pytest

from conftest import SCRIPTS_DIR, load_script

evaluate = load_script("evaluate")


def write_lines(path, values, newline="\n", final_newline=True):
    text = newline.join(str(v) for v in values)
    if final_newline:
        text += newline
    path.write_bytes(text.encode("ascii"))
    return path


def test_agrees_with_independent_count(tmp_path):
    rng = random.Random(0)
    truth = [rng.randrange(10) for _ in range(1000)]
    pred = [t if rng.random() < 0.7 else rng.randrange(10) for t in truth]
    expected = 0
    for p, t in zip(pred, truth):
        if p == t:
            expected += 1
    correct, total = evaluate.evaluate(write_lines(tmp_path / "pred", pred),
                                       write_lines(tmp_path / "truth", truth))
    assert (correct, total) == (expected, 1000)


def test_hand_case_output(tmp_path, capsys):
    pred = write_lines(tmp_path / "pred", [1, 2, 3, 4, 5, 6, 7, 0])
    truth = write_lines(tmp_path / "truth", [1, 2, 3, 4, 5, 6, 0, 0])
    assert evaluate.evaluate(pred, truth) == (7, 8)
    assert evaluate.main([str(pred), str(truth)]) == 0
    assert capsys.readouterr().out == "Accuracy 0.8750\ncorrect 7 of 8\n"


def test_threshold_exit_codes(tmp_path, capsys):
    pred = write_lines(tmp_path / "pred", [0, 1, 2, 3])
    truth = write_lines(tmp_path / "truth", [0, 1, 2, 9])  # accuracy 0.75
    assert evaluate.main([str(pred), str(truth), "--threshold", "0.75"]) == 0
    assert evaluate.main([str(pred), str(truth), "--threshold", "0.7"]) == 0
    capsys.readouterr()
    assert evaluate.main([str(pred), str(truth), "--threshold", "0.8"]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "below threshold: 0.7500 < 0.8"


def test_threshold_message_not_hidden_by_rounding(tmp_path, capsys):
    truth = [0] * 100000
    pred = [1] + [0] * 99999  # accuracy 0.99999, shown as 1.0000
    args = [str(write_lines(tmp_path / "p", pred)),
            str(write_lines(tmp_path / "t", truth)), "--threshold", "1"]
    assert evaluate.main(args) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "below threshold: 0.99999 < 1.0"


def test_threshold_must_be_a_fraction(tmp_path):
    pred = write_lines(tmp_path / "pred", [0])
    with pytest.raises(SystemExit) as exc:
        evaluate.main([str(pred), str(pred), "--threshold", "1.5"])
    assert exc.value.code == 2


def test_crlf_spaces_and_missing_final_newline(tmp_path):
    pred = write_lines(tmp_path / "pred", [" 3", "1 ", "4"], newline="\r\n")
    truth = write_lines(tmp_path / "truth", [3, 1, 5], final_newline=False)
    assert evaluate.evaluate(pred, truth) == (2, 3)


def test_count_mismatch(tmp_path, capsys):
    pred = write_lines(tmp_path / "pred", [1, 2, 3])
    truth = write_lines(tmp_path / "truth", [1, 2])
    assert evaluate.main([str(pred), str(truth)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"error: {pred} has 3 lines but {truth} has 2\n"


def test_count_mismatch_as_subprocess(tmp_path):
    pred = write_lines(tmp_path / "pred", [1, 2, 3])
    truth = write_lines(tmp_path / "truth", [1, 2])
    result = subprocess.run(
        [sys.executable, str(SCRIPTS_DIR / "evaluate.py"), str(pred), str(truth)],
        capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == f"error: {pred} has 3 lines but {truth} has 2\n"


def test_not_an_integer_names_file_and_line(tmp_path, capsys):
    pred = tmp_path / "pred"
    pred.write_text("1\n2\ncat\n4\n")
    truth = write_lines(tmp_path / "truth", [1, 2, 3, 4])
    assert evaluate.main([str(pred), str(truth)]) == 2
    assert capsys.readouterr().err == f"error: {pred}:3: not an integer: 'cat'\n"


def test_blank_line_in_the_middle_is_an_error(tmp_path):
    pred = tmp_path / "pred"
    pred.write_text("1\n\n3\n")
    with pytest.raises(ValueError, match=":2: not an integer: ''"):
        evaluate.read_labels(pred)


def test_missing_file(tmp_path, capsys):
    truth = write_lines(tmp_path / "truth", [1])
    missing = tmp_path / "nope"
    assert evaluate.main([str(missing), str(truth)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {missing}: ") and err.count("\n") == 1
