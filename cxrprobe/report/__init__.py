"""Rendering results: terminal tables, files and plots."""
