"""The OpenAI-compatible HTTP gateway: /v1/chat/completions and /v1/models in front of RouterService."""
