"""Benchmarks of the asd pipeline (``python benchmarks/run.py``)."""
