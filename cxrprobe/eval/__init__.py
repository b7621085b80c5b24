"""Experiments on a cache: metrics, few-shot support sets, statistics."""
