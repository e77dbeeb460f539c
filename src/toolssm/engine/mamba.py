"""The Mamba-1 kernel for the compiled decode loop (the model: toolssm.models.mamba.Mamba, its ``step``).

Per layer and token, as MambaBlock.step: RMSNorm, in_proj, the causal depthwise conv step with silu, x_proj,
softplus(dt_proj), the selective state update h = exp(dt A) h + dt x B, y = h C + D x, out_proj(y silu(z)) and
the residual; then the final RMSNorm and the (tied) head. Weights are read from the module as float32. The step
runs layer by layer over the whole live batch: in_proj, x_proj, out_proj and the head are one matrix product
each, accumulated in float32 as torch's sgemm does (`rnn.matmul_tn`, `rnn.matmul_nt`); their inputs are
rounded to float32 where torch's are float32 (the RMSNorm's output, the conv's silu, the gated y). Everything
element-wise runs in float64, vectorized over the channels: the conv step, softplus (through `rnn.exp64` and
`_log1p01`; libm's log1p and exp were a call per element and a third of the step), the decays exp(dt A) and
the selective state update, state by state (no reductions), and the silu gates. The state is stored as float32
after each step, as torch keeps it. Layer 0's norm and in_proj of the embedding are one lookup table (V, 2 Di),
built once.

State layout, one float32 row per live episode: ``[conv (L, K-1, Di), ssm (L, N, Di)]``, flattened: channels
last, so that every element-wise pass runs along contiguous memory (torch's order is (Di, K-1) and (Di, N);
the engine's state never leaves the engine).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
import torch

from toolssm.engine.rnn import _f32, _f64, exp64, matmul_nt, matmul_tn


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _rmsnorm32(x, w, eps, out):
    """out = RMSNorm(x) (float64), stored float32 as torch's RMSNorm output is."""
    ss = 0.0
    for k in range(x.shape[0]):
        ss += x[k] * x[k]
    s = 1.0 / math.sqrt(ss / x.shape[0] + eps)
    for k in range(x.shape[0]):
        out[k] = np.float32(x[k] * s * w[k])


@nb.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _silu(v):  # float64, through the vectorizable exp64 (exp64 clamps its argument to +-700)
    return v / (1.0 + exp64(-v))


_LN2 = 0.6931471805599453


@nb.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _log1p01(y):
    """log(1 + y) for 0 <= y <= 1 in float64 to about an ulp, in straight-line code LLVM vectorizes (libm's log1p
    is a call per element). log(1 + y) = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...) with s = y / (2 + y) for
    y <= sqrt(2) - 1, else log(2) + 2 atanh(s) with s = (y - 1) / (y + 3) (that is, of (1 + y) / 2); |s| <= 0.172
    either way, so s^2 <= 0.0295 and ten terms of the series leave an error below 1e-17 relative. s is formed
    from y itself, never from 1 + y, so a tiny y keeps its precision."""
    hi = y > 0.41421356237309503
    s = (y - 1.0) / (y + 3.0) if hi else y / (2.0 + y)
    t = s * s
    p = 1.0 / 21.0
    p = p * t + 1.0 / 19.0
    p = p * t + 1.0 / 17.0
    p = p * t + 1.0 / 15.0
    p = p * t + 1.0 / 13.0
    p = p * t + 1.0 / 11.0
    p = p * t + 1.0 / 9.0
    p = p * t + 1.0 / 7.0
    p = p * t + 1.0 / 5.0
    p = p * t + 1.0 / 3.0
    p = p * t + 1.0
    return 2.0 * s * p + (_LN2 if hi else 0.0)


@nb.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _softplus(v):
    """torch's F.softplus (beta 1, threshold 20): v above 20, else log(1 + exp(v)) = max(v, 0) + log1p(exp(-|v|)),
    vectorizable (exp64, _log1p01)."""
    return v if v > 20.0 else max(v, 0.0) + _log1p01(exp64(-abs(v)))


