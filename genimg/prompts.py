"""Prompts files for `genimg batch` and `genimg compare`: `.txt` (one prompt a line, `#`
comments), `.jsonl` (`prompt` plus optional overrides) and GenEval's prompt metadata
(`tag`, `include`, `prompt`; Ghosh et al., 2023, "GenEval"). Errors name the line."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from genimg.errors import MAX_PROMPT_CHARS, UsageError

__all__ = ["OVERRIDES", "PromptSpec", "read_prompts"]

OVERRIDES = {  # jsonl key -> the option it overrides
    "negative_prompt": "--negative-prompt",
    "seed": "--seed",
    "num_images": "--num-images",
    "num_inference_steps": "--num-inference-steps",
    "guidance_scale": "--guidance-scale",
    "height": "--height",
    "width": "--width",
    "lora": "--lora",
}
_JSONL_KEYS = {"id", "prompt", "objects", *OVERRIDES}


@dataclass
class PromptSpec:
    """One prompt of a prompts file, with the file's overrides; None means the default."""

    index: int  # position in the file, from 0
    line: int  # line number in the file, from 1
    prompt: str
    id: str | None = None
    objects: str | list | None = None  # what to check, when not read from the prompt
    overrides: dict = field(default_factory=dict)  # option name -> value
    geneval: dict | None = None  # the GenEval metadata line, kept as given


def read_prompts(path: Path | str) -> list[PromptSpec]:
    """Prompts of a .txt, .jsonl or GenEval metadata file; UsageError naming the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError("--prompts", f"no such file {str(path)!r}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError("--prompts", f"cannot read {path}: {err}") from None
    specs: list[PromptSpec] = []
    as_json = path.suffix in (".jsonl", ".json")
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or (not as_json and raw.lstrip().startswith("#")):
            continue
        where = f"{path}:{number}"
        spec = (
            _json_line(raw, where, len(specs), number)
            if as_json
            else PromptSpec(len(specs), number, raw.strip())
        )
        if not spec.prompt.strip():
            raise UsageError("--prompts", f"{where}: empty prompt")
        if len(spec.prompt) > MAX_PROMPT_CHARS:
            size = f"{len(spec.prompt):,} characters; at most {MAX_PROMPT_CHARS:,}"
            raise UsageError("--prompts", f"{where}: {size}")
        specs.append(spec)
    if not specs:
        raise UsageError("--prompts", f"{path} holds no prompts")
    seen: dict[str, int] = {}
    for spec in specs:
        if spec.id is not None and spec.id in seen:
            raise UsageError(
                "--prompts", f"{path}:{spec.line}: duplicate id {spec.id!r} (line {seen[spec.id]})"
            )
        if spec.id is not None:
            seen[spec.id] = spec.line
    return specs


def _json_line(raw: str, where: str, index: int, number: int) -> PromptSpec:
    try:
        row = json.loads(raw)
    except json.JSONDecodeError as err:
        raise UsageError("--prompts", f"{where}: not valid JSON ({err.msg})") from None
    if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
        raise UsageError("--prompts", f'{where}: expected an object with a "prompt" text')
    if "tag" in row and "include" in row:  # GenEval's evaluation_metadata.jsonl
        return PromptSpec(index, number, row["prompt"], objects=_geneval_objects(row), geneval=row)
    unknown = sorted(set(row) - _JSONL_KEYS)
    if unknown:
        raise UsageError(
            "--prompts",
            f"{where}: unknown key {unknown[0]!r}; known: {', '.join(sorted(_JSONL_KEYS))}",
        )
    overrides = {k: row[k] for k in OVERRIDES if k in row}
    if isinstance(overrides.get("lora"), str):
        overrides["lora"] = [overrides["lora"]]
    ident = row.get("id")
    return PromptSpec(
        index,
        number,
        row["prompt"],
        str(ident) if ident is not None else None,
        row.get("objects"),
        overrides,
    )


def _geneval_objects(row: dict) -> list[str]:
    """GenEval's `include` as our object phrases ("2 red chair"); COCO classes outside our
    taxonomy are dropped by the parser and reported as unknown."""
    phrases = []
    for item in row.get("include") or []:
        words = [str(item.get("count", "")), str(item.get("color", "")), str(item["class"])]
        phrases.append(" ".join(w for w in words if w))
    return phrases
