"""`python -m localmodel`: serve the offline chat model with uvicorn."""

from __future__ import annotations

import argparse
import os
import sys

import uvicorn

from localmodel.server import Settings, create_app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = Settings.from_env()
    parser = argparse.ArgumentParser(prog="python -m localmodel", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("LOCALMODEL_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("LOCALMODEL_PORT", 8765)))
    parser.add_argument(
        "--latency", type=float, default=env.latency, help="seconds before the first token"
    )
    parser.add_argument(
        "--token-rate", type=float, default=env.token_rate, help="tokens/s; 0 = no delay"
    )
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--access-log", action="store_true", help="log one line per request")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    settings = Settings(latency=max(0.0, args.latency), token_rate=max(0.0, args.token_rate))
    config = uvicorn.Config(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=args.access_log,
        # Many clients open at once under benchmarks; the default backlog drops some.
        backlog=4096,
        # Streams and "hang" faults would otherwise hold shutdown hostage.
        timeout_graceful_shutdown=1,
    )
    print(
        f"localmodel: http://{args.host}:{args.port}/v1 "
        f"(latency={settings.latency}s, token_rate={settings.token_rate}/s)",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
