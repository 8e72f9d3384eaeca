"""Accuracy evaluation: metrics (metrics.py), runs through the real pipeline (runner.py) and
reports (report.py)."""
