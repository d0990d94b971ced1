"""``codegen-lsp serve``: run the language server over stdio (default) or TCP.

In stdio mode nothing but protocol messages reaches standard output: ``sys.stdout`` is
pointed at standard error before the server starts, and logging goes to standard error or
``--log-file``. TCP listens on loopback unless ``--host`` names another address.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys

HELP = "run the language server (stdio by default, or --tcp --port N)"

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``serve``."""
    p.add_argument("--stdio", action="store_true", help="talk over stdin/stdout (the default)")
    p.add_argument("--tcp", action="store_true", help="listen on a TCP port instead of stdio")
    p.add_argument("--host", default="127.0.0.1", help="TCP address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=2087, help="TCP port (default 2087)")
    p.add_argument("--log-file", help="write the log here instead of standard error")
    p.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv: protocol too)"
    )


def setup_logging(log_file: str | None, verbose: int) -> None:
    """Log to standard error or a file; never to standard output."""
    handler: logging.Handler
    if log_file:
        handler = logging.FileHandler(log_file, encoding="utf-8", errors="backslashreplace")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)
    logging.getLogger("codegen_lsp").setLevel(logging.DEBUG if verbose else logging.INFO)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    """Serve until the client exits (stdio) or until SIGINT/SIGTERM (TCP: one session per
    connection); then end the process at once with the exit code (stdio: LSP's, 0 after
    ``shutdown``, 1 without; TCP: 0)."""
    setup_logging(args.log_file, args.verbose)
    log = logging.getLogger("codegen_lsp.server")
    from codegen_lsp.engine.loader import load_engine
    from codegen_lsp.server.features import create_server
    from codegen_lsp.server.transport import serve_stdio, serve_tcp

    if args.tcp:
        if not _is_loopback(args.host):
            log.warning("listening on %s: reachable from other machines", args.host)
        code = serve_tcp(lambda: create_server(load_engine), args.host, args.port)
    else:
        server = create_server(load_engine)
        protocol_out = sys.stdout.buffer
        sys.stdout = sys.stderr  # stray prints must not corrupt the protocol stream
        code = serve_stdio(server, sys.stdin.buffer, protocol_out)
    log.info("exiting with code %d", code)
    # The session is over and the worker stopped; tearing down an interpreter with torch
    # loaded takes seconds, which an editor waiting for its server to exit should not pay.
    logging.shutdown()
    sys.stderr.flush()
    os._exit(code)
