"""Run the emulator app on a real uvicorn server: in a background thread (tests, ``build --emulator``)
or blocking in the foreground (``pixmake emulator``).

We bind the listening socket ourselves so that port 0 yields a known free port before uvicorn starts, and
we hand the app a ``close_connection`` hook that finds the client's uvicorn protocol and closes its
transport: that is how "task created, connection dropped before any response" becomes a real transport
error on the client instead of a 500.

A pytest fixture::

    @pytest.fixture(scope="session")
    def emulator_server() -> Iterator[EmulatorServer]:
        with EmulatorServer() as server:
            yield server

    @pytest.fixture
    def emulator(emulator_server: EmulatorServer) -> EmulatorServer:
        emulator_server.emulator.reset(EmulatorConfig())
        return emulator_server
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Final

import uvicorn

from pixmake.emulator.app import create_app
from pixmake.emulator.config import DEFAULT_CONFIG, EmulatorConfig
from pixmake.emulator.state import Emulator
from pixmake.errors import ConfigError

__all__ = ["EmulatorServer", "serve"]

_START_TIMEOUT: Final = 10.0
_STOP_TIMEOUT: Final = 5.0


class _Connections:
    """Gives the app a way to close one client connection of a running uvicorn server."""

    def __init__(self) -> None:
        self.server: uvicorn.Server | None = None

    def close(self, client: tuple[str, int] | None) -> bool:
        """Close the transport of the connection from ``client``; runs on the server's event loop."""
        if self.server is None or client is None:
            return False
        for connection in list(self.server.server_state.connections):
            if tuple(getattr(connection, "client", None) or ()) == tuple(client):
                connection.transport.close()
                return True
        return False


def _listen(host: str, port: int, *, scheme: str = "http") -> tuple[socket.socket, str]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto says TCP,
    # and without it Nagle + delayed ACK add 40 ms to every response (socket.create_server passes 0).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    bound_port = sock.getsockname()[1]
    shown_host = f"[{host}]" if family == socket.AF_INET6 else host
    return sock, f"{scheme}://{shown_host}:{bound_port}"


class _Server(uvicorn.Server):
    """uvicorn's server plus a callback once it accepts connections (instead of polling ``started``)."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start as uvicorn does, then report readiness."""
        await super().startup(sockets=sockets)
        if self.started:
            self.on_started()


def _uvicorn_server(emulator: Emulator, on_started: Callable[[], None], tls: tuple[str, str] | None = None) -> _Server:
    connections = _Connections()
    app = create_app(emulator, close_connection=connections.close)
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,  # never reconfigure the host application's logging
        log_level="warning",
        access_log=False,
        proxy_headers=False,  # nothing sits in front of the emulator; saves work on every request
        date_header=False,  # the app sends its own, from the emulator's clock
        timeout_graceful_shutdown=1,  # a slow download must not hold up shutdown
        timeout_keep_alive=30,
        ssl_certfile=None if tls is None else tls[0],
        ssl_keyfile=None if tls is None else tls[1],
    )
    server = _Server(config, on_started)
    connections.server = server
    return server


class EmulatorServer:
    """The emulator on a real socket, served by uvicorn in a daemon thread; use as a context manager."""

    def __init__(
        self,
        config: EmulatorConfig = DEFAULT_CONFIG,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
        tls: tuple[str, str] | None = None,
    ) -> None:
        """Prepare (not start) a server; ``port=0`` picks a free port, shown in ``url`` once entered.

        ``tls`` is a (certificate chain, private key) pair of PEM files: the server speaks HTTPS (for tests
        of certificate checks).
        """
        self.emulator = Emulator(config, clock=clock)
        self.host, self.port = host, port
        self._tls = tls
        self.url = ""
        self._server: _Server | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    def __enter__(self) -> EmulatorServer:
        """Bind, start uvicorn in a thread and wait until it accepts connections."""
        self._socket, self.url = _listen(self.host, self.port, scheme="http" if self._tls is None else "https")
        self.port = int(self.url.rsplit(":", 1)[1])
        self._ready.clear()
        self._server = _uvicorn_server(self.emulator, self._ready.set, self._tls)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name=f"emulator {self.url}",
            daemon=True,
        )
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT):
            self.__exit__(None, None, None)
            raise RuntimeError(f"the emulator did not start on {self.url}")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop uvicorn (open requests get 1 s), join its thread and close the socket."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(_STOP_TIMEOUT)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None


def serve(
    config: EmulatorConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8787,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the emulator in the foreground until SIGINT/SIGTERM; never prints.

    ``on_ready(url)`` is called once the server accepts connections (the CLI prints the URL there). On
    Ctrl-C uvicorn shuts down gracefully and then re-raises the signal, so ``KeyboardInterrupt`` propagates.
    Raises :class:`~pixmake.errors.ConfigError` if it cannot listen on ``host:port`` (e.g. the port is taken).
    """
    try:
        sock, url = _listen(host, port)
    except OSError as error:
        raise ConfigError(f"the emulator cannot listen on {host}:{port}: {error.strerror or error}") from error
    server = _uvicorn_server(Emulator(config, unique_ids=True), lambda: on_ready(url) if on_ready is not None else None)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
