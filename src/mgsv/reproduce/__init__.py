"""`mgsv reproduce`: from a fresh machine to the paper's tables (plan, data, estimate, runs, tables).

`plan.py` decides the runs, `data.py` prepares the datasets, `estimate.py` times a warm-up, `runner.py` trains and
evaluates resumably, `tables.py` writes results.json / results.md / report.html. docs/reproduce.md is the guide.
"""
