"""Evaluation: test scores and a baseline, training curves, the run's verdict, the metrics gate.

Imports nothing by itself.
"""
