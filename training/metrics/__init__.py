"""Evaluation metrics computed the way the reference tools compute them (placeholder)."""
