"""Serve the demo page of a QA system: a question box, answers highlighted in their passages, the passages read.

`dpr-hf demo SYSTEM [--host 127.0.0.1] [--port 7860]` (SYSTEM: a system folder or a Hub id) loads the system once
and serves a gradio page until interrupted. Needs the `demo` extra: pip install 'dpr-hf[demo]'.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "system", help="a system folder written by QASystem.save_pretrained, or a Hub repo id"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on")
    parser.add_argument("--title", help="name shown on the page (default: SYSTEM)")


def run(args: argparse.Namespace) -> int:
    from ..demo.app import build_demo, require_gradio

    try:
        require_gradio()
    except ImportError as error:
        print(f"dpr-hf demo: error: {error}", file=sys.stderr)
        return 2
    build_demo(args.system, title=args.title).launch(
        server_name=args.host, server_port=args.port, share=False
    )
    return 0
