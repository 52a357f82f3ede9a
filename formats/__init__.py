"""Bit-exact reference codec and fast paths for the nmlab N:M format (spec/format.md)."""

from .codec import decode, encode
from .container import load, read_header, save
from .encoded import EncodedTensor, OutlierStream, stream_totals
from .errors import FormatError
from .pattern import OutlierPattern, Pattern

__all__ = [
    "EncodedTensor",
    "FormatError",
    "OutlierPattern",
    "OutlierStream",
    "Pattern",
    "decode",
    "encode",
    "load",
    "read_header",
    "save",
    "stream_totals",
]
