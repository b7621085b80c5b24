"""cxrprobe: a feature cache and few-shot probes for CLIP encoders on chest X-rays."""

__version__ = "0.1.0"
