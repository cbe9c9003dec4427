"""``python -m bench.hosted_probe serve ...``: the self-hosted server plus the lag probe.

Exactly ``python -m agent serve``, except that the ASGI app built by
``agent.server.create_app`` is wrapped so that a :class:`bench.lag.LagProbe`
runs on the server's own event loop and ``GET /bench/lag`` reports it. The
server has no plug-in hook for this yet, so the wrapper replaces
``agent.server.create_app`` before ``agent.__main__`` looks it up. Cold start and drain are
measured on the unwrapped ``python -m agent serve``.
"""

from __future__ import annotations

import sys
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

import agent.__main__ as cli
import agent.server as server
from bench.lag import LagProbe


class WithLagProbe:
    """ASGI wrapper: ``/bench/lag`` is ours, everything else goes to the server."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.probe = LagProbe()
        self.probe.start()  # create_app runs on the server's loop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/bench/lag":
            request = Request(scope, receive)
            body: dict[str, Any] = self.probe.summary()
            if request.query_params.get("reset"):
                self.probe.reset()
            await JSONResponse(body)(scope, receive, send)
            return
        await self.app(scope, receive, send)


_create_app = server.create_app


def create_app_with_probe(*args: Any, **kwargs: Any) -> Any:
    return WithLagProbe(_create_app(*args, **kwargs))


# ``agent.__main__`` looks ``create_app`` up in ``agent.server`` when it serves
# (and, in older versions, imported it at module level): replace both.
server.create_app = create_app_with_probe
if hasattr(cli, "create_app"):
    cli.create_app = create_app_with_probe

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))
