"""Slow, obviously-correct pure-Python references for the CNN kernels:
convolution, 2x2 max-pooling, batch norm, the augmenting gather and the
label-smoothed softmax cross-entropy.

As in reference.py: flat row-major Python lists, double precision, the
standard library only. Images are NHWC (B,H,W,C), conv weights (OC,k,k,C),
"same" zero padding, stride 1, odd k.

Every formula here is written from its definition, not from the way the C
code computes it: the convolution's input gradient is a scatter over the
output pixels (no flipped kernel), its weight gradient a sum over output
pixels, batch norm's backward the textbook chain rule of Ioffe & Szegedy
(not the C's compact form), and the smoothed loss the sum -sum_v q_v log p_v.
"""
import math
import operator

from reference import argmax, draw, f32

_mul = operator.mul


def absl(values):
    """|values|, or None for None: a reference run on absolute values gives the
    sum of |terms| of every result, the natural scale of its rounding error."""
    return None if values is None else [abs(v) for v in values]


# ---- convolution ----------------------------------------------------------------

def _taps(b, y, x, H, W, k):
    """The kernel positions (i, j) of output pixel (b, y, x) that fall inside
    the image, each with the flat pixel index it reads: [(i, j, q_in)]."""
    p = k // 2
    taps = []
    for i in range(k):
        yy = y + i - p
        if not 0 <= yy < H:
            continue
        for j in range(k):
            xx = x + j - p
            if 0 <= xx < W:
                taps.append((i, j, (b * H + yy) * W + xx))
    return taps


def conv2d_forward(inp, w, bias, B, H, W, C, OC, k):
    """out[b,y,x,o] = bias[o] + sum_{i,j,c} inp[b, y+i-k/2, x+j-k/2, c] * w[o,i,j,c],
    the input taken as 0 outside the image. Returns out (B,H,W,OC)."""
    out = []
    for b in range(B):
        for y in range(H):
            for x in range(W):
                taps = _taps(b, y, x, H, W, k)
                for o in range(OC):
                    s = bias[o] if bias is not None else 0.0
                    for i, j, q in taps:
                        wo = ((o * k + i) * k + j) * C
                        s += sum(map(_mul, inp[q * C:(q + 1) * C], w[wo:wo + C]))
                    out.append(s)
    return out


def conv2d_backward(dout, inp, w, B, H, W, C, OC, k, need_dinp=True):
    """(dinp (B,H,W,C) or None, dweight (OC,k,k,C), dbias (OC,)) of
    L = sum(out * dout), each from the definition of the forward:
      dbias[o]         = sum over output pixels of dout[., o]
      dweight[o,i,j,c] = sum over output pixels (b,y,x) whose tap (i,j) is
                         inside the image of dout[b,y,x,o] * inp[b,y+i-k/2,x+j-k/2,c]
      dinp             = every output pixel scatters dout[b,y,x,o] * w[o,i,j,c]
                         back onto the input pixel its tap (i,j) read."""
    NP = B * H * W
    dbias = [math.fsum(dout[o::OC]) for o in range(OC)]

    # dweight: one dot product over the output pixels per (o, i, j, c)
    p = k // 2
    dout_ch = [dout[o::OC] for o in range(OC)]   # dout_ch[o][q], q = output pixel
    inp_ch = [inp[c::C] for c in range(C)]       # inp_ch[c][q], q = input pixel
    dweight = [0.0] * (OC * k * k * C)
    for i in range(k):
        for j in range(k):
            q_out, q_in = [], []  # the output pixels whose tap (i, j) is inside
            for b in range(B):
                for y in range(H):
                    yy = y + i - p
                    if not 0 <= yy < H:
                        continue
                    for x in range(W):
                        xx = x + j - p
                        if 0 <= xx < W:
                            q_out.append((b * H + y) * W + x)
                            q_in.append((b * H + yy) * W + xx)
            g = [[d[q] for q in q_out] for d in dout_ch]
            v = [[a[q] for q in q_in] for a in inp_ch]
            for o in range(OC):
                for c in range(C):
                    dweight[((o * k + i) * k + j) * C + c] = sum(map(_mul, g[o], v[c]))

    dinp = None
    if need_dinp:
        dinp = [0.0] * (NP * C)
        for b in range(B):
            for y in range(H):
                for x in range(W):
                    q = (b * H + y) * W + x
                    taps = _taps(b, y, x, H, W, k)
                    for o in range(OC):
                        g = dout[q * OC + o]
                        for i, j, qi in taps:
                            wo = ((o * k + i) * k + j) * C
                            for c in range(C):
                                dinp[qi * C + c] += g * w[wo + c]
    return dinp, dweight, dbias


