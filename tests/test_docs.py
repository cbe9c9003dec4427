"""Docs that must not drift from the code: the graph diagram and the env var list."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
ENV_VAR = re.compile(
    r"\"((?:AGENT|OPENAI|PG|SHUTDOWN|LOCALMODEL|LOCAL_MODEL|CHECKPOINTER|LANGSMITH|READY)_[A-Z0-9_]+"
    r"|DATABASE_URL)\""
)


def test_readme_diagram_is_generated_from_the_graph() -> None:
    check = subprocess.run(
        [sys.executable, "scripts/diagram.py"], cwd=PROJECT, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr


def test_every_env_var_the_code_reads_is_in_env_example() -> None:
    example = (PROJECT / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", example, re.MULTILINE))
    sources = [*PROJECT.joinpath("src").rglob("*.py"), PROJECT / "scripts" / "dev.sh"]
    read = {name for path in sources for name in ENV_VAR.findall(path.read_text())}
    read.discard("LANGSMITH_TRACING")
    assert read, "the scan found no env vars at all"
    assert sorted(read - documented) == []
