"""LRSL training pipeline (PyTorch): classifier, top-k mining, label-aware embedder, dev calibration.

Run from the checkout: ``python -m train --help``. Writes a checkpoint directory for ``python -m export``.
"""
