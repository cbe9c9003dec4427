"""JSON and Server-Sent Events encoding, shaped like the LangGraph API's.

Frames are ``event: <name>\\r\\ndata: <json>\\r\\n\\r\\n``, which is what
``langgraph_sdk.sse.SSEDecoder`` parses. Messages and other pydantic objects are
encoded with ``model_dump()``, as the LangGraph API does, so SDK callers get the
same dicts from either server.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import orjson

__all__ = ["dumps", "frame"]


def _default(obj: Any) -> Any:
    model_dump = getattr(obj, "model_dump", None)
    if callable(model_dump) and not isinstance(obj, type):
        return model_dump()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    as_dict = getattr(obj, "_asdict", None)
    if callable(as_dict):
        return as_dict()
    if isinstance(obj, BaseException):
        return {"error": type(obj).__name__, "message": str(obj)}
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if isinstance(obj, uuid.UUID):
        return str(obj)
    # A value we don't know must not break a response or an event stream.
    return repr(obj)


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, default=_default, option=orjson.OPT_NON_STR_KEYS)


def frame(event: str, data: Any) -> bytes:
    name = event.replace("\r", "").replace("\n", "").encode()
    return b"event: " + name + b"\r\ndata: " + dumps(data) + b"\r\n\r\n"
