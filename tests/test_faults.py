"""Faults: kill -9 at chosen points, a full disk, a corrupt newest checkpoint.

Each long command (`batch`, `train-base`, `train-lora`, `train-checker`) is run on a tiny
recipe and killed with SIGKILL at five points in a row (each resumed run is killed again at
the next point, one of them in the middle of a checkpoint write); the last `--resume` must end
with exactly what an uninterrupted run writes. The runs are forked from this process, so a
kill costs no interpreter start-up; a hook in the child stops it at the point (it touches a
file and sleeps) and the test kills it there, so the points are exact, not timing luck.

The full-disk tests write to a small tmpfs (mounting one needs root; they skip otherwise).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib
import json
import os
import signal
import subprocess
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_batch import KETTLE, SHELF, _hashes, _manifest
from tiny_assets import make_model

from genimg.checkpoint import latest_checkpoint
from genimg.cli import main

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "assets" / "recipes"
BATCH = ["--num-images", "4", "--num-inference-steps", "4", "--height", "64", "--width", "64"]
PROMPTS = [SHELF, KETTLE, "a bedroom with a blue bed"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faults")
    make_model(root / "model")
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    return root


# -- kill -9 at a point ----------------------------------------------------------------------


def _stop_here(ready: Path) -> None:
    ready.write_text(str(os.getpid()))
    while True:  # until the parent's SIGKILL
        time.sleep(60)


def _hook(target: str, nth: int, when: str, ready: Path) -> None:
    """Patch `module.attr` in this (child) process to stop at its nth call: `before` it runs,
    `after` it returns, or (`cut`, for manifest appends) after writing half of its line."""
    module_name, attr = target.rsplit(".", 1)
    module = importlib.import_module(module_name)
    real = getattr(module, attr)
    calls = 0

    def hooked(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == nth and when == "before":
            _stop_here(ready)
        if calls == nth and when == "cut":  # append(path, row): half a line, as a crash leaves
            line = json.dumps(args[1], ensure_ascii=False, sort_keys=True) + "\n"
            with open(args[0], "a", encoding="utf-8") as handle:
                handle.write(line[: len(line) // 2])
            _stop_here(ready)
        result = real(*args, **kwargs)
        if calls == nth and when == "after":
            _stop_here(ready)
        return result

    setattr(module, attr, hooked)


def _fork_main(argv: list[str], log: Path, setup: Callable[[], None] | None = None) -> int:
    """Run `genimg argv` in a forked child; returns its pid."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            if setup is not None:
                setup()
            code = main(argv)
        except BaseException:
            with open(log, "a") as handle:
                traceback.print_exc(file=handle)
        finally:
            os._exit(code)
    return pid


def _kill_at(argv: list[str], point: tuple[str, int, str], tmp: Path) -> None:
    """Run argv in a child, SIGKILL it when it reaches `point`."""
    ready, log = tmp / f"ready-{time.monotonic_ns()}", tmp / "child.log"
    pid = _fork_main(argv, log, lambda: _hook(*point, ready))
    deadline = time.monotonic() + 900  # a long training job may share the cores
    while not ready.exists():
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            tail = log.read_text()[-3000:] if log.exists() else ""
            pytest.fail(f"exited ({status}) before {point}:\n{tail}")
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"{point} not reached in 900 s")
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def _kill_chain(argv: list[str], points: list[tuple[str, int, str]], tmp: Path) -> int:
    """Kill a run at each point in turn (each kill hits a `--resume` of the last), then
    resume to the end in this process. Returns the final exit code."""
    _kill_at(argv, points[0], tmp)
    for point in points[1:]:
        _kill_at([*argv, "--resume"], point, tmp)
    return main([*argv, "--resume"])


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _assert_same_tensors(want: Path, got: Path) -> None:
    a, b = _tensors(want), _tensors(got)
    assert a.keys() == b.keys() and a
    for key in a:
        assert torch.equal(a[key], b[key]), f"{got}: {key} differs from the uninterrupted run"


# genimg batch: 3 prompts x 4 images; a manifest line is appended after each PNG.
BATCH_POINTS = [
    ("genimg.manifest.append", 2, "after"),  # two images done
    ("os.replace", 3, "before"),  # a PNG written under its temporary name, not renamed
    ("genimg.manifest.append", 1, "cut"),  # half a manifest line on disk
    ("genimg.batch.render_batch", 1, "before"),  # while rendering
    ("genimg.manifest.append", 1, "before"),  # a PNG in place, its manifest line not
]


