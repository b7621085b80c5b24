"""Dataset adapters, splits and image decoding."""
