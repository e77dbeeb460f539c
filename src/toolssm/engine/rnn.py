"""LSTM and GRU kernels for the compiled decode loop (the models: toolssm.models.rnn, torch.nn.LSTM / GRU).

Weights are read from the torch module as they are (float32); matrix-vector products accumulate in float32
(fastmath: vectorized, as torch's sgemm is), biases, gates and activations are computed in float64 (sigmoid and
tanh through the vectorized `vexp`), and the state is rounded to float32 after each step, as torch keeps it. So
the engine's logits differ from torch's by rounding only (about 1e-6 relative), and argmax can differ only at a
near-tie (tests report the margin there). One precomputation: layer 0's input term is a lookup, ``T0[tok] = W_ih0
embed[tok] + b_ih0 + b_hh0`` (float64, built once per rollout), since its input is always one of V embeddings.

State layout, one float32 row per live episode: LSTM ``[h_0 .. h_{L-1}, c_0 .. c_{L-1}]``, GRU ``[h_0 ..
h_{L-1}]``, each of width D.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import torch


@nb.njit(cache=True, nogil=True, fastmath=True)
def _gates(W, b, X, k0, k1, G, n):
    """G[j, r] = b[r] + sum_{k0 <= k < k1} W[r, k] X[j, k] for rows j < n, accumulated in float64."""
    for r in range(W.shape[0]):
        w = W[r, k0:k1]  # slices: a loop from a variable start (k0) is not vectorized by LLVM, 7x slower
        for j in range(n):
            x = X[j, k0:k1]
            acc = np.float32(0.0)
            for k in range(w.shape[0]):
                acc += w[k] * x[k]
            G[j, r] = b[r] + np.float64(acc)


_LOG2E, _LN2_HI, _LN2_LO = 1.4426950408889634, 0.6931471803691238, 1.9082149292705877e-10


@nb.njit(cache=True, nogil=True, fastmath=True)
def vexp(x, out, bits):
    """out[k] = exp(x[k]) in float64 to about 1 ulp, in a loop LLVM vectorizes (libm's exp is a call per element:
    without Intel's SVML, numba does not vectorize math.exp). x = k ln2 + r, |r| <= ln2/2; exp(r) by its Taylor
    series to degree 13 (error below 1e-16 relative); 2^k from the exponent bits. x is clamped to +-700."""
    n = x.shape[0]
    for t in range(n):
        v = min(max(x[t], -700.0), 700.0)
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
        out[t] = p
        bits[t] = (np.int64(k) + 1023) << 52
    scale = bits[:n].view(np.float64)
    for t in range(n):
        out[t] *= scale[t]


@nb.njit(cache=True, nogil=True, fastmath=True)
def head_logits(Wh, bh, X, n, logits):
    """logits[j] = bh + Wh X[j] (float64 accumulation, stored float32)."""
    for v in range(Wh.shape[0]):
        for j in range(n):
            acc = np.float32(0.0)
            for k in range(Wh.shape[1]):
                acc += Wh[v, k] * X[j, k]
            logits[j, v] = np.float32(bh[v] + np.float64(acc))


@nb.njit(cache=True, nogil=True)
def lstm_step(mp, toks, state, scratch, logits, n):
    T0, W, B, Wh, bh = mp  # (V, 4D) f64, (L, 4D, 2D) f32 [W_ih | W_hh], (L, 4D) f64, (V, D) f32, (V,) f64
    L, D = W.shape[0], W.shape[2] // 2
    X = scratch[0]  # (B, 2D) f32: [input, h_old]
    G64 = scratch[1]  # (B, 4D) f64: the gates
    pre, ex, bits = scratch[2], scratch[3], scratch[4]  # (4D,) f64, f64, i64: vexp's work
    for l in range(L):
        for j in range(n):
            for k in range(D):
                X[j, D + k] = state[j, l * D + k]
        if l == 0:
            _gates(W[0], B[0], X, D, 2 * D, G64, n)
            for j in range(n):
                t = toks[j]
                for r in range(4 * D):
                    G64[j, r] += T0[t, r]
        else:
            _gates(W[l], B[l], X, 0, 2 * D, G64, n)
        for j in range(n):
            hoff, coff = l * D, (L + l) * D
            # i, f, o = sigmoid; g = tanh = 2 sigmoid(2x) - 1; sigmoid(x) = 1 / (1 + exp(-x)), exps vectorized
            for r in range(4 * D):
                pre[r] = -G64[j, r]
            for r in range(2 * D, 3 * D):
                pre[r] *= 2.0
            vexp(pre, ex, bits)
            for r in range(4 * D):
                ex[r] = 1.0 / (1.0 + ex[r])
            for k in range(D):
                c = np.float32(ex[D + k] * np.float64(state[j, coff + k]) + ex[k] * (2.0 * ex[2 * D + k] - 1.0))
                state[j, coff + k] = c
                pre[k] = -2.0 * np.float64(c)
            vexp(pre[:D], ex[:D], bits)
            for k in range(D):
                h = np.float32(ex[3 * D + k] * (2.0 / (1.0 + ex[k]) - 1.0))
                state[j, hoff + k] = h
                X[j, k] = h  # the next layer's input
    head_logits(Wh, bh, X, n, logits)


@nb.njit(cache=True, nogil=True)
def gru_step(mp, toks, state, scratch, logits, n):
    # torch.nn.GRU: r = s(W_ir x + b_ir + W_hr h + b_hr), z = s(W_iz x + b_iz + W_hz h + b_hz),
    #               n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) * n + z * h
    T0, Wi, Bi, Wh_, Bh_, Wh, bh = mp  # T0 (V, 3D) = W_i0 embed + b_i0; Wi, Wh_ (L, 3D, D); Bi, Bh_ (L, 3D) f64
    L, D = Wi.shape[0], Wi.shape[2]
    X = scratch[0]  # (B, >= D) f32: the layer's input
    GI = scratch[1]  # (B, 3D) f64: input terms
    GH = scratch[2]  # (B, 3D) f64: hidden terms
    H = scratch[3]  # (B, D) f32: the layer's old state
    pre, ex, bits = scratch[4], scratch[5], scratch[6]  # (3D,) f64, f64, i64: vexp's work
    for l in range(L):
        if l == 0:
            for j in range(n):
                t = toks[j]
                for r in range(3 * D):
                    GI[j, r] = T0[t, r]
        else:
            _gates(Wi[l], Bi[l], X, 0, D, GI, n)
        for j in range(n):
            for k in range(D):
                H[j, k] = state[j, l * D + k]
        _gates(Wh_[l], Bh_[l], H, 0, D, GH, n)
        for j in range(n):
            off = l * D
            for r in range(2 * D):  # r, z = sigmoid(x) = 1 / (1 + exp(-x)), exps vectorized
                pre[r] = -(GI[j, r] + GH[j, r])
            vexp(pre[: 2 * D], ex[: 2 * D], bits)
            for r in range(2 * D):
                ex[r] = 1.0 / (1.0 + ex[r])
            for k in range(D):  # n = tanh(x) = 2 / (1 + exp(-2x)) - 1
                pre[2 * D + k] = -2.0 * (GI[j, 2 * D + k] + ex[k] * GH[j, 2 * D + k])
            vexp(pre[2 * D :], ex[2 * D :], bits)
            for k in range(D):
                nn_ = 2.0 / (1.0 + ex[2 * D + k]) - 1.0
                z = ex[D + k]
                h = np.float32((1.0 - z) * nn_ + z * np.float64(H[j, k]))
                state[j, off + k] = h
                X[j, k] = h
    head_logits(Wh, bh, X, n, logits)


def _f32(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().to(torch.float32).numpy())


def _f64(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().to(torch.float64).numpy())


def lstm_pack(model):
    """(kernel params, state width, scratch(B) -> the kernel's work arrays) of a toolssm LSTM."""
    rnn = model.rnn
    L, D = rnn.num_layers, rnn.hidden_size
    E = model.embed.weight.detach().double()
    w_ih0 = rnn.weight_ih_l0.detach().double()
    b0 = rnn.bias_ih_l0.detach().double() + rnn.bias_hh_l0.detach().double()
    T0 = (E @ w_ih0.T + b0).numpy()  # (V, 4D)
    W = np.zeros((L, 4 * D, 2 * D), np.float32)
    B = np.zeros((L, 4 * D), np.float64)
    for l in range(L):
        W[l, :, D:] = _f32(getattr(rnn, f"weight_hh_l{l}"))
        if l > 0:
            W[l, :, :D] = _f32(getattr(rnn, f"weight_ih_l{l}"))
            B[l] = _f64(getattr(rnn, f"bias_ih_l{l}")) + _f64(getattr(rnn, f"bias_hh_l{l}"))
    mp = (np.ascontiguousarray(T0), W, B, _f32(model.head.weight), _f64(model.head.bias))
    z = np.zeros
    return mp, 2 * L * D, lambda b: (z((b, 2 * D), np.float32), z((b, 4 * D)), z(4 * D), z(4 * D), z(4 * D, np.int64))


def lstm_state(model, state) -> np.ndarray:
    h, c = state  # (B, L, D) x2
    return np.concatenate([_f32(h).reshape(h.shape[0], -1), _f32(c).reshape(c.shape[0], -1)], 1)


def gru_pack(model):
    rnn = model.rnn
    L, D = rnn.num_layers, rnn.hidden_size
    E = model.embed.weight.detach().double()
    T0 = (E @ rnn.weight_ih_l0.detach().double().T + rnn.bias_ih_l0.detach().double()).numpy()  # (V, 3D)
    Wi = np.zeros((L, 3 * D, D), np.float32)
    Bi = np.zeros((L, 3 * D), np.float64)
    Wh_ = np.zeros((L, 3 * D, D), np.float32)
    Bh_ = np.zeros((L, 3 * D), np.float64)
    for l in range(L):
        Wh_[l] = _f32(getattr(rnn, f"weight_hh_l{l}"))
        Bh_[l] = _f64(getattr(rnn, f"bias_hh_l{l}"))
        if l > 0:
            Wi[l] = _f32(getattr(rnn, f"weight_ih_l{l}"))
            Bi[l] = _f64(getattr(rnn, f"bias_ih_l{l}"))
    mp = (np.ascontiguousarray(T0), Wi, Bi, Wh_, Bh_, _f32(model.head.weight), _f64(model.head.bias))
    return mp, L * D, lambda b: (
        np.zeros((b, D), np.float32), np.zeros((b, 3 * D), np.float64), np.zeros((b, 3 * D), np.float64),
        np.zeros((b, D), np.float32), np.zeros(3 * D), np.zeros(3 * D), np.zeros(3 * D, np.int64),
    )  # fmt: skip


def gru_state(model, state) -> np.ndarray:
    (h,) = state
    return _f32(h).reshape(h.shape[0], -1)
