"""Datasets: MGSV-EC annotation CSVs, predictions JSONL, split re-drawing, training batches, synthetic data."""
