"""Benchmarks for goenhance_nb (issue 15): ``python -m bench`` (``make bench``) writes BENCHMARKS.md.

Every figure P1-P8 is measured side by side with a baseline in the same run, on real processes:
the simulator (``python -m goenhance_nb.sim``), Jupyter kernels (jupyter_client), nbclient, and
JupyterLab in Debian's Chromium (tests/browser/browserkit.py). ``--smoke`` runs each figure once
with tiny sizes (tests/test_bench_smoke.py) to check that the harness works, never the numbers.
"""
