"""A batch's output folder: its images, `manifest.jsonl` and `batch.json`.

An image is written to a temporary file and renamed (`write`), and only then is its line
appended to the manifest (`append`: one write of one line), so after a crash every manifest
line names a complete file; a last line cut by a full disk is dropped when read. Under
`accelerate launch` each process appends its own `manifest.part-NNN.jsonl`; `merge` makes
them one manifest.
"""

from __future__ import annotations

import json
from pathlib import Path

from genimg.errors import UsageError

MANIFEST = "manifest.jsonl"
PARTS = "manifest.part-*.jsonl"  # one per process under accelerate launch
CONFIG = "batch.json"
REPORTS = ("report.json", "report.md")


def parts(out: Path) -> list[Path]:
    """Manifest parts of processes under `accelerate launch`, not merged yet."""
    return sorted(out.glob(PARTS)) if out.is_dir() else []


def read(out: Path, name: str = MANIFEST) -> list[dict]:
    """Manifest lines; a last line cut by a crash or a full disk is dropped from the file."""
    path = out / name
    if not path.exists():
        return []
    data = path.read_bytes()
    lines: list[dict] = []
    good = 0
    for raw in data.splitlines(keepends=True):
        try:
            row = json.loads(raw)
            if not raw.endswith(b"\n"):
                raise ValueError("no newline")
        except ValueError:
            if good + len(raw) < len(data):
                raise UsageError("--resume", f"{path}: line {len(lines) + 1} is corrupt") from None
            break
        lines.append(row)
        good += len(raw)
    if good < len(data):
        with open(path, "r+b") as handle:
            handle.truncate(good)
    return lines


def done(out: Path) -> dict[str, dict]:
    """Finished images: manifest rows (merged or in parts) whose file is there, once each."""
    rows: dict[str, dict] = {}
    for name in [MANIFEST, *(p.name for p in parts(out))]:
        for row in read(out, name):
            if (out / row["file"]).is_file():
                rows.setdefault(row["file"], row)
    return rows


def prepare(out: Path, resume: bool, overwrite: bool, config: dict) -> dict[str, dict]:
    """Check the folder against --resume/--overwrite; the manifest rows already done."""
    if resume and overwrite:
        raise UsageError("--resume", "give --resume or --overwrite, not both")
    if out.exists() and not out.is_dir():
        raise UsageError("--out", f"{out} is a file, not a folder")
    ours = [n for n in (MANIFEST, CONFIG) if (out / n).exists()] + [p.name for p in parts(out)]
    if ours and not (resume or overwrite):
        raise UsageError(
            "--out",
            f"{out} holds another run's files ({', '.join(ours)}); pass --resume to finish "
            "it, --overwrite to replace it, or choose another folder",
        )
    if overwrite and ours:
        for row in done(out).values():
            (out / row["file"]).unlink(missing_ok=True)
        for name in [*ours, *REPORTS]:
            (out / name).unlink(missing_ok=True)
    finished: dict[str, dict] = {}
    if resume and (out / CONFIG).exists():
        old = json.loads((out / CONFIG).read_text())
        for key in sorted(set(old) | set(config)):
            if old.get(key) != config.get(key):
                raise UsageError(
                    "--resume",
                    f"{out} was made with other settings ({key}: {old.get(key)!r}, now "
                    f"{config.get(key)!r}); use another --out or --overwrite",
                )
        finished = done(out)
    for tmp in out.rglob(".*.tmp-*") if out.exists() else []:
        tmp.unlink()  # a crashed run's unfinished files
    return finished


def merge(out: Path, files: list[str]) -> list[dict]:
    """One manifest from the processes' parts, in `files` order (the order one process
    writes them): each image once, whichever part (or an earlier merge) holds it. The parts
    go once it is written."""
    found = parts(out)
    if not found:
        return read(out)
    order = {file: k for k, file in enumerate(files)}
    rows = sorted(done(out).values(), key=lambda r: order.get(r["file"], len(order)))
    write(out / MANIFEST, "".join(line(r) for r in rows).encode())
    for part in found:
        part.unlink()
    return rows


def write(path: Path, data: bytes) -> None:
    from genimg.render import _write_atomic as write_atomic

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data)
    except OSError as err:
        raise UsageError("--out", f"cannot write {path}: {err.strerror or err}") from None


def line(row: dict) -> str:
    return json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n"


def append(path: Path, row: dict) -> None:
    try:
        # One write of one line: a crash leaves the line whole or absent, and the reader
        # drops a cut last line (full disk).
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line(row))
    except OSError as err:
        raise UsageError("--out", f"cannot append to {path}: {err.strerror or err}") from None
