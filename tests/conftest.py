"""Shared fixtures. Each concern lives in its own plugin module under tests/support."""

pytest_plugins = [
    "tests.support.blocking",
    "tests.support.localmodel",
    "tests.support.postgres",
    "tests.support.pages",
]
