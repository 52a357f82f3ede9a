"""Reference LSB-first bit packing (spec section 5).

Field k of width w occupies stream bits [k*w, (k+1)*w); stream bit j is bit
(j mod 8) of byte floor(j / 8); a field's least significant bit comes first.
Equivalently the whole stream is the little-endian integer sum(v_k << off_k),
zero-padded to a whole byte.
"""

from __future__ import annotations

from .errors import FormatError
from .sizes import check_bitstream


class BitWriter:
    def __init__(self) -> None:
        self._out = bytearray()
        self._acc = 0  # bits not yet flushed, LSB first
        self._acc_bits = 0

    def write(self, value: int, width: int) -> None:
        if value < 0 or value >> width:
            raise FormatError(f"value {value} does not fit in {width} bits")
        self._acc |= value << self._acc_bits
        self._acc_bits += width
        while self._acc_bits >= 8:
            self._out.append(self._acc & 0xFF)
            self._acc >>= 8
            self._acc_bits -= 8

    @property
    def bit_length(self) -> int:
        return 8 * len(self._out) + self._acc_bits

    def to_bytes(self) -> bytes:
        tail = bytes([self._acc]) if self._acc_bits else b""
        return bytes(self._out) + tail


class BitReader:
    """Reads fields from a stream of exactly ceil(total_bits / 8) bytes."""

    def __init__(self, data: bytes, total_bits: int, what: str = "metadata") -> None:
        check_bitstream(data, total_bits, what)
        self._data = bytes(data)
        self._pos = 0

    def read(self, width: int) -> int:
        first, last = self._pos >> 3, (self._pos + width + 7) >> 3
        window = int.from_bytes(self._data[first:last], "little")
        self._pos += width
        return (window >> ((self._pos - width) & 7)) & ((1 << width) - 1)
