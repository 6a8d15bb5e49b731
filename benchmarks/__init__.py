"""Benchmarks of lrsl-rt: latency/throughput against PyTorch and Optimum (``latency.py``) and accuracy
of the PyTorch checkpoint against the exported bundles (``accuracy.py``).

Run them as scripts from the checkout (``python benchmarks/latency.py --help``); they are not part of
the installed package and tests only smoke-run them (``tests/test_benchmarks.py``).
"""
