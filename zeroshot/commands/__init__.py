"""The commands: thin Hydra entry points over the shared pipeline (one module per command; none imports another).
"""
