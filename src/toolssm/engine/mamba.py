"""The Mamba-1 kernel for the compiled decode loop (the model: toolssm.models.mamba.Mamba, its ``step``).

Per layer and token, as MambaBlock.step: RMSNorm, in_proj, the causal depthwise conv step with silu, x_proj,
softplus(dt_proj), the selective state update h = exp(dt A) h + dt x B, y = h C + D x, out_proj(y silu(z)) and
the residual; then the final RMSNorm and the (tied) head. Weights are read from the module as float32; dot
products accumulate in float64 and the element-wise math runs in float64 (the decays exp(dt A) through the
vectorized `rnn.vexp`); the state is stored as float32 after each step, as
torch keeps it. Layer 0's norm and in_proj of the embedding are one lookup table (V, 2 Di), built once.

State layout, one float32 row per live episode: ``[conv (L, Di, K-1), ssm (L, Di, N)]``, flattened.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
import torch

from toolssm.engine.rnn import _f32, _f64, vexp


@nb.njit(cache=True, nogil=True, fastmath=True)
def _matvec(W, x, out):
    """out[r] = sum_k W[r, k] x[k], float32 weights, float64 accumulation."""
    for r in range(W.shape[0]):
        acc = 0.0
        for k in range(W.shape[1]):
            acc += np.float64(W[r, k]) * x[k]
        out[r] = acc


@nb.njit(cache=True, nogil=True)
def _rmsnorm(x, w, eps, out):
    ss = 0.0
    for k in range(x.shape[0]):
        ss += x[k] * x[k]
    s = 1.0 / math.sqrt(ss / x.shape[0] + eps)
    for k in range(x.shape[0]):
        out[k] = x[k] * s * w[k]


@nb.njit(cache=True, nogil=True)
def _silu(v):
    return v / (1.0 + math.exp(-v))


@nb.njit(cache=True, nogil=True)
def _softplus(v):  # torch's F.softplus: beta 1, threshold 20
    return v if v > 20.0 else math.log1p(math.exp(v))


@nb.njit(cache=True, nogil=True)
def mamba_step(mp, toks, state, scratch, logits, n):
    (T0, emb, norm_w, in_w, in_b, conv_w, conv_b, xp_w, dt_w, dt_b, A, Dp, out_w, out_b, normf_w, head, eps) = mp
    L, Di, K = conv_w.shape
    N = A.shape[2]
    R = dt_w.shape[2]
    Dm = emb.shape[1]
    x, u, xz, xc, dbc, dt, y, tmp, pre, dA = scratch
    conv_len = L * Di * (K - 1)
    for j in range(n):
        t = toks[j]
        for k in range(Dm):
            x[k] = emb[t, k]
        for l in range(L):
            if l == 0:
                for r in range(2 * Di):
                    xz[r] = T0[t, r]
            else:
                _rmsnorm(x, norm_w[l], eps, u)
                _matvec(in_w[l], u, xz)
                for r in range(2 * Di):
                    xz[r] += in_b[l, r]
            cbase = l * Di * (K - 1)
            for c in range(Di):  # conv step: window = [state (K-1), x]; state <- window[1:]
                off = cbase + c * (K - 1)
                acc = 0.0
                for k in range(K - 1):
                    acc += np.float64(state[j, off + k]) * np.float64(conv_w[l, c, k])
                acc += np.float64(np.float32(xz[c])) * np.float64(conv_w[l, c, K - 1])
                for k in range(K - 2):
                    state[j, off + k] = state[j, off + k + 1]
                if K > 1:
                    state[j, off + K - 2] = np.float32(xz[c])
                xc[c] = np.float64(np.float32(_silu(acc + conv_b[l, c])))
            _matvec(xp_w[l], xc, dbc)  # (R + 2N)
            for r in range(R):
                tmp[r] = np.float32(dbc[r])
            for c in range(Di):
                acc = dt_b[l, c]
                for r in range(R):
                    acc += np.float64(dt_w[l, c, r]) * tmp[r]
                dt[c] = np.float32(_softplus(acc))
            hbase = conv_len + l * Di * N
            for c in range(Di):  # the decays exp(dt A) of every (channel, state) pair, in one vectorized call
                for s in range(N):
                    pre[c * N + s] = dt[c] * A[l, c, s]
            vexp(pre, dA)
            for c in range(Di):
                dtc, xcc = dt[c], xc[c]
                dx = dtc * xcc
                acc = 0.0
                off = hbase + c * N
                for s in range(N):
                    h = dA[c * N + s] * np.float64(state[j, off + s]) + dx * np.float64(np.float32(dbc[R + s]))
                    h32 = np.float32(h)
                    state[j, off + s] = h32
                    acc += np.float64(h32) * np.float64(np.float32(dbc[R + N + s]))
                yc = acc + Dp[l, c] * xcc
                y[c] = np.float32(yc * _silu(np.float64(np.float32(xz[Di + c]))))
            _matvec(out_w[l], y, u)
            for k in range(Dm):
                x[k] = np.float64(np.float32(x[k] + u[k] + out_b[l, k]))
        _rmsnorm(x, normf_w, eps, u)
        for v in range(head.shape[0]):
            acc = 0.0
            for k in range(Dm):
                acc += np.float64(head[v, k]) * np.float64(np.float32(u[k]))
            logits[j, v] = np.float32(acc)


def mamba_pack(model):
    """(kernel params, state width, scratch(B)) of a toolssm Mamba (any preset; biases and eps as loaded)."""
    layers = [lay.mixer for lay in model.layers]
    L, m0 = len(layers), layers[0]
    Di, N, K, R = m0.d_inner, m0.d_state, m0.d_conv, m0.dt_rank
    emb = model.embed.weight.detach()
    Dm = emb.shape[1]

    def stack(f, dtype=np.float32):
        return np.ascontiguousarray(np.stack([f(i, m) for i, m in enumerate(layers)]).astype(dtype))

    def bias(lin, d):
        return _f64(lin.bias) if lin.bias is not None else np.zeros(d)

    norm0 = model.layers[0].norm
    with torch.no_grad():
        e = emb.double()
        u0 = e * torch.rsqrt(e.pow(2).mean(-1, keepdim=True) + norm0.eps) * norm0.weight.double()  # (V, Dm)
        T0 = u0 @ m0.in_proj.weight.double().T  # (V, 2Di)
        if m0.in_proj.bias is not None:
            T0 = T0 + m0.in_proj.bias.double()
    head = model.embed.weight if model.head is None else model.head.weight
    mp = (
        np.ascontiguousarray(T0.numpy()),
        _f32(emb),
        stack(lambda i, m: _f64(model.layers[i].norm.weight), np.float64),
        stack(lambda i, m: _f32(m.in_proj.weight)),
        stack(lambda i, m: bias(m.in_proj, 2 * Di), np.float64),
        stack(lambda i, m: _f32(m.conv1d.weight[:, 0])),
        stack(lambda i, m: bias(m.conv1d, Di), np.float64),
        stack(lambda i, m: _f32(m.x_proj.weight)),
        stack(lambda i, m: _f32(m.dt_proj.weight)),
        stack(lambda i, m: _f64(m.dt_proj.bias), np.float64),
        stack(lambda i, m: _f64(-torch.exp(m.A_log.detach().float())), np.float64),
        stack(lambda i, m: _f64(m.D), np.float64),
        stack(lambda i, m: _f32(m.out_proj.weight)),
        stack(lambda i, m: bias(m.out_proj, Dm), np.float64),
        _f64(model.norm_f.weight),
        _f32(head),
        float(model.norm_f.eps),
    )
    S = L * Di * (K - 1) + L * Di * N

    def scratch(b):
        z = np.zeros
        return (z(Dm), z(Dm), z(2 * Di), z(Di), z(R + 2 * N), z(Di), z(Di), z(max(R, 1)), z(Di * N), z(Di * N))

    return mp, S, scratch
