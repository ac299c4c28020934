"""``python -m goodmem_emulator`` / ``goodmem-emulator``: serve the registry emulator."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from ._emulator import Emulator
from ._server import CONFLICT_BODIES

ENV_API_KEYS = "GOODMEM_EMULATOR_API_KEYS"
ENV_ADMIN_KEYS = "GOODMEM_EMULATOR_ADMIN_KEYS"


def _env_keys(name: str) -> list[str]:
    return [k.strip() for k in os.environ.get(name, "").split(",") if k.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="goodmem-emulator", description="Serve an emulated GoodMem LLM registry.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument(
        "--api-key",
        action="append",
        default=[],
        dest="api_keys",
        help=f"an ordinary API key (repeatable; also ${ENV_API_KEYS}, comma separated)",
    )
    parser.add_argument(
        "--admin-key",
        action="append",
        default=[],
        dest="admin_keys",
        help=f"an admin API key (repeatable; also ${ENV_ADMIN_KEYS}, comma separated)",
    )
    parser.add_argument(
        "--conflict-body",
        choices=CONFLICT_BODIES,
        default="named",
        help="named: 409 bodies carry existingLlmId and reason (default); opaque: a 409 body names nothing",
    )
    args = parser.parse_args(argv)
    args.api_keys = args.api_keys + _env_keys(ENV_API_KEYS)
    args.admin_keys = args.admin_keys + _env_keys(ENV_ADMIN_KEYS)
    if not args.api_keys and not args.admin_keys:
        parser.error(f"give at least one --api-key or --admin-key (or set ${ENV_API_KEYS} / ${ENV_ADMIN_KEYS})")
    return args


async def _serve(args: argparse.Namespace) -> None:
    emu = Emulator(
        api_keys=args.api_keys, admin_keys=args.admin_keys, access_log=True, conflict_body=args.conflict_body
    )
    base_url = await emu.start(host=args.host, port=args.port)
    print(f"goodmem-emulator listening on {base_url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await emu.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
