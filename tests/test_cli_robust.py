"""``nbq`` ends cleanly on hostile files and closed pipes: one line and exit 2 for a checkpoint
that is not one (never a traceback, never torch's advice to unpickle it anyway), and exit 141
without a word when the reader of stdout goes away (``nbq perf ... | head -1``)."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from pynq_nbq import cli

ROOT = Path(__file__).resolve().parent.parent


def nbq(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``python -m pynq_nbq.cli ARGS`` in a child process (this checkout's package)."""
    cmd = [sys.executable, "-m", "pynq_nbq.cli", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


class RunsCode:
    """Unpickling this would run ``touch MARKER``: what a hostile checkpoint carries."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def bad_checkpoints(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (checkpoint file, words its one-line error must contain)."""
    torch = pytest.importorskip("torch")
    out = {}
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(bytes(range(256)) * 8)
    out["corrupt"] = (corrupt, "not a checkpoint written by nbq train")
    good = tmp_path / "good.pt"
    torch.save({"model": {"w": torch.zeros(3)}}, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:300])
    out["truncated"] = (truncated, "not a readable checkpoint")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    out["empty"] = (empty, "not a readable checkpoint")
    hostile = tmp_path / "hostile.pt"
    torch.save({"model": RunsCode(tmp_path / "pwned")}, hostile)
    out["hostile"] = (hostile, "refused: it asks to load posix.system")
    plain = tmp_path / "plain.pt"
    plain.write_bytes(pickle.dumps({"config": {}}, protocol=4))
    out["plain pickle"] = (plain, "not a checkpoint written by nbq train")
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(2), tensor)
    out["a tensor"] = (tensor, "it holds a Tensor, not a dict")
    partial = tmp_path / "partial.pt"
    torch.save({"model": {"w": torch.zeros(3)}, "config": {}}, partial)
    out["missing keys"] = (partial, "lacks classes, input_shape, mean, std, dataset")
    wrong = tmp_path / "wrong.pt"
    bad_config = {"no_such_setting": 1}
    keys = {"classes": ["a"], "input_shape": [1, 8, 8], "mean": [0], "std": [1], "dataset": "x"}
    torch.save({"model": {}, "config": bad_config, **keys}, wrong)
    out["bad config"] = (wrong, "does not make a model")
    return out


@pytest.mark.parametrize("command", ["eval", "export"])
def test_bad_checkpoints_get_one_line_and_exit_2(tmp_path, capsys, command):
    for name, (path, words) in bad_checkpoints(tmp_path).items():
        extra = ["--out", str(tmp_path / "bundle")] if command == "export" else []
        rc = cli.main([command, str(path), *extra])
        err = capsys.readouterr().err.strip()
        assert rc == 2, (name, err)
        assert err.count("\n") == 0 and words in err, (name, err)
        assert err.startswith(f"nbq {command}: error: ") and "weights_only" not in err, err
    assert not (tmp_path / "pwned").exists()  # the hostile pickle's code never ran


def test_hostile_checkpoint_from_the_shell(tmp_path):
    """The same through a real process: stderr is the one line, no traceback, no warning."""
    path, words = bad_checkpoints(tmp_path)["hostile"]
    proc = nbq("eval", str(path))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and words in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "weights_only" not in proc.stderr
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["info"],
        ["perf", "--network", "nbq-fmnist"],
        ["classify", "--backend", "numpy", "pynq_nbq/samples/1-trouser.png"],
    ],
    ids=["info", "perf", "classify"],
)
def test_closed_stdout_ends_quietly(args):
    """The reader closes the pipe before nbq writes: exit 141, nothing on stderr."""
    cmd = [sys.executable, "-m", "pynq_nbq.cli", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == cli.EXIT_BROKEN_PIPE, err
    assert err == ""


def test_head_reads_the_first_line_and_nbq_ends_quietly():
    """``nbq perf ... | head -1`` as a shell runs it: one line out, no traceback."""
    cmd = f"{sys.executable} -m pynq_nbq.cli perf --network nbq-fmnist | head -1"
    proc = subprocess.run(
        ["bash", "-c", cmd], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.count("\n") == 1
    assert proc.stdout.startswith("nbq perf: nbq-fmnist on zcu102")
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_a_broken_pipe_that_is_not_stdout_is_not_hidden(monkeypatch):
    """Only stdout's reader going away ends quietly; any other broken pipe is a bug."""

    def broken(args):
        raise BrokenPipeError("a child process's pipe")

    from pynq_nbq.commands import info

    monkeypatch.setattr(info, "run", broken)  # register() reads it when main() builds
    with pytest.raises(BrokenPipeError):
        cli.main(["info"])
