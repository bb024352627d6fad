/* activation.c - the activation functions, element by element: out and inp
 * are (N,), any shape flattened. Each backward multiplies dout by the
 * derivative f'(xi), computed from what the forward saw (inp) or gave (out).
 *
 * The plain versions they must equal: tests/reference.py relu, leaky_relu,
 * tanh, sigmoid and their _backward.
 */
#include <math.h>

#include "internal.h"

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

void sigmoid_forward(float *out, const float *inp, float steepness, int64_t N) {
    /* the lecture's logistic sigmoid with steepness lambda:
     * sigma(xi) = 1 / (1 + e^(-lambda xi)); for lambda xi < 0 the same value is
     * e^(lambda xi) / (1 + e^(lambda xi)), so the exponent is never positive:
     * no overflow, and +-inf go to 1 and 0 */
#pragma omp parallel for schedule(static) if (N >= PAR_MIN)
    for (int64_t i = 0; i < N; i++) {
        const float z = steepness * inp[i];
        const float e = expf(-fabsf(z));
        out[i] = z >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
    }
}

void sigmoid_backward(float *dinp, const float *dout, const float *out, float steepness,
                      int64_t N) {
    /* d sigma / d xi = lambda sigma (1 - sigma), from the saved output */
#pragma omp parallel for schedule(static) if (N >= PAR_MIN)
    for (int64_t i = 0; i < N; i++) dinp[i] = dout[i] * steepness * out[i] * (1.0f - out[i]);
}