def _batch_argv(work: Path, out: Path) -> list[str]:
    return ["batch", "--model", str(work / "model"), "--prompts", str(work / "prompts.txt"),
            "--out", str(out), *BATCH]  # fmt: skip


@pytest.fixture(scope="module")
def batch_ref(work) -> dict[str, str]:
    out = work / "batch-ref"
    assert main(_batch_argv(work, out)) == 0
    hashes = _hashes(out)
    assert len(hashes) == 12
    return hashes


def test_batch_killed_five_times_resumes_to_the_same_files(work, batch_ref, tmp_path):
    out = tmp_path / "out"
    assert _kill_chain(_batch_argv(work, out), BATCH_POINTS, tmp_path) == 0
    assert _hashes(out) == batch_ref
    assert sorted(r["file"] for r in _manifest(out)) == sorted(batch_ref)  # each once
    assert not list(out.rglob("*.tmp*"))


# genimg train-base, tiny.toml: VAE 4 steps (checkpoint at 4), UNet 6 (checkpoints 2, 4, 6).
BASE_POINTS = [
    ("genimg.train_base.vae_loss", 2, "before"),  # VAE stage, no checkpoint yet
    ("genimg.checkpoint.save_file", 1, "after"),  # VAE checkpoint half-written
    ("genimg.train_base.diffusion_loss", 2, "before"),  # UNet stage
    ("genimg.checkpoint.save_file", 2, "after"),  # UNet checkpoint 4 half-written
    ("genimg.pipeline.save_pipeline", 1, "before"),  # trained, model folder not yet saved
]


def _base_argv(out: Path) -> list[str]:
    return ["train-base", "--recipe", str(RECIPES / "tiny.toml"), "--out", str(out)]


