"""Decoding: the reference sampler, the slot budget, and the lossless parallel engine."""