@nb.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def mamba_step(mp, toks, state, scratch, logits, n):
    """One step of rows j < n, layer by layer over the whole live batch: in_proj, x_proj, out_proj and the head
    are one matrix product each (rnn.matmul_tn / matmul_nt, float32 accumulation as torch's sgemm); the conv
    step, dt, the selective state update and the gating run row by row in float64."""
    (T0, emb, norm_w, inT, in_b, conv_w, conv_b, xp_w, dt_w, dt_b, A, Dp, out_w, out_b, normf_w, head, eps) = mp
    L, K, Di = conv_w.shape
    N = A.shape[1]
    R = dt_w.shape[2]
    Dm = emb.shape[1]
    x, u, xz, xc, dbc, y, o, cv, dt, dx = scratch  # see mamba_pack
    conv_len = L * Di * (K - 1)
    for j in range(n):
        t = toks[j]
        for k in range(Dm):
            x[j, k] = emb[t, k]
    for l in range(L):
        if l == 0:  # layer 0's norm and in_proj of the embedding: the lookup T0
            for j in range(n):
                t = toks[j]
                for r in range(2 * Di):
                    xz[j, r] = np.float32(T0[t, r])
        else:
            for j in range(n):
                _rmsnorm32(x[j], norm_w[l], eps, u[j])
            matmul_tn(inT[l], u, 0, xz, n)
            for j in range(n):
                for r in range(2 * Di):
                    xz[j, r] = np.float32(np.float64(xz[j, r]) + in_b[l, r])
        cbase = l * (K - 1) * Di
        hbase = conv_len + l * N * Di
        for j in range(n):
            st = state[j]
            # the conv step, vectorized over the channels: window = [state rows (K-1), x]; state <- window[1:]
            for c in range(Di):
                cv[c] = 0.0
            for k in range(K - 1):
                sk, wk = st[cbase + k * Di : cbase + (k + 1) * Di], conv_w[l, k]
                for c in range(Di):
                    cv[c] += np.float64(sk[c]) * np.float64(wk[c])
            wk = conv_w[l, K - 1]
            for c in range(Di):
                xc[j, c] = np.float32(_silu(cv[c] + np.float64(xz[j, c]) * np.float64(wk[c]) + conv_b[l, c]))
            for k in range(K - 1):
                dst = st[cbase + k * Di : cbase + (k + 1) * Di]
                src = st[cbase + (k + 1) * Di : cbase + (k + 2) * Di] if k < K - 2 else xz[j, :Di]
                for c in range(Di):
                    dst[c] = src[c]
        matmul_nt(xp_w[l], xc, 0, Di, dbc, n)  # (R + 2N): dt's low rank, B, C
        for j in range(n):
            st = state[j]
            for c in range(Di):
                acc = dt_b[l, c]
                for r in range(R):
                    acc += np.float64(dt_w[l, c, r]) * np.float64(dbc[j, r])
                cv[c] = acc
            for c in range(Di):
                dt[c] = np.float32(_softplus(cv[c]))
                dx[c] = dt[c] * np.float64(xc[j, c])
                cv[c] = 0.0
            # the selective state update, state by state, vectorized over the channels (no reductions):
            # h = exp(dt A) h + dt x B, y = sum_s h C
            for s in range(N):
                hs, As = st[hbase + s * Di : hbase + (s + 1) * Di], A[l, s]
                bs, cs = np.float64(dbc[j, R + s]), np.float64(dbc[j, R + N + s])
                for c in range(Di):
                    h32 = np.float32(exp64(dt[c] * As[c]) * np.float64(hs[c]) + dx[c] * bs)
                    hs[c] = h32
                    cv[c] += np.float64(h32) * cs
            for c in range(Di):
                yc = cv[c] + Dp[l, c] * np.float64(xc[j, c])
                y[j, c] = np.float32(yc * _silu(np.float64(xz[j, Di + c])))
        matmul_nt(out_w[l], y, 0, Di, o, n)
        for j in range(n):
            for k in range(Dm):
                x[j, k] = np.float64(np.float32(x[j, k] + np.float64(o[j, k]) + out_b[l, k]))
    for j in range(n):
        _rmsnorm32(x[j], normf_w, eps, u[j])
    matmul_nt(head, u, 0, Dm, logits, n)


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
        stack(lambda i, m: _f32(m.in_proj.weight).T),  # (L, Dm, 2Di): transposed, for matmul_tn
        stack(lambda i, m: bias(m.in_proj, 2 * Di), np.float64),
        stack(lambda i, m: _f32(m.conv1d.weight[:, 0]).T),  # (L, K, Di)
        stack(lambda i, m: bias(m.conv1d, Di), np.float64),
        stack(lambda i, m: _f32(m.x_proj.weight)),
        stack(lambda i, m: _f32(m.dt_proj.weight)),
        stack(lambda i, m: _f64(m.dt_proj.bias), np.float64),
        stack(lambda i, m: _f64(-torch.exp(m.A_log.detach().float())).T, np.float64),  # (L, N, Di)
        stack(lambda i, m: _f64(m.D), np.float64),
        stack(lambda i, m: _f32(m.out_proj.weight)),
        stack(lambda i, m: bias(m.out_proj, Dm), np.float64),
        _f64(model.norm_f.weight),
        _f32(head),
        float(model.norm_f.eps),
    )
    S = L * Di * (K - 1) + L * Di * N

    def scratch(b):
        z, f = np.zeros, np.float32
        # x (B, Dm) f64 the residual stream; u (B, Dm) f32 its RMSNorm; xz (B, 2Di) f32 in_proj; xc (B, Di) f32
        # the conv's silu; dbc (B, R + 2N) f32 x_proj; y (B, Di) f32 the gated output; o (B, Dm) f32 out_proj;
        # cv (Di,) f64 a row's conv, dt_proj or y before its silu; dt, dx (Di,) f64 a row's dt and dt x
        return (z((b, Dm)), z((b, Dm), f), z((b, 2 * Di), f), z((b, Di), f), z((b, R + 2 * N), f), z((b, Di), f),
                z((b, Dm), f), z(Di), z(Di), z(Di))  # fmt: skip

    return mp, S, scratch
