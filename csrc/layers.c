/* layers.c - forward/backward pairs of every layer, in the manner of llm.c.
 * Shapes are given in each comment; all arrays are contiguous float32. */
#include <math.h>

#include "pynn.h"

/* element-wise loops are split across threads only when they are this long */
#define PAR_MIN 65536
/* inside a layer call the threads are awake anyway: split smaller loops */
#define PAR_MIN_FUSED 8192

/* ---- Linear -------------------------------------------------------------- */

void dense_forward(float *out, const float *inp, const float *weight, const float *bias,
                   int B, int C, int OC) {
    /* out is (B,OC), inp is (B,C), weight is (OC,C), bias is (OC,)
     * out[b,o] = bias[o] + sum_c inp[b,c] * weight[o,c]          */
    pynn_gemm(0, 1, B, OC, C, inp, weight, bias, out, 0);
}

/* This thread's share of a Linear's backward products (see dense_backward),
 * inside the caller's parallel region: the three results are independent, so
 * no thread waits between them (the region's end is the one barrier). */
static void dense_backward_team(float *dinp, float *dweight, float *dbias, const float *dout,
                                const float *inp, const float *weight, int B, int C, int OC) {
    if (dinp) pynn_gemm_team(0, 0, B, C, OC, dout, weight, NULL, dinp, 0);
    pynn_gemm_team(1, 0, OC, C, B, dout, inp, NULL, dweight, 0);
    if (dbias) { /* column sums, in blocks of 64 columns so threads can share them */
#pragma omp for schedule(static) nowait
        for (int o0 = 0; o0 < OC; o0 += 64) {
            const int o1 = OC - o0 < 64 ? OC : o0 + 64;
            for (int o = o0; o < o1; o++) dbias[o] = 0.0f;
            for (int b = 0; b < B; b++) {
                const float *row = dout + (size_t)b * OC;
                for (int o = o0; o < o1; o++) dbias[o] += row[o];
            }
        }
    }
}

/* one parallel region for all of a backward pass (two products): worth it above this size */
#define BACKWARD_IN_PARALLEL(B, C, OC) (4.0 * (B) * (C) * (OC) >= PYNN_GEMM_PARALLEL_MIN_FLOPS)

void dense_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                    const float *inp, const float *weight, int B, int C, int OC) {
    /* dout is (B,OC), inp is (B,C), weight is (OC,C)
     * dinp[b,c]    = sum_o dout[b,o] * weight[o,c]     (B,C)
     * dweight[o,c] = sum_b dout[b,o] * inp[b,c]        (OC,C)
     * dbias[o]     = sum_b dout[b,o]                   (OC,)   */
    pynn_gemm_reserve();
#pragma omp parallel if (BACKWARD_IN_PARALLEL(B, C, OC))
    dense_backward_team(dinp, dweight, dbias, dout, inp, weight, B, C, OC);
}

/* ---- Linear + ReLU, fused ------------------------------------------------ */

void dense_relu_forward(float *out, const float *inp, const float *weight, const float *bias,
                        int B, int C, int OC) {
    /* out = max(inp . weight^T + bias, 0): the max is taken as C is stored */
    pynn_gemm(0, 1, B, OC, C, inp, weight, bias, out, PYNN_GEMM_RELU);
}

void dense_relu_backward(float *dinp, float *dweight, float *dbias, float *dout,
                         const float *out, const float *inp, const float *weight, int B, int C,
                         int OC) {
    /* the ReLU passes the gradient where it passed the value: dz = dout * (out > 0),
     * in place; the loop's end is a barrier, then the products of dz */
    const int64_t N = (int64_t)B * OC;
    pynn_gemm_reserve();
#pragma omp parallel if (BACKWARD_IN_PARALLEL(B, C, OC))
    {
#pragma omp for schedule(static)
        for (int64_t i = 0; i < N; i++) dout[i] = out[i] > 0.0f ? dout[i] : 0.0f;
        dense_backward_team(dinp, dweight, dbias, dout, inp, weight, B, C, OC);
    }
}

/* ---- activations: out and inp are (N,), any shape flattened ------------- */

