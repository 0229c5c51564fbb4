"""The simulated OpenAI-compatible provider used for demos and tests."""
