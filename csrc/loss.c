/* loss.c - the losses: softmax + cross-entropy (fused), and the lecture's mean
 * squared error. Each forward returns the SUM of the per-example losses (the
 * caller divides by B); each backward writes the gradient of the MEAN.
 *
 * The plain versions they must equal: tests/reference.py softmax_ce,
 * softmax_ce_backward, mse, mse_backward; with label smoothing
 * tests/cnn_reference.py softmax_ce_smooth.
 */
#include <math.h>

#include "internal.h"

/* ---- softmax + cross-entropy ---------------------------------------------- */

double crossentropy_softmax_forward(float *probs, float *losses, int32_t *correct,
                                    const float *logits, const int32_t *targets,
                                    float smoothing, int B, int V) {
    /* logits, probs are (B,V); targets, losses are (B,)
     * probs[b,:] = exp(logits[b,:] - max) / sum exp(logits[b,:] - max)
     * loss[b]    = -sum_v q[v] log probs[b,v],  q = (1 - eps) onehot(target) + eps / V
     *            = logsumexp(logits[b,:]) - (1 - eps) logits[b,target] - eps mean_v logits[b,v]
     * (eps = smoothing; with eps = 0 the loss is -log probs[b,target] alone: the
     * smoothing branch is skipped) */
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
        if (smoothing != 0.0f) /* -log p_v = log(sum) - (x_v - max) for every v;
                                * (1-eps) loss + eps mean_v(-log p_v), the fused product
                                * named (fma) so that every compiler fuses the same one */
            loss = fma(1.0 - smoothing, loss, smoothing * (log(sum) - shifted / V));
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
