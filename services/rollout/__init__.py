"""Rollout service: one vLLM engine behind an HTTP API, and a worker consuming the tasks stream."""
