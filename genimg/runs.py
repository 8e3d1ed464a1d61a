"""The runs registry: every `genimg batch` and `genimg compare` run, in one SQLite file.

The database lives beside the output folders, in their parent (the *output root*):
`<root>/genimg-runs.sqlite`. A run records its command, config, model and adapter hashes,
library versions, seed list, output folder, status and metrics. A run killed without a
chance to say so (`kill -9`) stays `running` in the file; it is shown as `interrupted` once
its process is gone, and `--resume` of the same output folder takes the same run id.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
from pathlib import Path

from genimg.errors import UsageError

__all__ = ["DB_NAME", "finish_run", "list_runs", "get_run", "start_run"]

DB_NAME = "genimg-runs.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,          -- batch | compare
    out TEXT NOT NULL,           -- the output folder, absolute
    status TEXT NOT NULL,        -- running | finished | interrupted | failed
    started TEXT NOT NULL,
    finished TEXT,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    config TEXT NOT NULL,        -- JSON: the command's settings
    models TEXT NOT NULL,        -- JSON: model and adapter names and hashes
    versions TEXT NOT NULL,      -- JSON: library versions
    seeds TEXT NOT NULL,         -- JSON list
    metrics TEXT,                -- JSON, when finished
    outputs TEXT                 -- JSON list of output paths, relative to out
)
"""
_JSON_COLUMNS = ("config", "models", "versions", "seeds", "metrics", "outputs")


def _connect(root: Path | str) -> sqlite3.Connection:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    # A few writers (parallel runs) may share the file; wait for the lock rather than fail.
    db = sqlite3.connect(root / DB_NAME, timeout=30)
    db.row_factory = sqlite3.Row
    db.execute(_SCHEMA)
    return db


@contextlib.contextmanager
def _writing(root: Path | str):
    """A connection for one write; a full disk or a locked file becomes a one-line error."""
    try:
        with _connect(root) as db:
            yield db
    except sqlite3.Error as err:
        where = Path(root) / DB_NAME
        raise UsageError("--out", f"cannot record the run in {where}: {err}") from None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def start_run(
    root: Path | str,
    kind: str,
    out: Path | str,
    config: dict,
    models: dict,
    versions: dict,
    seeds: list[int],
    resume: bool = False,
) -> int:
    """Record a run as `running`; with `resume`, reuse the last run of the same folder."""
    out = str(Path(out).resolve())
    row = (
        kind,
        out,
        "running",
        _now(),
        socket.gethostname(),
        os.getpid(),
        *(json.dumps(x, ensure_ascii=False) for x in (config, models, versions, seeds)),
    )
    with _writing(root) as db:
        if resume:
            last = db.execute(
                "SELECT id FROM runs WHERE out = ? AND kind = ? ORDER BY id DESC LIMIT 1",
                (out, kind),
            ).fetchone()
            if last:
                db.execute(
                    "UPDATE runs SET status = 'running', finished = NULL, host = ?, pid = ? "
                    "WHERE id = ?",
                    (socket.gethostname(), os.getpid(), last["id"]),
                )
                return int(last["id"])
        cur = db.execute(
            "INSERT INTO runs (kind, out, status, started, host, pid, config, models, versions,"
            " seeds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            row,
        )
        return int(cur.lastrowid or 0)


def finish_run(
    root: Path | str,
    run_id: int,
    status: str,
    metrics: dict | None = None,
    outputs: list[str] | None = None,
) -> None:
    if status not in ("finished", "interrupted", "failed"):
        raise ValueError(f"status must be finished, interrupted or failed, got {status!r}")
    # Recording a failure must not hide it: when that write fails too (the disk that failed
    # the run is full), the run shows as interrupted once its process is gone.
    failure = contextlib.suppress(UsageError) if status != "finished" else contextlib.nullcontext()
    with failure, _writing(root) as db:
        db.execute(
            "UPDATE runs SET status = ?, finished = ?, metrics = ?, outputs = ? WHERE id = ?",
            (
                status,
                _now(),
                json.dumps(metrics or {}, ensure_ascii=False),
                json.dumps(outputs or [], ensure_ascii=False),
                run_id,
            ),
        )


def _alive(host: str, pid: int) -> bool:
    if host != socket.gethostname():
        return True  # cannot tell from here
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _as_dict(row: sqlite3.Row) -> dict:
    run = dict(row)
    for key in _JSON_COLUMNS:
        run[key] = json.loads(run[key]) if run[key] else None
    # The pid check is only meaningful for our own, still-running process table entry.
    if run["status"] == "running" and not _alive(run["host"], run["pid"]):
        run["status"] = "interrupted"
    return run


def list_runs(root: Path | str) -> list[dict]:
    if not (Path(root) / DB_NAME).is_file():
        return []
    with _connect(root) as db:
        return [_as_dict(r) for r in db.execute("SELECT * FROM runs ORDER BY id")]


def get_run(root: Path | str, run_id: int) -> dict:
    if (Path(root) / DB_NAME).is_file():
        with _connect(root) as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row:
            return _as_dict(row)
    raise UsageError("ID", f"no run {run_id} in {Path(root) / DB_NAME}")


# -- the `genimg runs` command -------------------------------------------------------------


def configure(parser) -> None:
    parser.epilog = (
        "examples:\n  genimg runs --root runs\n  genimg runs --root runs show 3\n\n"
        f"The registry is ROOT/{DB_NAME}; batch and compare write it in their --out's parent."
    )
    parser.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    parser.add_argument("id", nargs="?", type=int, help="run id, for show")
    parser.add_argument("--root", type=Path, default=Path("runs"), help="output root (runs)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def _summary(run: dict) -> str:
    metrics = run["metrics"] or {}
    shown = ", ".join(f"{k}={v}" for k, v in metrics.items() if isinstance(v, (int, float)))
    return (
        f"{run['id']:>4}  {run['kind']:<8} {run['status']:<12} {run['started']}  "
        f"{run['out']}" + (f"  ({shown})" if shown else "")
    )


def run(args) -> int:
    if not args.root.is_dir():
        raise UsageError("--root", f"no such folder {str(args.root)!r}")
    if args.action == "show":
        if args.id is None:
            raise UsageError("ID", "show needs a run id; `genimg runs` lists them")
        print(json.dumps(get_run(args.root, args.id), indent=2, ensure_ascii=False))
        return 0
    if args.id is not None:
        raise UsageError("ID", "a run id goes with `show`: genimg runs show ID")
    found = list_runs(args.root)
    if args.json:
        print(json.dumps(found, indent=2, ensure_ascii=False))
    elif not found:
        print(f"no runs recorded in {args.root / DB_NAME}")
    else:
        print("\n".join(_summary(r) for r in found))
    return 0
