"""Tile-level cycle model (Numba): one pass builds the folds, a second replays them in time.

A fold is one mapping of the array. Weight-stationary (ws): rows hold the (compressed)
reduction dimension, cols the outputs, the tokens stream through; loop order: output
columns outer, reduction inner (SCALE-Sim's order). Output-stationary (os): rows hold
tokens, cols outputs, the compressed reduction streams.

Per fold, ideal compute cycles follow SCALE-Sim's systolic timing:
ws: 2R + C + T - 2 (R cycles weight fill, T tokens, R-1 skew, C-1 drain);
os: T_k + R + C - 2. Extra cycles come from four causes, each counted apart:
SRAM bandwidth (inside the fold), DRAM bandwidth and metadata decoding (between folds:
the next fold's data is fetched and decoded while the current one computes, double
buffered) and the outlier side path (overlapped with the fold, the excess stalls).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

# indices of the result vector
TOTAL, PROLOGUE, EPILOGUE, COMPUTE = 0, 1, 2, 3
STALL_DRAM, STALL_SRAM, STALL_DECODER, STALL_OUTLIER = 4, 5, 6, 7
DRAM_W, DRAM_IN, DRAM_PSUM_RD, DRAM_OUT_WR, FOLDS, DECODED_GROUPS = 8, 9, 10, 11, 12, 13
N_RESULTS = 14


@nb.njit(cache=True)
def _share(total: np.int64, cum_hi: np.int64, cum_lo: np.int64, whole: np.int64) -> np.int64:
    """Bytes of a stream that fall in elements [cum_lo, cum_hi) of `whole`: shares sum exactly."""
    return (total * cum_hi) // whole - (total * cum_lo) // whole


@nb.njit(cache=True)
def simulate_folds(
    output_stationary: bool,
    rows: int,
    cols: int,
    tokens: int,
    k_eff: int,
    n_out: int,
    window: float,  # dense activations per kept weight: M/N (1 for dense)
    n_keep: int,  # kept weights per group (0: dense, no metadata)
    group_m: int,
    act_bytes: int,
    acc_bytes: int,
    out_bytes: int,
    weight_bytes: np.int64,  # all weight streams of the container, as stored
    token_tile: int,  # ws: tokens streamed per fold (os: the array rows)
    weight_once: bool,  # ws: all weights / os: a column slice stay on chip across token tiles
    input_once: bool,  # the activations of a token tile stay on chip across column folds
    psum_on_chip: bool,  # ws: partial sums of a token tile x column fold fit the output buffer
    w_sram_bw: float,
    in_sram_bw: float,
    out_sram_bw: float,
    dram_bw: float,
    dec_groups_per_cycle: float,
    dec_latency: int,
    outliers: np.int64,
    side_macs_per_cycle: float,
) -> np.ndarray:
    res = np.zeros(N_RESULTS)
    if output_stationary:
        token_tile = rows
        row_folds = (tokens + rows - 1) // rows
        tiles = 1
    else:
        row_folds = (k_eff + rows - 1) // rows
        tiles = (tokens + token_tile - 1) // token_tile
    col_folds = (n_out + cols - 1) // cols
    n_folds = tiles * row_folds * col_folds
    compute = np.zeros(n_folds)
    sram_stall = np.zeros(n_folds)
    bytes_in = np.zeros(n_folds)
    bytes_out = np.zeros(n_folds)
    dec = np.zeros(n_folds)  # decoder cycles needed before the fold (ws) or inside it (os)
    side = np.zeros(n_folds)
    whole = np.int64(k_eff) * np.int64(n_out)
    k_dense = k_eff * window
    f = 0
    groups_total = 0.0
    for f_all in range(tiles * col_folds):
        tt = f_all // col_folds
        cf = f_all % col_folds
        t_n = min(token_tile, tokens - tt * token_tile)  # tokens of this tile (ws)
        cu = min(cols, n_out - cf * cols)
        col_lo = np.int64(cf * cols) * np.int64(k_eff)
        col_hi = col_lo + np.int64(cu) * np.int64(k_eff)
        for rf in range(row_folds):
            ru = min(rows, (tokens if output_stationary else k_eff) - rf * rows)
            if not output_stationary:
                # ws: tile = ru compressed rows x cu cols of the weight
                lo = col_lo + np.int64(rf * rows) * np.int64(cu)
                hi = lo + np.int64(ru) * np.int64(cu)
                wb = float(_share(weight_bytes, hi, lo, whole))
                c = 2.0 * rows + cols + t_n - 2.0
                fill = math.ceil(wb / w_sram_bw)
                st = float(max(0, fill - rows))
                in_demand = ru * window * act_bytes
                out_demand = cu * acc_bytes * (2.0 if rf > 0 else 1.0)
                rate = max(1.0, in_demand / in_sram_bw, out_demand / out_sram_bw)
                st += math.ceil(t_n * rate) - t_n
                b_w = wb if ((not weight_once) or tt == 0) else 0.0
                b_i = 0.0
                if (not input_once) or cf == 0:
                    b_i = t_n * ru * window * act_bytes
                b_p = 0.0
                b_out = 0.0
                if rf == row_folds - 1:
                    b_out = float(t_n * cu * out_bytes)
                elif not psum_on_chip:
                    b_out = float(t_n * cu * acc_bytes)
                if (not psum_on_chip) and rf > 0:
                    b_p = float(t_n * cu * acc_bytes)
                if n_keep > 0:
                    g = math.ceil(ru * cu / n_keep)
                    groups_total += g
                    dec[f] = g / dec_groups_per_cycle + dec_latency
                if outliers > 0:
                    side[f] = t_n * float(_share(outliers, hi, lo, whole)) / side_macs_per_cycle
            else:
                # os: tile = ru tokens x cu outputs, the whole compressed reduction streams
                c = float(k_eff + rows + cols - 2)
                ws_bytes = float(_share(weight_bytes, col_hi, col_lo, whole))
                w_rate = ws_bytes / k_eff  # weight (+metadata) bytes per streamed step
                in_demand = ru * window * act_bytes
                rate = max(1.0, in_demand / in_sram_bw, w_rate / w_sram_bw)
                st = float(math.ceil(k_eff * rate) - k_eff)
                b_w = 0.0
                if (not weight_once) or rf == 0:
                    b_w = ws_bytes
                b_i = 0.0
                if (not input_once) or cf == 0:
                    b_i = ru * k_dense * act_bytes
                b_p = 0.0
                b_out = float(ru * cu * out_bytes)
                if n_keep > 0:
                    g = math.ceil(cu * k_eff / n_keep)
                    groups_total += g
                    dec[f] = g / dec_groups_per_cycle + dec_latency
                if outliers > 0:
                    side[f] = (
                        ru * float(_share(outliers, col_hi, col_lo, whole)) / side_macs_per_cycle
                    )
            compute[f] = c
            sram_stall[f] = st
            bytes_in[f] = b_w + b_i + b_p
            res[DRAM_W] += b_w
            res[DRAM_IN] += b_i
            res[DRAM_PSUM_RD] += b_p
            bytes_out[f] = b_out
            f += 1

    # Replay in time. One DRAM channel serves fetches first (each issued when its buffer
    # half frees, i.e. when the previous fold starts); write-backs queue in a backlog the
    # channel drains whenever it would otherwise be idle, and at the end (epilogue).
    backlog = 0.0
    written_at = 0.0  # when the newest write-back joined the backlog
    drained_to = 0.0  # idle channel time up to here has been used for write-backs
    dram_free = bytes_in[0] / dram_bw
    fetch_start = 0.0
    fetch_done = dram_free
    dec_free = 0.0
    end_prev = 0.0
    for f in range(n_folds):
        if output_stationary:
            ready = fetch_done
        else:
            # The decoder works on metadata as it arrives (throughput-bound from the start
            # of the fetch); its pipeline latency is paid once the last group is in.
            lat = dec_latency if dec[f] > 0 else 0.0
            dec_start = max(fetch_start, dec_free)
            dec_free = dec_start + dec[f] - lat
            ready = max(fetch_done, dec_free + lat)
        start = max(end_prev, ready)
        if f == 0:
            res[PROLOGUE] = start
        else:
            gap = start - end_prev
            dram_part = min(gap, max(0.0, fetch_done - end_prev))
            res[STALL_DRAM] += dram_part
            res[STALL_DECODER] += gap - dram_part
        busy = compute[f] + sram_stall[f]
        if output_stationary and dec[f] > busy:
            res[STALL_DECODER] += dec[f] - busy
            busy = dec[f]
        if side[f] > busy:
            res[STALL_OUTLIER] += side[f] - busy
            busy = side[f]
        end = start + busy
        res[COMPUTE] += compute[f]
        res[STALL_SRAM] += sram_stall[f]
        if f + 1 < n_folds:
            fetch_start = max(dram_free, start)
            w0 = max(dram_free, written_at, drained_to)
            if fetch_start > w0:
                backlog = max(0.0, backlog - (fetch_start - w0) * dram_bw)
                drained_to = fetch_start
            fetch_done = fetch_start + bytes_in[f + 1] / dram_bw
            dram_free = fetch_done
        w0 = max(dram_free, written_at, drained_to)
        if end > w0:  # the channel idles after the next fetch until this fold ends
            backlog = max(0.0, backlog - (end - w0) * dram_bw)
            drained_to = end
        if bytes_out[f] > 0:
            backlog += bytes_out[f]
            written_at = end
        end_prev = end
    t_free = max(dram_free, end_prev)
    res[EPILOGUE] = t_free + backlog / dram_bw - end_prev
    res[TOTAL] = end_prev + res[EPILOGUE]
    res[FOLDS] = n_folds
    res[DECODED_GROUPS] = groups_total
    res[DRAM_OUT_WR] = bytes_out.sum()
    return res
