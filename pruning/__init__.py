"""Masks and weight updates on real causal LMs (magnitude, Wanda, SparseGPT, ...).

Pure math: :mod:`masks` (patterns, mask selection), :mod:`scores` (magnitude, Wanda),
:mod:`sparsegpt` (Hessian, OBS sweep), :mod:`outliers` (K:256 and unstructured outlier
masks), :mod:`rebalance` (SmoothQuant scales), :mod:`variance` (Variance Correction),
:mod:`ebft` (blockwise fine-tuning of one block). Glue: :mod:`methods` (per-layer
functions), :mod:`sequential` (block-by-block driver, checkpoints), :mod:`models`
(packaged GGUF -> cached safetensors), :mod:`data` (packaged corpora), :mod:`perplexity`,
:mod:`storage` (packed mask files), :mod:`pipeline` and :mod:`cli` (``nmlab prune`` /
``nmlab eval``).
"""
