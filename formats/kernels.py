"""Numba kernels of the fast codec path. Bit patterns in, bit patterns out.

Every kernel returns the index of the first bad group (or -1) instead of
raising, so the Python wrapper can raise a FormatError that names it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

U64_1 = np.uint64(1)


@njit(cache=True)
def kept_masks(main_bits, m, n, values):  # noqa: ANN001, ANN201 - numba kernels stay untyped
    """Per group: bitmask of kept positions (occupied, then the lowest unoccupied ones as
    padding) and the kept values in position order. Returns (masks, first bad group or -1).

    Branch-free inner loops (random masks defeat the branch predictor); `values`
    needs one spare element at the end, which the last group may scribble on.
    """
    n_groups = main_bits.size // m
    masks = np.empty(n_groups, np.uint32)
    for g in range(n_groups):
        base = g * m
        mask = 0
        count = 0
        for j in range(m):
            bit = np.int64(main_bits[base + j] != 0)
            mask |= bit << j
            count += bit
        if count > n:
            return masks, g
        need = n - count
        for j in range(m):
            take = (1 - ((mask >> j) & 1)) & np.int64(need > 0)
            mask |= take << j
            need -= take
        vi = g * n
        for j in range(m):
            values[vi] = main_bits[base + j]  # padding slots read a zero element
            vi += (mask >> j) & 1
        masks[g] = mask
    return masks, -1


@njit(cache=True)
def count_non_finite(bits, exponent_mask):
    """Elements whose exponent field is all ones (Inf or NaN)."""
    em = bits.dtype.type(exponent_mask)
    count = 0
    for i in range(bits.size):
        if bits[i] & em == em:
            count += 1
    return count


@njit(cache=True)
def ranks_from_masks(masks, m, binom):
    """Colex rank of each kept mask: sum of C(c_i, i) over its set bits, i from 1."""
    ranks = np.empty(masks.size, np.uint64)
    for g in range(masks.size):
        mask = np.int64(masks[g])
        r = 0
        i = 0
        for j in range(m):
            bit = (mask >> j) & 1
            i += bit
            r += binom[j, i] * bit
        ranks[g] = np.uint64(r)
    return ranks


@njit(cache=True)
def positions_from_masks(masks, n):
    out = np.empty(masks.size * n, np.uint64)
    k = 0
    for g in range(masks.size):
        mask = np.int64(masks[g])
        j = 0
        while mask:
            if mask & 1:
                out[k] = np.uint64(j)
                k += 1
            mask >>= 1
            j += 1
    return out


@njit(cache=True)
def joint_words(ranks, groups, c):
    """word = r_0 + r_1*C + ... (C^groups < 2^63, so uint64 arithmetic is exact)."""
    n_words = (ranks.size + groups - 1) // groups
    words = np.zeros(n_words, np.uint64)
    cc = np.uint64(c)
    for w in range(n_words):
        word = np.uint64(0)
        scale = np.uint64(1)
        for i in range(w * groups, min(ranks.size, (w + 1) * groups)):
            word += ranks[i] * scale
            scale *= cc
        words[w] = word
    return words


@njit(cache=True)
def pack_bits(fields, widths, total_bits):
    """LSB-first packing of fields (each < 2^63) into (total_bits + 7) // 8 bytes."""
    out = np.zeros((total_bits + 7) // 8 + 16, np.uint8)
    pos = 0
    for i in range(fields.size):
        value = fields[i]
        width = widths[i]
        while width > 0:
            part = min(width, 32)
            chunk = value & ((U64_1 << np.uint64(part)) - U64_1)
            value >>= np.uint64(part)
            chunk <<= np.uint64(pos & 7)
            byte = pos >> 3
            while chunk:
                out[byte] |= np.uint8(chunk & np.uint64(0xFF))
                chunk >>= np.uint64(8)
                byte += 1
            pos += part
            width -= part
    return out[: (total_bits + 7) // 8]


@njit(inline="always")
def read_field(meta64, bit, width):
    """Field of `width` <= 63 bits at stream bit `bit` of a little-endian uint64 view."""
    word = bit >> 6
    off = bit & 63
    x = meta64[word] >> np.uint64(off)
    if off + width > 64:
        x |= meta64[word + 1] << np.uint64(64 - off)
    return x & ((U64_1 << np.uint64(width)) - U64_1)


def make_table_run(pm: int, pn: int, exponent_mask: int):  # noqa: ANN201 - a dispatcher
    """Rank decoding by table lookup of `span` raw bits per super-group of pm elements
    (pn kept), with the sizes compiled in as constants; also counts non-finite values
    (exponent all ones; `exponent_mask` 0: integers).

    Constant trip counts let LLVM unroll and vectorise the zero fill and the
    scatter: about 3x faster than the generic loop on 2:4 and 8:16. Closures are
    not disk-cached by Numba, so each process compiles the few it uses.
    Returns (first bad super-group or -1, non-finite count).
    """
    em = exponent_mask

    @njit
    def run(meta64, bit, count, span, valid, table, values, out):
        mask = (U64_1 << np.uint64(span)) - U64_1
        non_finite = 0
        for s in range(count):
            word = bit >> 6
            off = bit & 63
            x = meta64[word] >> np.uint64(off)
            if off + span > 64:
                x |= meta64[word + 1] << np.uint64(64 - off)
            index = np.int64(x & mask)
            bit += span
            if not valid[index]:
                return s, non_finite
            block = out[s * pm : s * pm + pm]
            for j in range(pm):
                block[j] = 0
            row = table[index]
            vi = s * pn
            for k in range(pn):
                v = values[vi + k]
                block[row[k]] = v
                if em:
                    non_finite += (v & em) == em
        return -1, non_finite

    return run


@njit(cache=True)
def first_bad_field(meta64, bit, count, width, c):
    for q in range(count):
        if np.int64(read_field(meta64, bit + q * width, width)) >= c:
            return q
    return 0


@njit(cache=True)
def unrank_into(r, n, m, binom, positions):
    """Colex unrank by the greedy rule: largest c < m with C(c, i) <= r, for i = n..1."""
    c = m - 1
    for i in range(n, 0, -1):
        while binom[c, i] > r:
            c -= 1
        positions[i - 1] = c
        r -= binom[c, i]
        c -= 1


@njit(cache=True)
def decode_rank_generic(meta64, n_groups, m, n, width, c, binom, values, out):
    positions = np.empty(n, np.int64)
    for g in range(n_groups):
        r = np.int64(read_field(meta64, g * width, width))
        if r >= c:
            return g
        unrank_into(r, n, m, binom, positions)
        for k in range(n):
            out[g * m + positions[k]] = values[g * n + k]
    return -1


@njit(cache=True)
def decode_joint(
    meta64, n_groups, m, n, groups, word_bits, tail_bits, c, binom, table, values, out
):
    """Mixed-radix words of `groups` ranks; `table` (rank -> positions) may be empty."""
    positions = np.empty(n, np.int64)
    use_table = table.shape[0] == c
    cc = np.uint64(c)
    bit = 0
    g = 0
    while g < n_groups:
        count = min(groups, n_groups - g)
        width = word_bits if count == groups else tail_bits
        word = read_field(meta64, bit, width)
        limit = np.uint64(1)
        for _ in range(count):
            limit *= cc
        if word >= limit:
            return g
        bit += width
        for _ in range(count):
            r = np.int64(word % cc)
            word //= cc
            if use_table:
                for k in range(n):
                    out[g * m + np.int64(table[r, k])] = values[g * n + k]
            else:
                unrank_into(r, n, m, binom, positions)
                for k in range(n):
                    out[g * m + positions[k]] = values[g * n + k]
            g += 1
    return -1


@njit(cache=True)
def decode_bitmask(meta64, n_groups, m, n, values, out):
    for g in range(n_groups):
        mask = np.int64(read_field(meta64, g * m, m))
        vi = g * n
        count = 0
        for j in range(m):
            if (mask >> j) & 1:
                count += 1
                if count > n:
                    return g
                out[g * m + j] = values[vi]
                vi += 1
        if count != n:
            return g
    return -1


@njit(cache=True)
def decode_positional(meta64, n_groups, m, n, width, values, out):
    for g in range(n_groups):
        previous = -1
        for k in range(n):
            j = np.int64(read_field(meta64, (g * n + k) * width, width))
            if j <= previous or j >= m:
                return g
            previous = j
            out[g * m + j] = values[g * n + k]
    return -1


# --- K:256 outlier ranks: up to ~200-bit integers as 8 limbs of 32 bits ------------------

LIMBS = 8  # 256 bits: C(256, 64) < 2^197


@njit(cache=True)
def _limbs_greater(table, c, i, r):
    """C(c, i) > r, both as little-endian 32-bit limbs."""
    for q in range(LIMBS - 1, -1, -1):
        a = table[c, i, q]
        if a != r[q]:
            return a > r[q]
    return False


@njit(cache=True)
def _limbs_subtract(r, table, c, i):
    borrow = 0
    for q in range(LIMBS):
        d = r[q] - table[c, i, q] - borrow
        borrow = 1 if d < 0 else 0
        r[q] = d + (borrow << 32)


@njit(cache=True)
def outlier_ranks_decode(meta64, rows, lengths, ks, widths, table, out_index, cols):
    """Unrank every block's slot positions; out_index gets flat element indices.

    Returns (row, block) of the first rank out of range, or (-1, -1).
    """
    r = np.zeros(LIMBS, np.int64)
    bit = 0
    slot = 0
    for row in range(rows):
        start = 0
        for b in range(lengths.size):
            length = lengths[b]
            k = ks[b]
            width = widths[b]
            for q in range(LIMBS):
                take = min(32, width - 32 * q)
                r[q] = np.int64(read_field(meta64, bit + 32 * q, take)) if take > 0 else 0
            bit += width
            if not _limbs_greater(table, length, k, r):  # rank >= C(L, K)
                return row, b
            c = length - 1
            for i in range(k, 0, -1):
                while _limbs_greater(table, c, i, r):
                    c -= 1
                out_index[slot + i - 1] = row * cols + start + c
                _limbs_subtract(r, table, c, i)
                c -= 1
            slot += k
            start += length
    return -1, -1


@njit(cache=True)
def outlier_ranks_encode(slots, ks, widths, table, fields, field_widths):
    """Colex rank of each block's slots ([rows, sum(ks)] block-relative positions),
    emitted as 32-bit chunk fields (LSB chunk first) for pack_bits."""
    r = np.zeros(LIMBS, np.int64)
    f = 0
    for row in range(slots.shape[0]):
        col = 0
        for b in range(ks.size):
            r[:] = 0
            for i in range(1, ks[b] + 1):
                c = slots[row, col + i - 1]
                carry = 0
                for q in range(LIMBS):
                    s = r[q] + table[c, i, q] + carry
                    carry = s >> 32
                    r[q] = s & 0xFFFFFFFF
            col += ks[b]
            width = widths[b]
            q = 0
            while width > 0:
                take = min(32, width)
                fields[f] = np.uint64(r[q])
                field_widths[f] = take
                f += 1
                width -= take
                q += 1
    return f
