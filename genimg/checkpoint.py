"""Asynchronous, atomic, exactly resumable training checkpoints.

A checkpoint is a folder `ckpt-00001200/` holding `state.safetensors` (every tensor of the
training state: weights, EMA, optimizer moments) and `state.json` (everything else: step,
config, scalar optimizer settings). It is written under a `.tmp` name and renamed when
complete, so a kill -9 at any moment leaves either the old set or the old set plus one
complete new checkpoint. No pickle is involved, so a checkpoint can never run code.

The training loop pays only for copying its tensors (`Checkpointer.save`); a background
thread does the writing. Trainers make resume exact by deriving every random draw of step
`s` from a generator seeded with (seed, s), so the state needs no RNG snapshot.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

__all__ = ["Checkpointer", "latest_checkpoint", "load_checkpoint"]

_PREFIX = "ckpt-"


def _flatten(obj: Any, tensors: dict[str, torch.Tensor], path: str = "s") -> Any:
    """JSON skeleton of obj with tensors moved (as CPU copies) into `tensors`."""
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": path}
    if isinstance(obj, dict):
        # Keys may be ints (optimizer state): keep them typed as [key, value] pairs.
        return {"__dict__": [[k, _flatten(v, tensors, f"{path}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        items = [_flatten(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot checkpoint a {type(obj).__name__} at {path}")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: _unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def _write(folder: Path, skeleton: Any, tensors: dict[str, torch.Tensor]) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        save_file(tensors, str(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(json.dumps(skeleton))
        for name in ("state.safetensors", "state.json"):
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
        if folder.exists():  # an unreadable one that resume skipped: this step replaces it
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk must not stay full of a half
        raise


class Checkpointer:
    """Writes checkpoints of a run folder in the background, keeping the newest `keep`."""

    def __init__(self, run_dir: Path | str, keep: int = 2):
        self.run_dir = Path(run_dir)
        self.keep = keep
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.stall_s: list[float] = []  # time the training loop spent in save()

    def save(self, step: int, state: dict) -> None:
        """Copy `state` now; write it to ckpt-<step> in the background."""
        t0 = time.perf_counter()
        self.wait()
        tensors: dict[str, torch.Tensor] = {}
        skeleton = _flatten(state, tensors)
        folder = self.run_dir / f"{_PREFIX}{step:08d}"
        self._thread = threading.Thread(target=self._run, args=(folder, skeleton, tensors))
        self._thread.start()
        self.stall_s.append(time.perf_counter() - t0)

    def _run(self, folder: Path, skeleton: Any, tensors: dict[str, torch.Tensor]) -> None:
        try:
            _write(folder, skeleton, tensors)
            for old in _complete(self.run_dir)[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException as err:  # re-raised in the training thread by wait()
            self._error = err

    def wait(self) -> None:
        """Block until the pending write is done; re-raise its error, if any."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            # A full disk is the machine's fault, not the code's: keep its errno (safetensors
            # reports it only in its message) so that the CLI says so in one line.
            code = getattr(err, "errno", None) or _os_errno(str(err))
            if code:
                raise OSError(code, f"checkpoint write failed: {os.strerror(code)}") from err
            raise RuntimeError(f"checkpoint write failed: {err}") from err


def _os_errno(message: str) -> int | None:
    found = re.search(r"\(os error (\d+)\)", message)  # Rust's io::Error text
    return int(found[1]) if found else None


def _complete(run_dir: Path) -> list[Path]:
    if not run_dir.is_dir():
        return []
    found = [
        p
        for p in run_dir.iterdir()
        if p.is_dir() and p.name.startswith(_PREFIX) and not p.name.endswith(".tmp")
    ]
    return sorted(found, key=lambda p: p.name)


def load_checkpoint(folder: Path | str) -> dict:
    folder = Path(folder)
    tensors = load_file(str(folder / "state.safetensors"))
    return _unflatten(json.loads((folder / "state.json").read_text()), tensors)


def latest_checkpoint(run_dir: Path | str) -> tuple[Path, dict] | None:
    """Newest checkpoint that loads; a corrupt newer one is skipped with a warning."""
    for folder in reversed(_complete(Path(run_dir))):
        try:
            return folder, load_checkpoint(folder)
        except Exception as err:  # corrupt or truncated: fall back to the previous one
            print(
                f"warning: checkpoint {folder.name} unreadable ({err}); "
                "falling back to the previous one",
                file=sys.stderr,
            )
    return None
