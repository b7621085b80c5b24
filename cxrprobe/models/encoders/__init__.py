"""Encoders behind one interface (``LoadedModel``): each back-end module builds its models
with their weights identity, preprocessing, embedding width and, where there is one, text
tower. ``cxrprobe.models.loading.load_model`` picks the back-end from the model name."""
