"""Pack trained model folders for the trip back from a lent GPU machine.

The device tool returns at most 8 files of 16 MiB (64 MiB in all): float32 safetensors are
halved to float16, logs and small files copied, everything tarred and split into 15 MiB
parts. `python scripts/pack_outputs.py unpack PARTS_DIR DEST` restores it here (float16;
`genimg`'s loaders upcast). Checkpoint folders and latent caches are left behind.

usage: python scripts/pack_outputs.py pack OUT SRC_DIR [SRC_DIR ...]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

SKIP_DIRS = {"checkpoints", "__pycache__"}  # plus every ckpt-* folder
KEEP_SUFFIXES = {".json", ".jsonl", ".txt", ".md", ".toml", ".png", ".log"}
# Tokenizer files are rebuilt from assets/tokenizer on unpack (they are 5 MB a model).
TOKENIZER_FILES = {"tokenizer.json", "vocab.json", "merges.txt"}


def _copy_tree(src: Path, dst: Path) -> None:
    for path in src.rglob("*"):
        rel = path.relative_to(src)
        if any(part in SKIP_DIRS or part.startswith("ckpt-") for part in rel.parts[:-1]):
            continue
        if path.is_dir() or path.name in TOKENIZER_FILES:
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".safetensors":
            tensors = load_file(str(path))
            with safe_open(str(path), "pt") as handle:  # a LoRA file's alpha lives here
                metadata = {"format": "pt", **(handle.metadata() or {})}
            half = {k: v.half() if v.dtype == torch.float32 else v for k, v in tensors.items()}
            save_file(half, str(target), metadata=metadata)
        elif path.suffix in KEEP_SUFFIXES and path.stat().st_size < 4_000_000:
            shutil.copy2(path, target)


def pack(out: Path, sources: list[Path]) -> None:
    stage = Path("/tmp/pack_stage")
    shutil.rmtree(stage, ignore_errors=True)
    for src in sources:
        if src.is_dir():
            _copy_tree(src, stage / src.name)
    tar_path = Path("/tmp/results.tar")
    with tarfile.open(tar_path, "w") as tar:
        tar.add(stage, arcname="results")
    subprocess.run(
        ["split", "-b", "15m", "-d", str(tar_path), str(out / "results.tar.")], check=True
    )
    parts = sorted(p.name for p in out.glob("results.tar.*"))
    print(f"packed {tar_path.stat().st_size / 1e6:.1f} MB into {parts}")


def unpack(parts_dir: Path, dest: Path) -> None:
    tar_path = Path("/tmp/results_in.tar")
    with open(tar_path, "wb") as f:
        for part in sorted(parts_dir.glob("results.tar.*")):
            f.write(part.read_bytes())
    with tarfile.open(tar_path) as tar:
        tar.extractall(dest, filter="data")
    print(f"unpacked into {dest / 'results'}")


if __name__ == "__main__":
    if sys.argv[1] == "pack":
        pack(Path(sys.argv[2]), [Path(p) for p in sys.argv[3:]])
    else:
        unpack(Path(sys.argv[2]), Path(sys.argv[3]))
