"""The genimg web app: `python app.py [--host 127.0.0.1] [--port 7860]`, then open the URL.

Loads the shipped models once (or --model / --checker), builds the Gradio app and serves it
on this machine only, unless --host says otherwise. Ctrl-C or SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860, help="port (7860)")
    parser.add_argument("--model", default=None, help="diffusers folder or hub id (shipped)")
    parser.add_argument("--checker", default=None, help="CLIP checker folder (shipped)")
    parser.add_argument("--lora-dir", default="lora", help="adapter library (lora/)")
    parser.add_argument("--out", default="outputs", help="where renders go (outputs/)")
    parser.add_argument("--max-queue", type=int, default=16, help="waiting requests (16)")
    args = parser.parse_args(argv)

    from genimg import checker, pipeline, ui
    from genimg.errors import UsageError

    try:
        pipe = pipeline.load_pipeline(args.model or pipeline.DEFAULT_MODEL)
        check = checker.load_checker(args.checker or checker.DEFAULT_CHECKER)
    except UsageError as err:
        print(f"app.py: error: {err}", file=sys.stderr)
        return 2
    demo = ui.create_demo(pipe, check, args.lora_dir, args.out, max_queue=args.max_queue)
    # SIGTERM stops the app as Ctrl-C does, whenever it comes (even while still starting).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        ui.launch(demo, args.out, args.host, args.port, prevent_thread_lock=True)
        demo.block_thread()  # until Ctrl-C or SIGTERM
    except KeyboardInterrupt:
        pass
    finally:
        demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
