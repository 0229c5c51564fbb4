"""Predicted answer quality per model: routing outcomes, the learned predictor, and how routing is judged."""
