"""Loading open_clip models and encoding text prompts."""
