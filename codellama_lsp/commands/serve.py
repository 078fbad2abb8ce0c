"""`codellama-lsp serve`: run the language server (stdio by default, ``--tcp HOST:PORT`` for debugging)."""

from __future__ import annotations

import sys


from ..config import choices
from . import CONFIG_HELP, add_model_arguments, runtime_values


def add_arguments(parser) -> None:
    transport = parser.add_mutually_exclusive_group()
    transport.add_argument("--stdio", action="store_true", help="talk LSP over stdin/stdout (the default)")
    transport.add_argument("--tcp", metavar="HOST:PORT", help="listen on a TCP port instead (one client; for debugging)")
    add_model_arguments(parser)
    parser.add_argument("--log-level", choices=choices("log_level"))
    parser.add_argument("--log-file", help="log file (default: server.log in the platform log directory)")
    parser.add_argument("--config", help=CONFIG_HELP)


def _tcp_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--tcp expects HOST:PORT, got {value!r}")
    return host or "127.0.0.1", int(port)


def run(args) -> int:
    from pathlib import Path

    from ..config import load_settings

    try:
        address = _tcp_address(args.tcp) if args.tcp else None
    except ValueError as exc:
        print(f"codellama-lsp: error: {exc}", file=sys.stderr)
        return 2
    cli = {"model": args.model, "quantization": args.quantization, "device": args.device,
           "log_level": args.log_level, **runtime_values(args)}
    settings, errors = load_settings(cli, Path(args.config) if args.config else None)

    from ..logs import setup_logging
    from ..lsp.server import create_server

    log_path = setup_logging(settings.log_level, log_document_text=settings.log_document_text,
                             log_file=Path(args.log_file) if args.log_file else None)
    server = create_server(settings)
    server.log_file = str(log_path) if log_path else None  # in codellama/status: the editors' health checks show it
    import logging

    log = logging.getLogger("codellama_lsp.serve")
    log.info("log file: %s", log_path)
    for error in errors:
        log.warning("settings: %s", error)
        print(f"codellama-lsp: warning: {error}", file=sys.stderr)
    if address:
        server.start_tcp(*address)
    else:
        server.start_io()
    return 0