# ---- 2x2 max-pool ------------------------------------------------------------------

# The index of the first maximum by strict '>' comparisons (so a NaN is never
# chosen after the first position, and the first of equal values wins).
first_max = argmax


def _windows(B, H, W, C):
    """Every pooling window: (flat output index, the 4 flat input indices in
    the order (0,0), (0,1), (1,0), (1,1))."""
    OH, OW = H // 2, W // 2
    for b in range(B):
        for oy in range(OH):
            for ox in range(OW):
                for c in range(C):
                    at = [((b * H + 2 * oy + dy) * W + 2 * ox + dx) * C + c
                          for dy in (0, 1) for dx in (0, 1)]
                    yield ((b * OH + oy) * OW + ox) * C + c, at


def maxpool2x2_forward(inp, B, H, W, C):
    """out (B,H//2,W//2,C): the first maximum of each 2x2 window (an odd last
    row or column is dropped)."""
    out = [0.0] * (B * (H // 2) * (W // 2) * C)
    for q, at in _windows(B, H, W, C):
        v = [inp[t] for t in at]
        out[q] = v[first_max(v)]
    return out


def maxpool2x2_backward(dout, inp, B, H, W, C):
    """dinp (B,H,W,C): each window's gradient goes to its first maximum, every
    other input (including an odd last row/column) gets 0."""
    dinp = [0.0] * (B * H * W * C)
    for q, at in _windows(B, H, W, C):
        v = [inp[t] for t in at]
        dinp[at[first_max(v)]] = dout[q]
    return dinp


def avgpool_global_forward(inp, B, HW, C):
    """out (B,C): each channel's mean over the HW pixels (summed in order,
    rounded to float32 as the kernel does, then scaled by float32(1/HW))."""
    out = []
    scale = f32(1.0 / HW)
    for b in range(B):
        for c in range(C):
            s = 0.0
            for p in range(HW):
                s = f32(s + inp[(b * HW + p) * C + c])
            out.append(f32(s * scale))
    return out


def avgpool_global_backward(dout, B, HW, C):
    """dinp (B,HW,C): every pixel gets its channel's dout / HW."""
    scale = f32(1.0 / HW)
    return [f32(dout[b * C + c] * scale) for b in range(B) for _ in range(HW) for c in range(C)]


# ---- batch norm ----------------------------------------------------------------------

def batch_stats(x, N, C):
    """(mean, biased variance) of every column of x (N,C)."""
    means, variances = [], []
    for c in range(C):
        col = x[c::C]
        mu = math.fsum(col) / N
        means.append(mu)
        variances.append(math.fsum((v - mu) ** 2 for v in col) / N)
    return means, variances


def batchnorm_forward(x, gamma, beta, N, C, running_mean, running_var, momentum, eps,
                      training, relu):
    """(out (N,C), mean (C,), invstd (C,), new running_mean, new running_var).

    training: the batch mean and biased variance normalize, and the running
    statistics move by PyTorch's rule, running = (1-momentum) running +
    momentum stat, with the variance unbiased there, var * N/(N-1) (for N = 1
    the kernel uses the biased variance, 0). Evaluation: the running
    statistics normalize and stay as they are.
    out = gamma * (x - mean) / sqrt(var + eps) + beta, then max(., 0) if relu."""
    if training:
        mean, var = batch_stats(x, N, C)
        unbiased = [v * N / (N - 1) if N > 1 else v for v in var]
        new_rm = [(1.0 - momentum) * r + momentum * m for r, m in zip(running_mean, mean)]
        new_rv = [(1.0 - momentum) * r + momentum * u for r, u in zip(running_var, unbiased)]
    else:
        mean, var = list(running_mean), list(running_var)
        new_rm, new_rv = list(running_mean), list(running_var)
    invstd = [1.0 / math.sqrt(v + eps) for v in var]
    out = []
    for r in range(N):
        for c in range(C):
            y = gamma[c] * (x[r * C + c] - mean[c]) * invstd[c] + beta[c]
            out.append((y if y > 0 else 0.0) if relu else y)
    return out, mean, invstd, new_rm, new_rv


def batchnorm_backward(dout, x, gamma, N, C, eps, out=None):
    """(dinp (N,C), dgamma (C,), dbeta (C,)) of the training-mode forward,
    through the batch statistics, by the chain rule as in Ioffe & Szegedy
    (2015), Algorithm 1's backward. With out given, dout is first masked by
    out > 0 (the fused ReLU)."""
    mean, var = batch_stats(x, N, C)
    dy = list(dout) if out is None else [d if y > 0 else 0.0 for d, y in zip(dout, out)]
    dinp = [0.0] * (N * C)
    dgamma, dbeta = [], []
    for c in range(C):
        mu, v = mean[c], var[c]
        istd = 1.0 / math.sqrt(v + eps)
        xs = x[c::C]
        g = dy[c::C]
        xhat = [(xi - mu) * istd for xi in xs]
        dbeta.append(math.fsum(g))
        dgamma.append(math.fsum(gi * h for gi, h in zip(g, xhat)))
        dxhat = [gi * gamma[c] for gi in g]
        dvar = math.fsum(d * (xi - mu) for d, xi in zip(dxhat, xs)) * -0.5 * istd ** 3
        dmean = (math.fsum(-d * istd for d in dxhat)
                 + dvar * math.fsum(-2.0 * (xi - mu) for xi in xs) / N)
        for r in range(N):
            dinp[r * C + c] = dxhat[r] * istd + dvar * 2.0 * (xs[r] - mu) / N + dmean / N
    return dinp, dgamma, dbeta


# ---- the augmenting gather ---------------------------------------------------------------

def augment_draw(seed, i, shift, flip):
    """(dy, dx, mirror) of sample i: three bit fields of its draw."""
    z = draw(seed, i)
    span = 2 * shift + 1
    dy = (z & 0xFFFF) % span - shift
    dx = ((z >> 16) & 0xFFFF) % span - shift
    mirror = (z >> 32) & 1 if flip else 0
    return dy, dx, mirror


ERASE_STREAM = 0x5DEECE66D


def erase_draw(seed, i, H, W, erase):
    """(y0, x0, h, w) of sample i's erased rectangle, or None: csrc/data.c's
    erase_draw, from the draws of seed ^ ERASE_STREAM."""
    z = draw(seed ^ ERASE_STREAM, i)
    threshold = min(65536, max(0, int(erase * 65536.0)))
    if (z >> 48) >= threshold or H < 2 or W < 2:
        return None
    h = 1 + (z & 0xFF) % (H // 2)
    w = 1 + ((z >> 8) & 0xFF) % (W // 2)
    return ((z >> 16) & 0xFFFF) % (H - h + 1), ((z >> 32) & 0xFFFF) % (W - w + 1), h, w


def gather_augment(inp, idx, H, W, shift, flip, fill, seed, erase=0.0):
    """out (B,H,W): sample i is image idx[i] of inp (N,H*W), mirrored
    left-right when its draw says so, m[y,x] = img[y, W-1-x], then moved down
    by dy and right by dx: out[i,y,x] = m[y-dy, x-dx], or fill outside; then,
    with probability erase, a rectangle set to fill."""
    out = []
    for i, n in enumerate(idx):
        dy, dx, mirror = augment_draw(seed, i, shift, flip)
        img = inp[n * H * W:(n + 1) * H * W]
        m = [img[y * W + (W - 1 - x if mirror else x)] for y in range(H) for x in range(W)]
        sample = []
        for y in range(H):
            for x in range(W):
                sy, sx = y - dy, x - dx
                sample.append(m[sy * W + sx] if 0 <= sy < H and 0 <= sx < W else fill)
        rect = erase_draw(seed, i, H, W, erase)
        if rect:
            y0, x0, h, w = rect
            for y in range(y0, y0 + h):
                for x in range(x0, x0 + w):
                    sample[y * W + x] = fill
        out += sample
    return out


# ---- softmax + cross-entropy with label smoothing ---------------------------------------

def smoothed_target(t, V, eps):
    """q = (1 - eps) onehot(t) + eps / V."""
    return [(1.0 - eps) * (v == t) + eps / V for v in range(V)]


def softmax_ce_smooth(logits, targets, B, V, eps):
    """(probs (B,V), losses (B,), summed loss, correct) with
    loss[b] = -sum_v q_v log p_v, p = softmax(logits[b]), q = smoothed_target."""
    probs, losses, hits = [], [], 0
    for b in range(B):
        row = logits[b * V:(b + 1) * V]
        t = targets[b]
        mx = max(row)
        lse = mx + math.log(math.fsum(math.exp(v - mx) for v in row))
        logp = [v - lse for v in row]
        probs += [math.exp(lp) for lp in logp]
        losses.append(-math.fsum(qv * lp for qv, lp in zip(smoothed_target(t, V, eps), logp)))
        hits += first_max(row) == t
    return probs, losses, math.fsum(losses), hits


def softmax_ce_smooth_backward(probs, targets, B, V, eps):
    """d(mean loss)/dlogits = (p - q) / B."""
    d = []
    for b in range(B):
        q = smoothed_target(targets[b], V, eps)
        d += [(probs[b * V + v] - q[v]) / B for v in range(V)]
    return d