void relu_forward(float *out, const float *inp, int64_t N) {
#pragma omp parallel for schedule(static) if (N >= PAR_MIN)
    for (int64_t i = 0; i < N; i++) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

void relu_backward(float *dinp, const float *dout, const float *inp, int64_t N) {
#pragma omp parallel for schedule(static) if (N >= PAR_MIN)
    for (int64_t i = 0; i < N; i++) dinp[i] = inp[i] > 0.0f ? dout[i] : 0.0f;
}

void leaky_relu_forward(float *out, const float *inp, float slope, int64_t N) {
#pragma omp parallel for schedule(static) if (N >= PAR_MIN)
    for (int64_t i = 0; i < N; i++) out[i] = inp[i] > 0.0f ? inp[i] : slope * inp[i];
}

void leaky_relu_backward(float *dinp, const float *dout, const float *inp, float slope,
                         int64_t N) {
#pragma omp parallel for schedule(static) if (N >= PAR_MIN)
    for (int64_t i = 0; i < N; i++) dinp[i] = inp[i] > 0.0f ? dout[i] : slope * dout[i];
}

void tanh_forward(float *out, const float *inp, int64_t N) {
#pragma omp parallel for schedule(static) if (N >= PAR_MIN)
    for (int64_t i = 0; i < N; i++) out[i] = tanhf(inp[i]);
}

void tanh_backward(float *dinp, const float *dout, const float *out, int64_t N) {
    /* d tanh(x)/dx = 1 - tanh(x)^2, from the saved output */
#pragma omp parallel for schedule(static) if (N >= PAR_MIN)
    for (int64_t i = 0; i < N; i++) dinp[i] = dout[i] * (1.0f - out[i] * out[i]);
}

/* ---- logistic sigmoid ------------------------------------------------------- */

void sigmoid_forward(float *out, const float *inp, float lambda, int64_t N) {
    /* sigma(xi) = 1 / (1 + e^(-lambda xi)); for lambda xi < 0 the same value is
     * e^(lambda xi) / (1 + e^(lambda xi)), so the exponent is never positive:
     * no overflow, and +-inf go to 1 and 0 */
#pragma omp parallel for schedule(static) if (N >= PAR_MIN)
    for (int64_t i = 0; i < N; i++) {
        const float z = lambda * inp[i];
        const float e = expf(-fabsf(z));
        out[i] = z >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
    }
}

void sigmoid_backward(float *dinp, const float *dout, const float *out, float lambda, int64_t N) {
    /* d sigma / d xi = lambda sigma (1 - sigma), from the saved output */
#pragma omp parallel for schedule(static) if (N >= PAR_MIN)
    for (int64_t i = 0; i < N; i++) dinp[i] = dout[i] * lambda * out[i] * (1.0f - out[i]);
}

/* ---- dropout ---------------------------------------------------------------- */

/* keep value i? splitmix64's finalizer of (seed + i * golden ratio): a
 * different, well-mixed 64-bit number for every (seed, i), from which the
 * top 32 bits are compared with p * 2^32. No state: any thread, any order. */
static inline int dropout_keep(uint64_t seed, int64_t i, uint32_t threshold) {
    uint64_t z = seed + (uint64_t)i * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (uint32_t)(z >> 32) >= threshold;
}

void dropout_forward(float *out, const float *inp, float p, uint64_t seed, int64_t N) {
    /* out = inp * mask / (1 - p), mask[i] = 1 with probability 1 - p */
    const uint32_t threshold = (uint32_t)(p * 4294967296.0);
    const float scale = 1.0f / (1.0f - p);
#pragma omp parallel for schedule(static) if (N >= PAR_MIN_FUSED)
    for (int64_t i = 0; i < N; i++)
        out[i] = dropout_keep(seed, i, threshold) ? inp[i] * scale : 0.0f;
}

void dropout_backward(float *dinp, const float *dout, float p, uint64_t seed, int64_t N) {
    /* dropout is linear: its gradient is the same map, dinp = dout * mask / (1 - p),
     * and the same seed gives the same mask */
    dropout_forward(dinp, dout, p, seed, N);
}

/* ---- softmax + cross-entropy ---------------------------------------------- */

double crossentropy_softmax_forward(float *probs, float *losses, int32_t *correct,
                                    const float *logits, const int32_t *targets,
                                    float smoothing, int B, int V) {
    /* logits, probs are (B,V); targets, losses are (B,)
     * probs[b,:] = exp(logits[b,:] - max) / sum exp(logits[b,:] - max)
     * loss[b]    = -sum_v q[v] log probs[b,v],  q = (1 - eps) onehot(target) + eps / V
     *            = logsumexp(logits[b,:]) - (1 - eps) logits[b,target] - eps mean_v logits[b,v]
     * (eps = smoothing; eps = 0 is the plain cross-entropy, computed as before) */
    double total = 0.0;
    int32_t hits = 0;
    for (int b = 0; b < B; b++) {
        const float *x = logits + (size_t)b * V;
        float *p = probs + (size_t)b * V;
        int arg = 0;
        for (int v = 1; v < V; v++)
            if (x[v] > x[arg]) arg = v;
        const float maxv = x[arg];
        double sum = 0.0, shifted = 0.0;
        for (int v = 0; v < V; v++) {
            p[v] = expf(x[v] - maxv);
            sum += p[v];
            shifted += (double)(x[v] - maxv);
        }
        const float inv = (float)(1.0 / sum);
        for (int v = 0; v < V; v++) p[v] *= inv;
        const int t = targets[b];
        if (t < 0 || t >= V) { /* never index outside the row */
            if (correct) *correct = -1;
            return NAN;
        }
        double loss = log(sum) - (double)(x[t] - maxv);
        if (smoothing != 0.0f) /* -log p_v = log(sum) - (x_v - max) for every v */
            loss = (1.0 - smoothing) * loss + smoothing * (log(sum) - shifted / V);
        if (losses) losses[b] = (float)loss;
        total += loss;
        hits += (arg == t);
    }
    if (correct) *correct = hits;
    return total;
}

void crossentropy_softmax_backward(float *dlogits, const float *probs,
                                   const int32_t *targets, float smoothing, int B, int V) {
    /* dlogits, probs are (B,V): d(mean loss)/dlogits = (probs - q) / B with
     * q = (1 - eps) onehot(target) + eps / V (q = onehot when eps = 0) */
    const float scale = 1.0f / (float)B, uniform = smoothing / (float)V * scale;
    const float hit = (1.0f - smoothing) * scale;
    for (int b = 0; b < B; b++) {
        const float *p = probs + (size_t)b * V;
        float *d = dlogits + (size_t)b * V;
        for (int v = 0; v < V; v++) d[v] = p[v] * scale - uniform;
        if (targets[b] >= 0 && targets[b] < V) d[targets[b]] -= hit;
    }
}

/* ---- mean squared error ------------------------------------------------------ */

double mse_forward(const float *y, const float *d, int B, int V) {
    /* y, d are (B,V): sum over the batch of E_k = 1/2 sum_j (y_kj - d_kj)^2 */
    double total = 0.0;
    for (int64_t i = 0; i < (int64_t)B * V; i++) {
        const double e = (double)y[i] - (double)d[i];
        total += 0.5 * e * e;
    }
    return total;
}

void mse_backward(float *dy, const float *y, const float *d, int B, int V) {
    /* dE/dy_kj = (y_kj - d_kj) / B for the mean E = 1/B sum_k E_k */
    const float scale = 1.0f / (float)B;
    for (int64_t i = 0; i < (int64_t)B * V; i++) dy[i] = (y[i] - d[i]) * scale;
}

int pynn_one_hot(float *d, const int32_t *labels, float smoothing, int B, int V) {
    /* d (B,V) = (1 - eps) onehot + eps / V */
    const float off = smoothing / (float)V, on = 1.0f - smoothing + off;
    for (int b = 0; b < B; b++) {
        if (labels[b] < 0 || labels[b] >= V) return -1;
        for (int v = 0; v < V; v++) d[(size_t)b * V + v] = v == labels[b] ? on : off;
    }
    return 0;
}
