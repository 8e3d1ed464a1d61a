"""The `genimg` command. Each subcommand lives in the module of its stage.

A stage module exposes `configure(parser)` and `run(args) -> int`; it is imported only
when its subcommand runs, so `genimg --help` and `genimg catalog` never import torch.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

from genimg.errors import UsageError

# name -> (module, one-line help). Order is the data flow.
COMMANDS: dict[str, tuple[str, str]] = {
    "catalog": ("genimg.catalog", "render a procedural catalog split (imagefolder)"),
    "train-base": ("genimg.train_base", "train the base (open) Stable Diffusion model"),
    "train-lora": ("genimg.lora", "train a LoRA adapter on a catalog"),
    "train-checker": ("genimg.checker_train", "train the CLIP attribute checker"),
    "render": ("genimg.render", "render images for one prompt"),
    "check": ("genimg.check", "score requested objects in images"),
    "batch": ("genimg.batch", "render a prompts file"),
    "compare": ("genimg.compare", "open model vs catalog model report"),
    "runs": ("genimg.runs", "list and show recorded runs"),
    "bench": ("genimg.bench", "measure speed against plain diffusers"),
}


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors raised as UsageError: one line, no usage dump."""

    def error(self, message: str):
        raise UsageError("", message)


# Errors of the machine, not of the code: said in one line, as bad input is.
_OS_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EROFS)


def _top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<14} {text}" for name, (_, text) in COMMANDS.items())
    return argparse.ArgumentParser(
        prog="genimg",
        description="Catalog-conditioned text-to-image with a CLIP attribute checker.",
        epilog=f"commands:\n{lines}\n\nexample:\n  genimg catalog --out data/demo --n 16 --seed 0",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser = _top_parser()
        if argv and argv[0] not in ("-h", "--help"):
            parser.print_usage(sys.stderr)
            print(
                f"genimg: error: unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)}",
                file=sys.stderr,
            )
            return 2
        parser.print_help()
        return 0 if argv else 2
    name = argv[0]
    module_name, text = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise
        print(f"genimg {name}: error: not built yet", file=sys.stderr)
        return 2
    parser = _Parser(
        prog=f"genimg {name}",
        description=text,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.configure(parser)
    try:
        return int(module.run(parser.parse_args(argv[1:])) or 0)
    except UsageError as err:
        print(f"genimg {name}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in _OS_ERRORS:
            raise
        where = f" ({err.filename})" if err.filename else ""
        print(f"genimg {name}: error: {err.strerror or err}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"genimg {name}: interrupted", file=sys.stderr)
        return 130
