/* optim.c - parameter updates over flat arrays; param, grad, state are (n,).
 *
 * The lecture's gradient descent, w -= lr * dE/dw, with two improvements:
 *
 *   SGD with momentum:  v = momentum * v + g;  w -= lr * v
 *   Adam (AdamW):       m = b1 m + (1-b1) g;           v = b2 v + (1-b2) g^2
 *                       mhat = m / (1 - b1^t);          vhat = v / (1 - b2^t)
 *                       w -= lr * (mhat / (sqrt(vhat) + eps) + wd * w)
 *
 * m and v are running means of the gradient and of its square; dividing by
 * (1 - b^t) undoes their start at zero (t is the 1-based step count), and
 * the division by sqrt(vhat) gives each weight a step of about lr whatever
 * its gradient's scale. SGD's weight decay is L2 (added to g), AdamW's is
 * decoupled (wd * w, outside the moments).
 *
 * The plain versions they must equal: tests/reference.py sgd and adam
 * (tests/test_kernels.py).
 */
#include <float.h>
#include <math.h>

#include "internal.h"

/* A state that decays geometrically (the momentum of a weight whose gradient
 * is zero, e.g. behind a dead ReLU) reaches the subnormal range within about
 * a thousand steps, and arithmetic on subnormals is several times slower on
 * x86. Flushing such values to zero changes nothing measurable and keeps the
 * update at full speed, without touching the process-wide FPU flags. */
static inline float flush(float x) { return fabsf(x) < FLT_MIN ? 0.0f : x; }

void sgd_update(float *param, const float *grad, float *velocity, int64_t n, int64_t n_decay,
                float lr, float momentum, float weight_decay) {
    /* g = grad + wd * param;  v = momentum * v + g;  param -= lr * v
     * (wd only on the first n_decay values: the weights) */
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float wd = i < n_decay ? weight_decay : 0.0f;
        const float g = grad[i] + wd * param[i];
        velocity[i] = flush(momentum * velocity[i] + g);
        param[i] -= lr * velocity[i];
    }
}

void pynn_ema_update(float *ema, const float *x, int64_t n, float decay) {
    /* ema = decay * ema + (1 - decay) * x, written ema + (1 - decay) (x - ema) */
    const float rate = 1.0f - decay;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t i = 0; i < n; i++) ema[i] += rate * (x[i] - ema[i]);
}

void adam_update(float *param, const float *grad, float *m, float *v, int64_t n,
                 int64_t n_decay, float lr, float beta1, float beta2, float eps,
                 float weight_decay, int t) {
    /* AdamW: moments of the gradient, bias-corrected, decay decoupled (and
     * only on the first n_decay values: the weights) */
    const float c1 = 1.0f / (1.0f - powf(beta1, (float)t));
    const float c2 = 1.0f / (1.0f - powf(beta2, (float)t));
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float g = grad[i];
        /* muladd (internal.h): of the two products gcc fused the first, clang
         * the second, and the MLP's predictions parted within an epoch */
        m[i] = flush(muladd(beta1, m[i], (1.0f - beta1) * g));      /* b1 m + (1-b1) g */
        v[i] = flush(muladd(beta2, v[i], (1.0f - beta2) * g * g));  /* b2 v + (1-b2) g^2 */
        const float mhat = m[i] * c1, vhat = v[i] * c2;
        const float wd = i < n_decay ? weight_decay : 0.0f;
        param[i] -= lr * (mhat / (sqrtf(vhat) + eps) + wd * param[i]);
    }
}
