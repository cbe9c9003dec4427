#!/usr/bin/env bash
# Run the agent under `langgraph dev`. With no OPENAI_API_KEY and no OPENAI_BASE_URL,
# start the bundled local model first so a fresh machine works offline.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -f .env ]]; then
  set -a; source .env; set +a
fi

if [[ -z "${OPENAI_API_KEY:-}" && -z "${OPENAI_BASE_URL:-}" ]]; then
  port="${LOCAL_MODEL_PORT:-8765}"
  .venv/bin/python -m localmodel --host 127.0.0.1 --port "$port" &
  local_model_pid=$!
  trap 'kill "$local_model_pid" 2>/dev/null || true' EXIT
  export OPENAI_BASE_URL="http://127.0.0.1:${port}/v1"
  export AGENT_MODEL="${AGENT_MODEL:-local-model}"
  echo "agent: OPENAI_API_KEY is not set, so the agent talks to the BUNDLED LOCAL MODEL at" \
       "${OPENAI_BASE_URL} (canned, deterministic replies; not a real LLM)." \
       "Set OPENAI_API_KEY in .env to use OpenAI." >&2
fi

export LANGGRAPH_CLI_NO_ANALYTICS="${LANGGRAPH_CLI_NO_ANALYTICS:-1}"
.venv/bin/langgraph dev "$@"
