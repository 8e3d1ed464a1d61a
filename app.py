"""The genimg web app: `python app.py [--host 127.0.0.1] [--port 7860]`, then open the URL.

Loads the shipped models once (or --model / --checker), builds the Gradio app and serves it
on this machine only, unless --host says otherwise. Ctrl-C or SIGTERM stops it. The page is
served while the models load; a request made meanwhile waits for them.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from concurrent.futures import Future

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

    # SIGTERM stops the app as Ctrl-C does, whenever it comes (even while still starting).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    from genimg import pipeline, web  # gradio, not torch: the models' libraries load later
    from genimg.errors import UsageError

    try:
        folder = pipeline.check_model(args.model or pipeline.DEFAULT_MODEL)
    except UsageError as err:
        print(f"app.py: error: {err}", file=sys.stderr)
        return 2
    # Serve first, then load the models (torch, diffusers and transformers take twice as long
    # to import as gradio): the page is up meanwhile, and a request made before the models
    # are there waits for them.
    pipe, check = Future(), Future()
    demo = web.create_demo(
        pipe, check, args.lora_dir, args.out, args.max_queue, pipeline.model_name(folder)
    )
    try:
        web.launch(demo, args.out, args.host, args.port, prevent_thread_lock=True)
        try:
            _load_models(pipe, check, folder, args.checker)
        except UsageError as err:
            print(f"app.py: error: {err}", file=sys.stderr)
            return 2
        demo.block_thread()  # until Ctrl-C or SIGTERM
    except KeyboardInterrupt:
        pass
    finally:
        demo.close()
    return 0


def _load_models(pipe: Future, check: Future, folder, checker_path) -> None:
    """Load the pipeline, then the checker, into their futures; a failure fails both."""
    from genimg import checker, pipeline

    try:
        pipe.set_result(pipeline.load_pipeline(folder))
        check.set_result(checker.load_checker(checker_path or checker.DEFAULT_CHECKER))
    except BaseException as err:
        for future in (pipe, check):
            if not future.done():
                future.set_exception(err)
        raise


if __name__ == "__main__":
    sys.exit(main())
