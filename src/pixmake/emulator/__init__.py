"""A faithful local stand-in for the ToAPIs async image API (toapis-api.md), with fault knobs and a ledger.

``app`` holds the HTTP behaviour, ``state`` the tasks/record/ledger, ``models`` the per-model request rules,
``render`` the placeholder PNGs and ``server`` the uvicorn runner. Typical use::

    with EmulatorServer(EmulatorConfig(p_500=0.2, seed=7)) as server:
        ...  # talk to server.url with any API key "sk-..."
        assert server.emulator.ledger.net_images == 4
"""

from __future__ import annotations

from pixmake.emulator.app import create_app
from pixmake.emulator.config import EmulatorConfig, config_from_mapping
from pixmake.emulator.server import EmulatorServer, serve
from pixmake.emulator.state import Emulator, Ledger, LedgerEntry, RecordedRequest

__all__ = [
    "Emulator",
    "EmulatorConfig",
    "EmulatorServer",
    "Ledger",
    "LedgerEntry",
    "RecordedRequest",
    "config_from_mapping",
    "create_app",
    "serve",
]
