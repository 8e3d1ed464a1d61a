"""What switching adapters or weights costs: the switch, and the first render after it.

    .venv/bin/python benchmarks/switch.py [--rounds 3] [--graph session|trace]

On one pipeline of the shipped base model it cycles through adapter settings (none; the
`catalog` adapter fused at 1.0 and at 0.8; `catalog` 0.8 with `catalog-debiased` 0.5,
unfused), and for each times `adapters.apply` (loading an adapter the first time only), the
first render of one image after it (128 px, 20 steps, CFG 7.5), which builds the UNet's
graph for the new adapter state, and a second render. The first render's extra time over
the second is the graph's cost. `--graph trace` builds TorchScript traces instead of
onnxruntime sessions (the graph for other devices), for the comparison.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    from genimg import adapters, pipeline, traced
    from genimg.bench import PROMPT
    from genimg.render import render

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--graph", choices=["session", "trace"], default="session")
    args = ap.parse_args()
    if args.graph == "trace":
        traced._graph = traced._Trace
    pipe = pipeline.load_pipeline()
    pipe.set_progress_bar_config(disable=True)
    settings = [
        ("none", [], True),
        ("catalog:1.0 fused", ["catalog:1.0"], True),
        ("catalog:0.8 fused", ["catalog:0.8"], True),
        ("catalog:0.8 + catalog-debiased:0.5", ["catalog:0.8", "catalog-debiased:0.5"], False),
    ]
    times: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _, _ in settings}
    for _ in range(args.rounds + 1):  # the first round loads the adapters: not counted
        for name, specs, fuse in settings:
            pipe.unet._genimg_graphs.clear()  # every switch builds its graph, as a new state
            t0 = time.perf_counter()
            adapters.apply(pipe, [adapters.resolve(s) for s in specs], fuse=fuse)
            t1 = time.perf_counter()
            render(pipe, PROMPT, num_images=1)
            t2 = time.perf_counter()
            render(pipe, PROMPT, num_images=1)
            t3 = time.perf_counter()
            times[name].append((t1 - t0, t2 - t1, t3 - t2))
    print(f"graph: {args.graph}; medians of {args.rounds} rounds (s)")
    print(f"{'setting':38} {'apply':>6} {'1st render':>10} {'2nd render':>10} {'graph':>6}")
    for name, rows in times.items():
        apply_s, first, second = (statistics.median(col) for col in zip(*rows[1:], strict=True))
        print(f"{name:38} {apply_s:6.3f} {first:10.3f} {second:10.3f} {first - second:6.3f}")


if __name__ == "__main__":
    main()
