"""Exact ranking metrics (AUC, average precision), patient bootstraps and statistics over seeds.

The lowest layer above the foundations: heads, training and evaluation all score with it, and
it imports nothing else of cxrprobe.
"""
