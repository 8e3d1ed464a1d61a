"""How often checkers call objects present in catalog images cut into shuffled tiles.

    python scripts/fragment_probe.py [CHECKER ...]   (default: the shipped checker)

For 1,000 rendered images of a split no leg trained on, cut into k x k tiles (k = 2, 4, 8)
put back in a random order, it prints per checker how often an object is called present
where it is whole inside one tile ("kept"), where a tile boundary cuts it ("cut": it should
be absent) and where it is not in the room ("absent"); k = 1 is the uncut image.
"""

from __future__ import annotations

import sys

import torch

from genimg import checker as ck
from genimg import checker_train as ct
from genimg.taxonomy import OBJECTS

DATA = "catalog:1000:424245:checker-eval"
GRIDS = (2, 4, 8)


def _rate(calls: torch.Tensor, where: torch.Tensor) -> str:
    return f"{calls[where].float().mean():.3f} (n={int(where.sum())})" if where.any() else "-"


def main() -> None:
    imgs, rows, ds = ct._load(DATA, 64)
    lab = ct.labels_for(rows)
    frag = ct.fragment_labels(rows, list(GRIDS), ds.images.shape[1])
    there = lab["present"].bool()
    views, x, every = {1: (imgs, there)}, imgs.float(), torch.arange(len(rows))
    for k in GRIDS:
        g = torch.Generator().manual_seed(k)
        cut, _ = ct.fragment(x, lab, every, {k: frag[k]}, 1.0, g)
        views[k] = (cut.round().to(torch.uint8), frag[k]["present"])
    asked = [{"object": o} for o in OBJECTS]
    for path in sys.argv[1:] or [str(ck.DEFAULT_CHECKER)]:
        checker = ck.load_checker(path)
        for k, (images, kept) in views.items():
            results = ck.check(checker, images.permute(0, 2, 3, 1).numpy(), asked)
            calls = torch.tensor([[o["present"] for o in r["objects"]] for r in results])
            print(
                f"{path}  {k}x{k}: present called on kept {_rate(calls, kept)}, "
                f"cut {_rate(calls, there & ~kept)}, absent {_rate(calls, ~there)}",
                flush=True,
            )


if __name__ == "__main__":
    main()
