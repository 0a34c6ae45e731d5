"""CLIP-family models, a library (no Hydra, no pandas): the model, its config from the weights, checkpoints and
where they come from, the release table, backends for models beyond the family, tokenizer and preprocessing.
"""
