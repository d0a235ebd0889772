"""Benchmark harness of the Isthmus libraries (``python bench/run.py LIB``); see ``run.py``."""
