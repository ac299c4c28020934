"""Helpers for tests: run an :class:`Emulator` in a background thread.

Synchronous clients (the official SDK's ``Goodmem``, ``httpx.Client``...)
cannot share the test's event loop, so the emulator gets a thread and a loop
of its own::

    emu = Emulator(api_keys=["k"], admin_keys=["admin"])
    with run_in_thread(emu) as base_url:
        ...
        emu.stats()          # the helpers are thread-safe
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterable, Iterator

from ._emulator import Emulator

__all__ = ["run_in_thread"]


@contextlib.contextmanager
def run_in_thread(
    emulator: Emulator | None = None,
    *,
    api_keys: Iterable[str] = (),
    admin_keys: Iterable[str] = (),
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout: float = 10.0,
    conflict_body: str = "named",
) -> Iterator[str]:
    """Serve ``emulator`` (or a new one built from the keys) in a daemon thread.

    Yields the base URL; on exit stops the server, closes every connection,
    stops the loop and joins the thread. ``conflict_body`` ("named" or
    "opaque", see :class:`Emulator`) applies to an emulator built here.
    """
    if emulator is None:
        emulator = Emulator(api_keys=api_keys, admin_keys=admin_keys, conflict_body=conflict_body)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []

    def _run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(emulator.start(host=host, port=port))
        except BaseException as exc:
            failure.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())

    thread = threading.Thread(target=_run, name="goodmem-emulator", daemon=True)
    thread.start()
    try:
        if not started.wait(startup_timeout):
            raise TimeoutError("goodmem emulator did not start in time")
        if failure:
            raise failure[0]
        assert emulator.base_url is not None
        yield emulator.base_url
    finally:
        if thread.is_alive() and not failure:
            fut = asyncio.run_coroutine_threadsafe(emulator.stop(), loop)
            try:
                fut.result(timeout=startup_timeout)
            finally:
                loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=startup_timeout)
        if not thread.is_alive():
            loop.close()
