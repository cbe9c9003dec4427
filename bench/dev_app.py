"""``http.app`` for the bench-only langgraph configs: the lag probe on the server's loop."""

from bench.lag import create_app

app = create_app()
