"""scripts/ab_kernels.py, two builds timed side by side in one process: a
build set beside itself is loaded twice and computes the same bits in both
copies (each copy keeps its own work buffers); a folder without a build is
a one-line error."""
import subprocess
import sys

from conftest import SCRIPTS_DIR

SCRIPT = SCRIPTS_DIR / "ab_kernels.py"


def test_a_build_beside_itself_gives_the_same_bits():
    root = SCRIPTS_DIR.parent
    r = subprocess.run([sys.executable, str(SCRIPT), str(root), str(root / "pynn"),
                        "--threads", "1", "--rounds", "2", "--shape", "10,10,16,24"],
                       check=False, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if " 10x10x16->24 " in line]
    assert [line.split()[2] for line in lines] == ["fwd", "dw", "dinp"], r.stdout
    assert all(line.endswith("same bits") for line in lines), r.stdout


def test_a_folder_without_a_build_is_an_error(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), str(tmp_path)],
                       check=False, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert r.stderr.strip() == f"error: {tmp_path}: no _kernels*.so there or in its pynn/"
