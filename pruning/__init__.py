"""Masks and weight updates on real causal LMs (magnitude, Wanda, SparseGPT, ...).

Pure math: :mod:`masks` (patterns, mask selection), :mod:`scores` (magnitude, Wanda),
:mod:`sparsegpt` (Hessian, OBS sweep). Glue: :mod:`methods` (per-layer functions),
:mod:`sequential` (block-by-block driver, checkpoints), :mod:`models` (packaged GGUF ->
cached safetensors), :mod:`data` (packaged corpora), :mod:`perplexity`, :mod:`storage`
(packed mask files), :mod:`pipeline` and :mod:`cli` (``nmlab prune`` / ``nmlab eval``).
"""
