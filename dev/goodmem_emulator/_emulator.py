"""The :class:`Emulator` facade: one registry server plus synchronous test helpers."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from ._faults import Faults
from ._keys import KeyRing
from ._server import ACCESS_LOG_FORMAT, EmulatorApp
from ._stats import Stats
from ._store import LLMStore, owner_id_for_key


class Emulator:
    """An in-process GoodMem LLM registry.

    ``await start()`` serves it; the synchronous helpers (``stats()``,
    ``set_faults()``, ``records()``...) are thread-safe and may be called from
    any thread, also while the server runs in another thread's loop.
    """

    def __init__(
        self,
        api_keys: Iterable[str] = (),
        admin_keys: Iterable[str] = (),
        *,
        access_log: bool = False,
        conflict_body: str = "named",
    ) -> None:
        """`conflict_body`: "named" (409 bodies carry `existingLlmId` and `reason`) or "opaque" (a 409 body
        names nothing: `{"error": "ALREADY_EXISTS", "message": "already exists"}`, all the docs promise)."""
        self.api_keys: tuple[str, ...] = tuple(api_keys)
        self.admin_keys: tuple[str, ...] = tuple(admin_keys)
        self.keys = KeyRing(self.api_keys, self.admin_keys)
        self.store = LLMStore()
        self.faults = Faults()
        self.stats_store = Stats()
        self._app = EmulatorApp(
            api_keys=self.api_keys,
            admin_keys=self.admin_keys,
            store=self.store,
            faults=self.faults,
            stats=self.stats_store,
            conflict_body=conflict_body,
            keys=self.keys,
        )
        self.conflict_body = conflict_body
        self.app: web.Application = self._app.build()
        self._access_log = access_log
        self._runner: web.AppRunner | None = None
        self.base_url: str | None = None
        self.host: str | None = None
        self.port: int | None = None

    # -- lifecycle ---------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0, *, ssl_context: ssl.SSLContext | None = None) -> str:
        """Serve on ``host:port`` (``0`` picks a free port), over TLS with ``ssl_context`` (a private registry's
        certificate); return and set ``base_url``."""
        if self._runner is not None:
            raise RuntimeError("emulator already started")
        runner = web.AppRunner(
            self.app,
            access_log=logging.getLogger("aiohttp.access") if self._access_log else None,
            access_log_format=ACCESS_LOG_FORMAT,
            handle_signals=False,
            shutdown_timeout=0.5,
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        self.host, self.port = host, int(bound_port)
        url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
        scheme = "https" if ssl_context is not None else "http"
        self.base_url = f"{scheme}://{url_host}:{self.port}"
        return self.base_url

    async def stop(self) -> None:
        """Stop serving and close every connection (idempotent)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self.base_url = None

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- synchronous helpers ------------------------------------------------

    def owner_id(self, api_key: str) -> str:
        """The ownerId ``api_key`` acts as: its principal's while the key is known (also a key added with
        ``same_as``), else the one the emulator would derive from it."""
        principal = self.keys.principal(api_key)
        return principal.id if principal is not None else owner_id_for_key(api_key)

    def add_key(self, api_key: str, *, same_as: str | None = None, admin: bool | None = None) -> str:
        """Let ``api_key`` act as the principal of the known key ``same_as`` (key rotation: both work until one
        is revoked), or as a new principal of its own (``admin`` or not); return its ownerId. Like
        ``POST /_emulator/keys``."""
        return self.keys.add(api_key, same_as=same_as, admin=admin).id

    def revoke_key(self, api_key: str) -> None:
        """Forget ``api_key``: every request with it not yet authenticated (the check runs in the handler, after any
        injected latency) is a 401; its principal and entries stay. Like ``DELETE /_emulator/keys``."""
        self.keys.revoke(api_key)

    def principals(self) -> list[dict[str, Any]]:
        """``[{"ownerId", "admin", "keys": count}]``: every principal holding a key (never a key value)."""
        return self.keys.principals()

    def stats(self) -> dict[str, Any]:
        return self.stats_store.snapshot()

    def reset_stats(self) -> None:
        self.stats_store.reset()

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        """Replace the fault configuration (camelCase or snake_case keyword names)."""
        return self.faults.set(faults)

    def get_faults(self) -> dict[str, Any]:
        return self.faults.get()

    def clear_faults(self) -> None:
        self.faults.clear()

    def records(self) -> list[dict[str, Any]]:
        return self.store.records()
