"""Prompts as data: prompt sets (templates and class names), class-specific descriptions, WaffleCLIP's random descriptors.
"""
