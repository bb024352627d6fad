"""Slow, obviously-correct pure-Python references for the C kernels.

Everything works on flat Python lists (row-major) and computes in double
precision; the tests compare the float32 kernels against these with a
tolerance. No NumPy: the standard library only.
"""
import math
import operator
import struct

from pynn.tensor import Tensor

_F32 = struct.Struct("f")


# ---- float32 and Tensor helpers ---------------------------------------------

def f32(x):
    """x rounded to the nearest float32 (as a Python float)."""
    return _F32.unpack(_F32.pack(x))[0]


def bits(values):
    """The exact float32 bit patterns (NaN-safe, -0.0 != 0.0)."""
    return struct.pack(f"{len(values)}f", *values)


def f32list(values):
    return [f32(v) for v in values]


def tensor(values, shape=None, dtype="float32"):
    """A Tensor holding ``values`` (flat list); shape defaults to (len,)."""
    return Tensor.from_list(values, shape, dtype)


def ints(values, shape=None):
    return Tensor.from_list(values, shape, "int32")


def values(t):
    """The flat values of a Tensor as a list of Python numbers."""
    return t.tolist()


def rand_list(rng, n, lo=-1.0, hi=1.0):
    """n random float32-representable values in [lo, hi]."""
    return [f32(rng.uniform(lo, hi)) for _ in range(n)]


# ---- comparisons --------------------------------------------------------------

def max_rel_err(got, want, scale):
    """max_i |got_i - want_i| / scale_i (scale_i > 0: the size of the terms)."""
    worst = 0.0
    for g, w, s in zip(got, want, scale):
        if not (math.isfinite(g) and math.isfinite(w)):
            return math.inf
        worst = max(worst, abs(g - w) / (s if s > 0 else 1.0))
    return worst


def assert_close(got, want, rel=1e-6, abs_=1e-7, what="values"):
    assert len(got) == len(want), f"{what}: {len(got)} values, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        if not math.isclose(g, w, rel_tol=rel, abs_tol=abs_):
            raise AssertionError(f"{what}[{i}]: got {g!r}, expected {w!r} "
                                 f"(rel={rel}, abs={abs_})")


# ---- matmul -------------------------------------------------------------------

def op_rows(A, t, R, K):
    """The R rows (each K long) of op(A), where op(A) is (R,K):
    A is (R,K) when t == 0, (K,R) when t == 1."""
    if t:
        return [A[i::R][:K] for i in range(R)]
    return [A[i * K:(i + 1) * K] for i in range(R)]


def op_cols(B, t, K, N):
    """The N columns (each K long) of op(B), where op(B) is (K,N):
    B is (K,N) when t == 0, (N,K) when t == 1."""
    if t:
        return [B[j * K:(j + 1) * K] for j in range(N)]
    return [B[j::N][:K] for j in range(N)]


def matmul(ta, tb, M, N, K, A, B, bias=None, C=None):
    """op(A)(M,K) . op(B)(K,N) (+ bias[j]) (+ C when C is given: accumulate).

    Returns (result, magnitude): magnitude[i,j] = sum_k |a_ik b_kj| + |bias_j|
    + |C_ij|, the natural scale of the rounding error of element (i,j)."""
    rows, cols = op_rows(A, ta, M, K), op_cols(B, tb, K, N)
    arows = [[abs(x) for x in r] for r in rows]
    acols = [[abs(x) for x in c] for c in cols]
    out, mag = [], []
    mul = operator.mul
    for i in range(M):
        r, ar = rows[i], arows[i]
        for j in range(N):
            s = sum(map(mul, r, cols[j]))
            m = sum(map(mul, ar, acols[j]))
            if bias is not None:
                s += bias[j]
                m += abs(bias[j])
            if C is not None:
                s += C[i * N + j]
                m += abs(C[i * N + j])
            out.append(s)
            mag.append(m)
    return out, mag


def transpose(A, R, C):
    """(R,C) -> (C,R)."""
    return [A[r * C + c] for c in range(C) for r in range(R)]


def dense_forward(inp, weight, bias, B, C, OC):
    """out(B,OC) = inp(B,C) . weight(OC,C)^T + bias."""
    return matmul(0, 1, B, OC, C, inp, weight, bias)[0]


def dense_backward(dout, inp, weight, B, C, OC):
    """(dinp (B,C), dweight (OC,C), dbias (OC,))."""
    dinp = matmul(0, 0, B, C, OC, dout, weight)[0]
    dweight = matmul(1, 0, OC, C, B, dout, inp)[0]
    dbias = [sum(dout[b * OC + o] for b in range(B)) for o in range(OC)]
    return dinp, dweight, dbias


# ---- activations ----------------------------------------------------------------

def relu(x):
    return [v if v > 0 else 0.0 for v in x]


def relu_backward(dout, x):
    return [d if v > 0 else 0.0 for d, v in zip(dout, x)]


def residual(x, fx):
    """A residual block's output relu(x + F(x)), from x and F(x)."""
    return [s if s > 0 else 0.0 for s in f32list([a + b for a, b in zip(x, fx)])]


def residual_backward(dout, out, dbody):
    """dL/dx of a residual block: the gradient around the body (dout where
    the block's output is positive) plus the one through it (dbody)."""
    return f32list([(d if o > 0 else 0.0) + b for d, o, b in zip(dout, out, dbody)])


def leaky_relu(x, slope):
    return [v if v > 0 else slope * v for v in x]


def leaky_relu_backward(dout, x, slope):
    return [d if v > 0 else slope * d for d, v in zip(dout, x)]


def tanh(x):
    return [math.tanh(v) for v in x]


