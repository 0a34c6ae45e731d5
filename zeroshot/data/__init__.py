"""Datasets, a library: readers for every on-disk layout, fingerprints, and the EvalDataset wrapper (no model code).
"""
