"""Masks and weight updates on real causal LMs (magnitude, Wanda, SparseGPT, ...)."""
