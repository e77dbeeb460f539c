"""LSTM and GRU kernels for the compiled decode loop (the models: toolssm.models.rnn, torch.nn.LSTM / GRU).

Weights are read from the torch module as they are (float32); the matrix products accumulate in float32, the
whole live batch at once, as torch's sgemm does (`matmul_tn` for the gates, over weights stored transposed and
vectorized along the output rows; `matmul_nt` for the head, 4x4 register tiles vectorized along k); biases,
gates and activations are computed in float32, as torch computes them (sigmoid and tanh through a vectorized
float32 exp, 16 lanes a vector), and the state is float32, as torch keeps it. So the engine's logits differ from
torch's by rounding only (about 1e-6 relative), and argmax can differ only at a near-tie (tests report the
margin there). The head's bias is added in float64. One precomputation: layer 0's input term is a lookup,
``T0[tok] = W_ih0 embed[tok] + b_ih0 + b_hh0`` (computed in float64 once per rollout, stored float32), since its
input is always one of V embeddings.

Speed notes. Every kernel is compiled with ``error_model="numpy"``: under numba's default (Python's), each
float division checks for a zero divisor and raises, a branch that keeps LLVM from vectorizing any loop that
divides. The cell's algebra is arranged so that an LSTM cell element takes two divisions, not five.

State layout, one float32 row per live episode: LSTM ``[h_0 .. h_{L-1}, c_0 .. c_{L-1}]``, GRU ``[h_0 ..
h_{L-1}]``, each of width D.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import torch


@nb.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def matmul_nt(W, X, k0, k1, G, n):
    """G[j, r] = sum_{k0 <= k < k1} W[r, k] X[j, k] for rows j < n (G = X W^T), float32 accumulation.

    Register tiles of 4 rows of W by 4 rows of X: 16 running sums, each W row loaded once for four episodes and
    each X row once for four outputs (one dot product at a time is bound by its two loads per multiply; the
    tile by the multiplies: 2x faster at batch 20, on par with torch's sgemm at this size, about 30 GMAC/s). LLVM
    vectorizes each of the 16 sums over k (fastmath); rows past the last full tile take the 4-by-1 and 1-by-1
    loops. Row slices keep the inner loops contiguous (a loop from a variable start is not vectorized)."""
    R = W.shape[0]
    R4 = R - R % 4
    j = 0
    while j + 4 <= n:
        x0, x1, x2, x3 = X[j, k0:k1], X[j + 1, k0:k1], X[j + 2, k0:k1], X[j + 3, k0:k1]
        for r in range(0, R4, 4):
            w0, w1, w2, w3 = W[r, k0:k1], W[r + 1, k0:k1], W[r + 2, k0:k1], W[r + 3, k0:k1]
            a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = np.float32(0.0)
            a20 = a21 = a22 = a23 = a30 = a31 = a32 = a33 = np.float32(0.0)
            for k in range(w0.shape[0]):
                p0, p1, p2, p3 = x0[k], x1[k], x2[k], x3[k]
                u = w0[k]
                a00 += u * p0
                a01 += u * p1
                a02 += u * p2
                a03 += u * p3
                u = w1[k]
                a10 += u * p0
                a11 += u * p1
                a12 += u * p2
                a13 += u * p3
                u = w2[k]
                a20 += u * p0
                a21 += u * p1
                a22 += u * p2
                a23 += u * p3
                u = w3[k]
                a30 += u * p0
                a31 += u * p1
                a32 += u * p2
                a33 += u * p3
            G[j, r], G[j + 1, r], G[j + 2, r], G[j + 3, r] = a00, a01, a02, a03
            G[j, r + 1], G[j + 1, r + 1], G[j + 2, r + 1], G[j + 3, r + 1] = a10, a11, a12, a13
            G[j, r + 2], G[j + 1, r + 2], G[j + 2, r + 2], G[j + 3, r + 2] = a20, a21, a22, a23
            G[j, r + 3], G[j + 1, r + 3], G[j + 2, r + 3], G[j + 3, r + 3] = a30, a31, a32, a33
        for r in range(R4, R):
            w0 = W[r, k0:k1]
            a00 = a01 = a02 = a03 = np.float32(0.0)
            for k in range(w0.shape[0]):
                u = w0[k]
                a00 += u * x0[k]
                a01 += u * x1[k]
                a02 += u * x2[k]
                a03 += u * x3[k]
            G[j, r], G[j + 1, r], G[j + 2, r], G[j + 3, r] = a00, a01, a02, a03
        j += 4
    while j < n:
        x0 = X[j, k0:k1]
        for r in range(0, R4, 4):
            w0, w1, w2, w3 = W[r, k0:k1], W[r + 1, k0:k1], W[r + 2, k0:k1], W[r + 3, k0:k1]
            a00 = a10 = a20 = a30 = np.float32(0.0)
            for k in range(w0.shape[0]):
                p0 = x0[k]
                a00 += w0[k] * p0
                a10 += w1[k] * p0
                a20 += w2[k] * p0
                a30 += w3[k] * p0
            G[j, r], G[j, r + 1], G[j, r + 2], G[j, r + 3] = a00, a10, a20, a30
        for r in range(R4, R):
            w0 = W[r, k0:k1]
            a00 = np.float32(0.0)
            for k in range(w0.shape[0]):
                a00 += w0[k] * x0[k]
            G[j, r] = a00
        j += 1


@nb.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def matmul_tn(WT, X, x0, G, n):
    """G[j, r] = sum_{k < K} X[j, x0 + k] WT[k, r] for rows j < n (G = X[:, x0:x0+K] WT), float32 accumulation;
    WT (K, R) is a weight matrix stored transposed, so that the sums run along the output rows.

    matmul_nt vectorizes each of its 16 sums over k, and each ends in a horizontal reduction of a 16-lane vector,
    which at K = 96 costs about as much as the sum's multiplies. Here the vector runs along the R outputs instead:
    a pass over the output row of 4 episodes adds 8 k's at once (g[r] += x[k] WT[k, r] + ... + x[k+7] WT[k+7, r]:
    8 weight loads, 4 loads and 4 stores of G, 32 multiply-adds a vector), with no reduction at all (about 40
    GMAC/s here against 31-33 for matmul_nt at K = 96, R = 288 or 384, batch 20). Rows past the last full 4 take
    the 1-row loop (four aliased rows would defeat LLVM's vectorization). Best where R is a few hundred: for
    a small R (a head of V rows) matmul_nt is faster."""
    K, R = WT.shape
    K8 = K - K % 8
    j = 0
    while j + 4 <= n:
        g0, g1, g2, g3 = G[j], G[j + 1], G[j + 2], G[j + 3]
        y0, y1, y2, y3 = X[j, x0 : x0 + K], X[j + 1, x0 : x0 + K], X[j + 2, x0 : x0 + K], X[j + 3, x0 : x0 + K]
        for r in range(R):
            g0[r] = g1[r] = g2[r] = g3[r] = np.float32(0.0)
        for k in range(0, K8, 8):
            w0, w1, w2, w3 = WT[k], WT[k + 1], WT[k + 2], WT[k + 3]
            w4, w5, w6, w7 = WT[k + 4], WT[k + 5], WT[k + 6], WT[k + 7]
            a0, a1, a2, a3 = y0[k], y0[k + 1], y0[k + 2], y0[k + 3]
            a4, a5, a6, a7 = y0[k + 4], y0[k + 5], y0[k + 6], y0[k + 7]
            b0, b1, b2, b3 = y1[k], y1[k + 1], y1[k + 2], y1[k + 3]
            b4, b5, b6, b7 = y1[k + 4], y1[k + 5], y1[k + 6], y1[k + 7]
            c0, c1, c2, c3 = y2[k], y2[k + 1], y2[k + 2], y2[k + 3]
            c4, c5, c6, c7 = y2[k + 4], y2[k + 5], y2[k + 6], y2[k + 7]
            d0, d1, d2, d3 = y3[k], y3[k + 1], y3[k + 2], y3[k + 3]
            d4, d5, d6, d7 = y3[k + 4], y3[k + 5], y3[k + 6], y3[k + 7]
            for r in range(R):
                u0, u1, u2, u3, u4, u5, u6, u7 = w0[r], w1[r], w2[r], w3[r], w4[r], w5[r], w6[r], w7[r]
                g0[r] = g0[r] + a0 * u0 + a1 * u1 + a2 * u2 + a3 * u3 + a4 * u4 + a5 * u5 + a6 * u6 + a7 * u7
                g1[r] = g1[r] + b0 * u0 + b1 * u1 + b2 * u2 + b3 * u3 + b4 * u4 + b5 * u5 + b6 * u6 + b7 * u7
                g2[r] = g2[r] + c0 * u0 + c1 * u1 + c2 * u2 + c3 * u3 + c4 * u4 + c5 * u5 + c6 * u6 + c7 * u7
                g3[r] = g3[r] + d0 * u0 + d1 * u1 + d2 * u2 + d3 * u3 + d4 * u4 + d5 * u5 + d6 * u6 + d7 * u7
        for k in range(K8, K):
            w0 = WT[k]
            a0, b0, c0, d0 = y0[k], y1[k], y2[k], y3[k]
            for r in range(R):
                u0 = w0[r]
                g0[r] += a0 * u0
                g1[r] += b0 * u0
                g2[r] += c0 * u0
                g3[r] += d0 * u0
        j += 4
    while j < n:
        g0, y0 = G[j], X[j, x0 : x0 + K]
        for r in range(R):
            g0[r] = np.float32(0.0)
        for k in range(0, K8, 8):
            w0, w1, w2, w3 = WT[k], WT[k + 1], WT[k + 2], WT[k + 3]
            w4, w5, w6, w7 = WT[k + 4], WT[k + 5], WT[k + 6], WT[k + 7]
            a0, a1, a2, a3 = y0[k], y0[k + 1], y0[k + 2], y0[k + 3]
            a4, a5, a6, a7 = y0[k + 4], y0[k + 5], y0[k + 6], y0[k + 7]
            for r in range(R):
                g0[r] = (g0[r] + a0 * w0[r] + a1 * w1[r] + a2 * w2[r] + a3 * w3[r] + a4 * w4[r] + a5 * w5[r]
                         + a6 * w6[r] + a7 * w7[r])  # fmt: skip
        for k in range(K8, K):
            w0, a0 = WT[k], y0[k]
            for r in range(R):
                g0[r] += a0 * w0[r]
        j += 1


_LOG2E, _LN2_HI, _LN2_LO = 1.4426950408889634, 0.6931471803691238, 1.9082149292705877e-10


@nb.njit(cache=True, nogil=True, fastmath=True, error_model="numpy", inline="always")
def exp64(x):
    """exp(x) in float64 to about 1 ulp, in straight-line code LLVM vectorizes in a loop (libm's exp is a call per
    element: without Intel's SVML, numba does not vectorize math.exp). x = k ln2 + r, |r| <= ln2/2; exp(r) by its
    Taylor series to degree 13 (error below 1e-16 relative); 2^k from the exponent bits. x is clamped to +-700."""
    return _exp_within(min(max(x, -700.0), 700.0))


@nb.njit(cache=True, nogil=True, fastmath=True, error_model="numpy", inline="always")
def _exp_within(v):
    """exp64 of a v the caller has clamped to within +-700 (a second clamp is not folded away by LLVM)."""
    k = np.floor(v * _LOG2E + 0.5)
    r = (v - k * _LN2_HI) - k * _LN2_LO
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return p * np.int64((np.int64(k) + 1023) << 52).view(np.float64)


@nb.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def vexp(x, out):
    """out[t] = exp64(x[t]) for every t, vectorized."""
    for t in range(x.shape[0]):
        out[t] = exp64(x[t])


_F32 = np.float32
_LOG2E32, _LN2_HI32, _LN2_LO32 = _F32(1.4426950408889634), _F32(0.693359375), _F32(-2.12194440e-4)
_HALF32, _ONE32, _TWO32, _BIAS32 = _F32(0.5), _F32(1.0), _F32(2.0), np.int32(127)
_EXP32_C = tuple(_F32(1.0 / f) for f in (5040.0, 720.0, 120.0, 24.0, 6.0, 2.0, 1.0, 1.0))  # 1/7!, ..., 1/0!


@nb.njit(cache=True, nogil=True, fastmath=True, error_model="numpy", inline="always")
def _exp32_within(v):
    """exp(v) in float32 for a float32 v the caller has clamped to within +-87, in straight-line float32 code LLVM
    vectorizes 16 lanes wide (exp64's is 8): v = k ln2 + r, |r| <= ln2/2 (ln2 split in two, Cody-Waite), exp(r)
    by its Taylor series to degree 7 (truncation below 6e-9 relative, a tenth of float32's epsilon), 2^k from
    the exponent bits."""
    k = np.floor(v * _LOG2E32 + _HALF32)
    r = (v - k * _LN2_HI32) - k * _LN2_LO32
    c7, c6, c5, c4, c3, c2, c1, c0 = _EXP32_C
    p = c7 * r + c6
    p = p * r + c5
    p = p * r + c4
    p = p * r + c3
    p = p * r + c2
    p = p * r + c1
    p = p * r + c0
    return p * np.int32((np.int32(k) + _BIAS32) << np.int32(23)).view(np.float32)


@nb.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def vexp32(x, out):
    """out[t] = exp(x[t]) in float32 (x clamped to +-87), vectorized: the gates' exp (tested against libm)."""
    for t in range(x.shape[0]):
        out[t] = _exp32_within(min(max(x[t], _F32(-87.0)), _F32(87.0)))


@nb.njit(cache=True, nogil=True, error_model="numpy")
def head_logits(Wh, bh, X, n, logits):
    """logits[j] = bh + Wh X[j, :D] for j < n (float32 accumulation, the bias added in float64, stored float32)."""
    matmul_nt(Wh, X, 0, Wh.shape[1], logits, n)
    for j in range(n):
        for v in range(Wh.shape[0]):
            logits[j, v] = np.float32(bh[v] + np.float64(logits[j, v]))


_CLAMP = _F32(29.0)  # |x| of exp(x) in the gates: a product of three (1 + exp(29)) stays finite in float32 (exp(87)
# < 3.4e38); a gate at the clamp is within 2.6e-13 of 0 or 1 (see docs/engine.md, Exactness)


@nb.njit(cache=True, nogil=True, fastmath=True, error_model="numpy", inline="always")
def _gate_exp(x):
    """exp(x) in float32 with x clamped to +-_CLAMP."""
    return _exp32_within(min(max(x, -_CLAMP), _CLAMP))


@nb.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def _lstm_gate_exps(g, b, scale, e):
    """e[r] = exp(-scale[r] (g[r] + b[r])) in float32, the argument clamped to +-_CLAMP: sigmoid(x) = 1 / (1 + e)
    with scale 1 (gates i, f, o), tanh(x) = (1 - e) / (1 + e) with scale 2 (gate g). (A pass of its own: the
    exps fused into _lstm_cell's pass ran 15 % slower, four exps an element in flight at once.)"""
    for r in range(g.shape[0]):
        e[r] = _gate_exp(-scale[r] * (g[r] + b[r]))


@nb.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def _lstm_cell(e, c, h, x):
    """The new cell and hidden state from the gate exps e = [e_i, e_f, e_g, e_o] (see _lstm_gate_exps), all float32
    (torch's gate math is float32 too); c and h are updated in place, h copied to x (the next layer's input).

    i = 1 / (1 + e_i), f = 1 / (1 + e_f), g = (1 - e_g) / (1 + e_g), so c' = f c + i g =
    (c (1 + e_i)(1 + e_g) + (1 - e_g)(1 + e_f)) / ((1 + e_f)(1 + e_i)(1 + e_g)), and h = o tanh(c') =
    (1 - e_c) / ((1 + e_o)(1 + e_c)) with e_c = exp(-2 c'): two divisions instead of one a sigmoid or tanh (five).
    No overflow: every exponent is within +-_CLAMP."""
    D = c.shape[0]
    for k in range(D):
        pi, pf, eg = _ONE32 + e[k], _ONE32 + e[D + k], e[2 * D + k]
        pig = pi * (_ONE32 + eg)
        cn = (c[k] * pig + (_ONE32 - eg) * pf) / (pf * pig)
        c[k] = cn
        ec = _gate_exp(-_TWO32 * cn)
        hn = (_ONE32 - ec) / ((_ONE32 + e[3 * D + k]) * (_ONE32 + ec))
        h[k] = hn
        x[k] = hn


@nb.njit(cache=True, nogil=True, error_model="numpy")
def lstm_step(mp, toks, state, scratch, logits, n):
    """One step of rows j < n. Per layer: the gates' pre-activations of every row by one matmul_tn, then per row
    one pass for the gates' exps (the bias, or layer 0's lookup, added) and one for c and h, all float32."""
    T0, WT0, WT, B, Wh, bh, scale = mp  # (V, 4D) f32; (D, 4D) f32 W_hh0^T; (L-1, 2D, 4D) f32 [W_ih | W_hh]^T of
    # layers 1..; (L, 4D) f32; (V, D) f32; (V,) f64; (4D,) f32: 1 for the sigmoid gates, 2 for g
    L, D = B.shape[0], WT0.shape[0]
    X, G, e = scratch  # (B, 2D) f32 [input, h_old]; (B, 4D) f32 the gates' matmul; (4D,) f32 their exps
    for l in range(L):
        hoff, coff = l * D, (L + l) * D
        if l == 0:  # layer 0's input term is the lookup T0[tok] (biases included)
            matmul_tn(WT0, state, hoff, G, n)
        else:
            for j in range(n):
                for k in range(D):
                    X[j, D + k] = state[j, hoff + k]
            matmul_tn(WT[l - 1], X, 0, G, n)
        for j in range(n):
            _lstm_gate_exps(G[j], T0[toks[j]] if l == 0 else B[l], scale, e)
            _lstm_cell(e, state[j, coff : coff + D], state[j, hoff : hoff + D], X[j, :D])
    head_logits(Wh, bh, X, n, logits)


@nb.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def _gru_cell(gi, bi, gh, bh, h_old, h, x, e):
    """torch.nn.GRU's cell, in float32 as torch's, from the matmuls gi = W_i x, gh = W_h h_old and the biases bi, bh
    (gates r, z, n in that order): r = s(gi_r + bi_r + gh_r + bh_r), z likewise, n = tanh(gi_n + bi_n + r (gh_n +
    bh_n)), h' = (1 - z) n + z h_old = (e_z (1 - e_n) + h_old (1 + e_n)) / ((1 + e_z)(1 + e_n)) with e_z = exp(-x_z),
    e_n = exp(-2 x_n): two divisions. h' goes to h and x. Two passes, r and e_z into e (2D,), then n and h': with
    all three exps in one pass the cell ran about 12 % slower (as the LSTM's, see _lstm_gate_exps)."""
    D = h.shape[0]
    for k in range(D):
        xr = (gi[k] + bi[k]) + (gh[k] + bh[k])
        xz = (gi[D + k] + bi[D + k]) + (gh[D + k] + bh[D + k])
        e[k] = _ONE32 / (_ONE32 + _gate_exp(-xr))
        e[D + k] = _gate_exp(-xz)
    for k in range(D):
        xn = (gi[2 * D + k] + bi[2 * D + k]) + e[k] * (gh[2 * D + k] + bh[2 * D + k])
        en = _gate_exp(-_TWO32 * xn)
        ez = e[D + k]
        hn = (ez * (_ONE32 - en) + h_old[k] * (_ONE32 + en)) / ((_ONE32 + ez) * (_ONE32 + en))
        h[k] = hn
        x[k] = hn


@nb.njit(cache=True, nogil=True, error_model="numpy")
def gru_step(mp, toks, state, scratch, logits, n):
    """One step of rows j < n, batched as lstm_step: per layer two matmul_tn's, then the cell row by row."""
    T0, WiT, Bi, WhT, Bh_, Wh, bh = mp  # T0 (V, 3D) = W_i0 embed + b_i0; WiT, WhT (L, D, 3D) f32 (transposed);
    # Bi, Bh_ (L, 3D) f32
    L, D = WiT.shape[0], WiT.shape[1]
    X, H, GI, GH, zero, e = scratch  # (B, D) f32 the input, the old state; (B, 3D) f32 x2 the matmuls; (3D,) f32 0;
    # (2D,) f32 the cell's r and e_z
    for l in range(L):
        off = l * D
        if l > 0:
            matmul_tn(WiT[l], X, 0, GI, n)
        for j in range(n):
            for k in range(D):
                H[j, k] = state[j, off + k]
        matmul_tn(WhT[l], H, 0, GH, n)
        for j in range(n):  # layer 0's input term is the lookup T0[tok] (its bias included)
            gi, bi = (zero, T0[toks[j]]) if l == 0 else (GI[j], Bi[l])
            _gru_cell(gi, bi, GH[j], Bh_[l], H[j], state[j, off : off + D], X[j], e)
    head_logits(Wh, bh, X, n, logits)


def _f32(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().to(torch.float32).numpy())


def _f64(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().to(torch.float64).numpy())


def _head(model) -> tuple[np.ndarray, np.ndarray]:
    """The output layer as (float32 (V, D) matrix, float64 bias); a tied head (the embedding) has bias 0."""
    w, b = model.head_weights()
    return _f32(w), (_f64(b) if b is not None else np.zeros(w.shape[0]))


def lstm_pack(model):
    """(kernel params, state width, scratch(B) -> the kernel's work arrays) of a toolssm LSTM."""
    rnn = model.rnn
    L, D = rnn.num_layers, rnn.hidden_size
    E = model.embed.weight.detach().double()
    w_ih0 = rnn.weight_ih_l0.detach().double()
    b0 = rnn.bias_ih_l0.detach().double() + rnn.bias_hh_l0.detach().double()
    T0 = (E @ w_ih0.T + b0).float().numpy()  # (V, 4D), computed in float64, rounded to float32
    WT0 = np.ascontiguousarray(_f32(rnn.weight_hh_l0).T)  # (D, 4D)
    WT = np.zeros((max(L - 1, 1), 2 * D, 4 * D), np.float32)  # layers 1..L-1: [W_ih | W_hh]^T
    B = np.zeros((L, 4 * D), np.float32)
    for l in range(1, L):
        WT[l - 1, :D] = _f32(getattr(rnn, f"weight_ih_l{l}")).T
        WT[l - 1, D:] = _f32(getattr(rnn, f"weight_hh_l{l}")).T
        B[l] = _f64(getattr(rnn, f"bias_ih_l{l}")) + _f64(getattr(rnn, f"bias_hh_l{l}"))  # rounded once
    scale = np.ones(4 * D, np.float32)
    scale[2 * D : 3 * D] = 2.0  # gate g: tanh(x) from exp(-2x)
    mp = (np.ascontiguousarray(T0), WT0, WT, B, *_head(model), scale)
    z = np.zeros
    return mp, 2 * L * D, lambda b: (z((b, 2 * D), np.float32), z((b, 4 * D), np.float32), z(4 * D, np.float32))


def lstm_state(model, state) -> np.ndarray:
    h, c = state  # (B, L, D) x2
    return np.concatenate([_f32(h).reshape(h.shape[0], -1), _f32(c).reshape(c.shape[0], -1)], 1)


def gru_pack(model):
    rnn = model.rnn
    L, D = rnn.num_layers, rnn.hidden_size
    E = model.embed.weight.detach().double()
    T0 = (E @ rnn.weight_ih_l0.detach().double().T + rnn.bias_ih_l0.detach().double()).float().numpy()  # (V, 3D)
    WiT = np.zeros((L, D, 3 * D), np.float32)  # transposed, for matmul_tn
    Bi = np.zeros((L, 3 * D), np.float32)
    WhT = np.zeros((L, D, 3 * D), np.float32)
    Bh_ = np.zeros((L, 3 * D), np.float32)
    for l in range(L):
        WhT[l] = _f32(getattr(rnn, f"weight_hh_l{l}")).T
        Bh_[l] = _f64(getattr(rnn, f"bias_hh_l{l}"))
        if l > 0:
            WiT[l] = _f32(getattr(rnn, f"weight_ih_l{l}")).T
            Bi[l] = _f64(getattr(rnn, f"bias_ih_l{l}"))
    mp = (np.ascontiguousarray(T0), WiT, Bi, WhT, Bh_, *_head(model))
    z = np.zeros
    f = np.float32
    return mp, L * D, lambda b: (z((b, D), f), z((b, D), f), z((b, 3 * D), f), z((b, 3 * D), f), z(3 * D, f),
                               z(2 * D, f))  # fmt: skip


def gru_state(model, state) -> np.ndarray:
    (h,) = state
    return _f32(h).reshape(h.shape[0], -1)
