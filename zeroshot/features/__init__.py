"""Image and text features: extracted once, cached on disk, resumed after a kill, shared by every command.
"""
