"""The classifier service: deterministic task, language, complexity and token features."""
