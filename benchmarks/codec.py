"""Codec throughput on a 4096x4096 fp16 matrix, against numpy.copyto in the same process.

Prints one JSON line. Throughput is GB/s of dense output (decode) or dense input
(encode); each figure is also given as a ratio to np.copyto of the same 32 MiB
measured here, since absolute seconds on a shared machine mean little.
Target (issue 2): decode >= 0.25x copyto on one core.

    python benchmarks/codec.py [--size 4096] [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from nmlab.formats import decode, encode  # noqa: E402
from nmlab.run import keep_largest  # noqa: E402


def best_of(fn, repeat: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def sparse_matrix(size: int, n: int, m: int, rng: np.random.Generator) -> np.ndarray:
    return keep_largest(rng.standard_normal((size, size)).astype(np.float16), n, m)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    result: dict = {"benchmark": "codec", "shape": [args.size, args.size], "dtype": "float16"}
    for pattern in ("8:16", "2:4"):
        n, m = (int(x) for x in pattern.split(":"))
        array = sparse_matrix(args.size, n, m, rng)
        gigabytes = array.nbytes / 1e9
        enc = encode(array, pattern)  # also compiles the kernels
        assert np.array_equal(decode(enc).view(np.uint16), array.view(np.uint16))
        target = np.empty_like(array)
        # interleave baseline and codec so both see the same machine load
        copy_s, encode_s, decode_s = [], [], []
        for _ in range(args.repeat):
            copy_s.append(best_of(lambda a=array, t=target: np.copyto(t, a), 1))
            encode_s.append(best_of(lambda a=array, p=pattern: encode(a, p), 1))
            decode_s.append(best_of(lambda e=enc: decode(e), 1))
        copy_t, enc_t, dec_t = min(copy_s), min(encode_s), min(decode_s)
        key = pattern.replace(":", "of")
        result[key] = {
            "copyto_gbps": round(gigabytes / copy_t, 3),
            "encode_gbps": round(gigabytes / enc_t, 3),
            "decode_gbps": round(gigabytes / dec_t, 3),
            "encode_vs_copyto": round(copy_t / enc_t, 3),
            "decode_vs_copyto": round(copy_t / dec_t, 3),
            "meta_bits_per_element": enc.bits_per_element()["meta"],
        }
    result["decode_target_met"] = all(
        result[k]["decode_vs_copyto"] >= 0.25 for k in ("8of16", "2of4")
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
