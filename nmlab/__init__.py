"""nmlab: a laboratory for N:M sparse weight formats.

Subpackages: :mod:`nmlab.formats` (spec-exact codec), :mod:`nmlab.pruning`
(masks on real LMs), :mod:`nmlab.simulator` (cycle-approximate accelerator).
"""

__version__ = "0.1.0"
