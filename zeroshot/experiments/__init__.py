"""Prompt-engineering experiments on cached image features: the analyses `zeroshot prompts` runs.
"""
