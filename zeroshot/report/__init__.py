"""Benchmark reports, built from run records only: tables, published numbers, cross-dataset views, comparisons.
"""