def _model_weights(model_dir: Path) -> dict[str, str]:
    return {
        str(p.relative_to(model_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(model_dir.rglob("*.safetensors"))
    }


def test_train_base_killed_five_times_resumes_to_the_same_model(tmp_path):
    assert main(_base_argv(tmp_path / "ref")) == 0
    want = _model_weights(tmp_path / "ref" / "model")
    assert len(want) == 3
    out = tmp_path / "killed"
    assert _kill_chain(_base_argv(out), BASE_POINTS, tmp_path) == 0
    assert _model_weights(out / "model") == want
    assert not list(out.rglob("*.tmp"))


# genimg train-lora, lora-tiny.toml: 12 steps, a checkpoint every 3.
LORA_POINTS = [
    ("genimg.train_base.diffusion_loss", 2, "before"),
    ("genimg.checkpoint.save_file", 1, "after"),  # checkpoint 3 half-written
    ("genimg.train_base.diffusion_loss", 5, "before"),
    ("genimg.checkpoint.save_file", 3, "after"),  # checkpoint 12 half-written
    ("genimg.lora._samples", 1, "before"),  # weights saved, card not written
]
WEIGHTS = "pytorch_lora_weights.safetensors"


def _lora_argv(work: Path, out: Path) -> list[str]:
    return ["train-lora", "--base", str(work / "model"), "--recipe",
            str(RECIPES / "lora-tiny.toml"), "--out", str(out)]  # fmt: skip


@pytest.fixture(scope="module")
def lora_ref(work) -> Path:
    out = work / "lora-ref"
    assert main(_lora_argv(work, out)) == 0
    return out / WEIGHTS


def test_train_lora_killed_five_times_resumes_to_the_same_adapter(work, lora_ref, tmp_path):
    out = tmp_path / "killed"
    points = [*LORA_POINTS[:4], ("genimg.lora._save_diffusers", 1, "after")]
    assert _kill_chain(_lora_argv(work, out), points, tmp_path) == 0
    _assert_same_tensors(lora_ref, out / WEIGHTS)
    assert (out / "README.md").is_file() and not (out / "checkpoints").exists()


# genimg train-checker, checker-tiny.toml: 12 steps, a checkpoint every 3, then calibration.
CHECKER_POINTS = [
    ("genimg.checker_train.checker_loss", 2, "before"),
    ("genimg.checkpoint.save_file", 1, "after"),  # checkpoint 3 half-written
    ("genimg.checker_train.checker_loss", 5, "before"),
    ("genimg.checkpoint.save_file", 2, "after"),  # checkpoint 9 half-written
    ("genimg.checker.calibrate", 1, "before"),  # model saved, thresholds not fitted
]


def _checker_argv(out: Path) -> list[str]:
    return ["train-checker", "--recipe", str(RECIPES / "checker-tiny.toml"), "--out", str(out)]


def test_train_checker_killed_five_times_resumes_to_the_same_checker(tmp_path):
    assert main(_checker_argv(tmp_path / "ref")) == 0
    out = tmp_path / "killed"
    assert _kill_chain(_checker_argv(out), CHECKER_POINTS, tmp_path) == 0
    want, got = tmp_path / "ref" / "model", out / "model"
    _assert_same_tensors(want / "model.safetensors", got / "model.safetensors")
    settings = "genimg_checker.json"
    assert json.loads((got / settings).read_text()) == json.loads((want / settings).read_text())


# -- a corrupt newest checkpoint -------------------------------------------------------------


def test_corrupt_newest_checkpoint_falls_back_and_says_so(work, lora_ref, tmp_path, capfd):
    out = tmp_path / "lora"
    # Killed at step 8: checkpoints 3 and 6 are complete.
    _kill_at(_lora_argv(work, out), ("genimg.train_base.diffusion_loss", 8, "before"), tmp_path)
    newest = out / "checkpoints" / "ckpt-00000006" / "state.safetensors"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a torn write
    capfd.readouterr()
    assert main([*_lora_argv(work, out), "--resume"]) == 0
    err = capfd.readouterr().err
    assert "checkpoint ckpt-00000006 unreadable" in err and "falling back" in err
    _assert_same_tensors(lora_ref, out / WEIGHTS)


# -- a full disk -----------------------------------------------------------------------------


@pytest.fixture()
def small_disk(tmp_path):
    """A 4 MB tmpfs: a real full disk for the process, freed by deleting a filler file."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs (needs root): {mounted.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def _fill(disk: Path) -> Path:
    """Fill the disk to the last byte; delete the returned file to free it."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 20, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    with pytest.raises(OSError) as err:
        (disk / "probe").write_bytes(b"x")
    assert err.value.errno == errno.ENOSPC
    return filler


def test_batch_on_a_full_disk_keeps_its_manifest_and_resumes(
    work, batch_ref, small_disk, monkeypatch, capsys
):
    import genimg.manifest as manifest

    out = small_disk / "out"
    real, appended = manifest.append, []

    def append_then_fill(path, row):
        real(path, row)
        appended.append(row["file"])
        if len(appended) == 3:
            _fill(small_disk)

    monkeypatch.setattr(manifest, "append", append_then_fill)
    capsys.readouterr()
    code = main(_batch_argv(work, out))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("genimg batch: error: --out: cannot") and "No space left" in err
    # The manifest holds the three images written, each complete.
    assert [r["file"] for r in _manifest(out)] == appended
    assert {f: batch_ref[f] for f in appended} == {f: h for f, h in _hashes(out).items()}
    monkeypatch.setattr(manifest, "append", real)
    (small_disk / "filler").unlink()
    assert main([*_batch_argv(work, out), "--resume"]) == 0
    assert _hashes(out) == batch_ref
    assert not list(out.rglob("*.tmp*"))


def test_checkpoint_on_a_full_disk_is_a_clear_error_and_resumes(
    work, lora_ref, small_disk, monkeypatch, capsys
):
    import genimg.checkpoint as checkpoint

    out = small_disk / "lora"
    real, calls = checkpoint.save_file, []

    def fill_then_save(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:  # the second checkpoint (step 6) meets a full disk
            _fill(small_disk)
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", fill_then_save)
    capsys.readouterr()
    code = main(_lora_argv(work, out))
    for thread in threading.enumerate():  # the checkpoint writer, if it is still cleaning up
        if thread.name.endswith("(_run)"):  # Checkpointer's Thread(target=self._run)
            thread.join(60)
    err = capsys.readouterr().err.strip().splitlines()
    # The checkpoint writer or the training log (written just after) meets the full disk first.
    assert code == 1 and "Traceback" not in "\n".join(err), err
    assert err[-1].startswith("genimg train-lora: error: ") and "No space left" in err[-1], err
    # The last good checkpoint is intact; the failed one left nothing behind.
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["ckpt-00000003"]
    assert latest_checkpoint(out / "checkpoints")[1]["step"] == 3
    monkeypatch.setattr(checkpoint, "save_file", real)
    (small_disk / "filler").unlink()
    assert main([*_lora_argv(work, out), "--resume"]) == 0
    _assert_same_tensors(lora_ref, out / WEIGHTS)
