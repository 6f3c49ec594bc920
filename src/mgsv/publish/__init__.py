"""Sharing trained models: a model card with the test metrics beside the paper's, and `mgsv push` to the Hub.

Resolving `hf:` references (downloads) is `mgsv.hub`, far below; publishing reads run folders and evaluation
results, so it sits above evaluation (docs/architecture.md, "Layers").
"""
