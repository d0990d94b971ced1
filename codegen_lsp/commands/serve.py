"""``codegen-lsp serve``: run the language server over stdio (default) or TCP.

In stdio mode nothing but protocol messages reaches standard output: ``sys.stdout`` is
pointed at standard error before the server starts, and logging goes to standard error or
``--log-file``. TCP listens on loopback unless ``--host`` names another address.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import logging
import os
import socket
import sys

HELP = "run the language server (stdio by default, or --tcp --port N)"

CACHE_WRITE_WAIT_S = 120.0  # the most an exit waits for a weight-cache entry being written
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``serve``."""
    p.add_argument("--stdio", action="store_true", help="talk over stdin/stdout (the default)")
    p.add_argument("--tcp", action="store_true", help="listen on a TCP port instead of stdio")
    p.add_argument("--host", default="127.0.0.1", help="TCP address (default 127.0.0.1)")
    p.add_argument(
        "--port", type=_port, default=2087, help="TCP port (default 2087; 0: a free one, logged)"
    )
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


def _port(text: str) -> int:
    """An argparse type: a TCP port number, 0 (a free port) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0-65535)")
    return port


def port_problem(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (in use, no such address), or None; checked
    before torch is imported, so a taken port costs no wait."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return f"cannot listen on {host}: {exc.strerror or exc}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (
                    f"port {port} on {host} is in use (another codegen-lsp serve?); "
                    "pick another with --port N"
                )
            return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


WAITING = (
    "codegen-lsp serve: waiting for an LSP client on standard input (an editor starts this "
    "command itself; Ctrl-C quits). To see a suggestion from a terminal, run 'codegen-lsp demo'."
)


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
    if args.tcp:
        problem = port_problem(args.host, args.port)
        if problem:
            print(f"codegen-lsp: error: {problem}", file=sys.stderr)
            return 2
    elif sys.stdin.isatty():
        print(WAITING, file=sys.stderr)
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
    # A weight-cache entry still being written (it starts when the model is ready) is
    # finished first: an editor closed right after starting would otherwise cut it every time.
    from codegen_lsp.engine.weight_cache import wait_for_writes

    wait_for_writes(timeout=CACHE_WRITE_WAIT_S)
    # The session is over and the worker stopped; tearing down an interpreter with torch
    # loaded takes seconds, which an editor waiting for its server to exit should not pay.
    logging.shutdown()
    sys.stderr.flush()
    os._exit(code)
