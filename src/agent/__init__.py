"""Async-safe LangGraph agent template."""
