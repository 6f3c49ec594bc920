"""Evaluation: the benchmark metrics (exactly as the official code) and scoring of predictions files."""
