"""Metrics in numpy, each checked against brute force: classification, retrieval, calibration, paired comparison.
"""