def tanh_backward(dout, out):
    """From the saved OUTPUT y = tanh(x): dx = dout * (1 - y^2)."""
    return [d * (1.0 - y * y) for d, y in zip(dout, out)]


def sigmoid(x, steepness=1.0):
    """The lecture's logistic sigmoid 1 / (1 + e^(-lambda x)), in double."""
    def one(v):
        z = steepness * v
        return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
    return [one(v) for v in x]


def sigmoid_backward(dout, out, steepness=1.0):
    """From the saved OUTPUT y = sigma(x): dx = dout * lambda * y * (1 - y)."""
    return [d * steepness * y * (1.0 - y) for d, y in zip(dout, out)]


def mse(y, d):
    """The lecture's error summed over the batch: sum_k 1/2 sum_j (y_kj - d_kj)^2."""
    return sum(0.5 * (a - b) ** 2 for a, b in zip(y, d))


def mse_backward(y, d, B):
    """dE/dy of the mean error E = 1/B sum_k E_k: (y - d) / B."""
    return [(a - b) / B for a, b in zip(y, d)]


# ---- softmax + cross-entropy -----------------------------------------------------

def argmax(row):
    """Index of the first maximum."""
    best = 0
    for i in range(1, len(row)):
        if row[i] > row[best]:
            best = i
    return best


def softmax_ce(logits, targets, B, V):
    """(probs (B,V), losses (B,), summed loss, correct) with the max subtracted.

    A target outside [0, V) gives (None, None, nan, -1), as the kernel promises."""
    probs, losses, hits = [], [], 0
    for b in range(B):
        row = logits[b * V:(b + 1) * V]
        t = targets[b]
        if not 0 <= t < V:
            return None, None, math.nan, -1
        mx = max(row)
        e = [math.exp(v - mx) for v in row]
        s = math.fsum(e)
        probs += [v / s for v in e]
        losses.append(math.log(s) - (row[t] - mx))
        hits += argmax(row) == t
    return probs, losses, math.fsum(losses), hits


def softmax_ce_backward(probs, targets, B, V):
    """d(mean loss)/dlogits = (probs - onehot(targets)) / B."""
    d = []
    for b in range(B):
        for v in range(V):
            d.append((probs[b * V + v] - (1.0 if v == targets[b] else 0.0)) / B)
    return d


# ---- optimizers ----------------------------------------------------------------

def sgd(param, grad, velocity, lr, momentum, weight_decay):
    """PyTorch's SGD: g = grad + wd*p; v = mom*v + g; p -= lr*v.
    Returns (new param, new velocity)."""
    p2, v2 = [], []
    for p, g, v in zip(param, grad, velocity):
        g = g + weight_decay * p
        v = momentum * v + g
        p2.append(p - lr * v)
        v2.append(v)
    return p2, v2


def adam(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, t):
    """AdamW, t 1-based:
        m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
        mhat = m / (1 - b1^t);  vhat = v / (1 - b2^t)
        p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p)
    Returns (new param, new m, new v)."""
    assert t >= 1
    c1, c2 = 1.0 - beta1 ** t, 1.0 - beta2 ** t
    p2, m2, v2 = [], [], []
    for p, g, mi, vi in zip(param, grad, m, v):
        mi = beta1 * mi + (1.0 - beta1) * g
        vi = beta2 * vi + (1.0 - beta2) * g * g
        mhat, vhat = mi / c1, vi / c2
        p2.append(p - lr * (mhat / (math.sqrt(vhat) + eps) + weight_decay * p))
        m2.append(mi)
        v2.append(vi)
    return p2, m2, v2


# ---- data helpers ----------------------------------------------------------------

def blobs(rng, n, d, k, spread=0.7, extent=2.0):
    """n points in k Gaussian clusters in d dimensions (point i in cluster
    i % k), the centers uniform in [-extent, extent]: (x (n,d), y (n,) int32)."""
    centers = [[rng.uniform(-extent, extent) for _ in range(d)] for _ in range(k)]
    xs, ys = [], []
    for i in range(n):
        c = i % k
        xs += [m + rng.gauss(0.0, spread) for m in centers[c]]
        ys.append(c)
    return Tensor.from_list(xs, (n, d)), Tensor.from_list(ys, (n,), "int32")


def moments(x):
    """(mean, population variance)."""
    n = len(x)
    if n == 0:
        return 0.0, 0.0
    mu = math.fsum(x) / n
    return mu, math.fsum((v - mu) ** 2 for v in x) / n


def argmax_rows(x, B, V):
    return [argmax(x[b * V:(b + 1) * V]) for b in range(B)]


def draw(seed, i):
    """Draw i of the seed's stream, csrc/internal.h's pynn_draw bit for bit:
    splitmix64's finalizer of (seed + i * 0x9E3779B97F4A7C15) mod 2^64. Every
    random choice of the kernels is a draw: no state, so any thread may
    make any draw in any order."""
    mask = (1 << 64) - 1
    z = (seed + i * 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def dropout_keep(seed, i, p):
    """The dropout mask of csrc/dropout.c, bit for bit: draw i's top 32 bits
    compared with p * 2^32 (p as the float32 the kernel gets, so 0.3 is
    0.30000001192...)."""
    return (draw(seed, i) >> 32) >= min(int(f32(p) * 4294967296.0), 4294967295)


def shuffle(idx, seed):
    """csrc/data.c's pynn_shuffle, bit for bit: Fisher-Yates from the top
    down, position i swapped with j = draw t mod (i + 1), t = 1, 2, ...
    Returns a new list."""
    idx, t = list(idx), 1
    for i in range(len(idx) - 1, 0, -1):
        j = draw(seed, t) % (i + 1)
        idx[i], idx[j] = idx[j], idx[i]
        t += 1
    return idx
