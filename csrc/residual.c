/* residual.c - the skip connection of a residual block (He, Zhang, Ren and
 * Sun, "Deep Residual Learning for Image Recognition", 2016): the block's
 * output is
 *
 *     out = relu(x + F(x))
 *
 * where F is the block's body (conv, batch norm, activation, conv, batch
 * norm: Residual in pynn/layers.py). The body learns only what it adds to
 * x; its gradient reaches x by two ways, through F and around it.
 * All arrays are (N,), any shape flattened: inp is x, fx is F(x).
 *
 * Backward, given dout = dL/dout, in two halves around the body's backward:
 *
 *     dsum = dout * [out > 0]          the ReLU's derivative (out > 0 exactly
 *                                      where x + F(x) > 0): relu_backward
 *                                      (activation.c) with out for its input
 *     dinp = dsum + dbody              dbody = dsum carried back through F
 *
 * residual_backward is the second half. It computes dsum again from dout
 * and out instead of reading it back: a body may change its dout in place
 * (a fused Linear + ReLU masks it), and dsum is the body's dout.
 *
 * The plain versions they must equal: tests/reference.py residual and
 * residual_backward.
 */
#include "internal.h"

void residual_forward(float *out, const float *inp, const float *fx, int64_t N) {
#pragma omp parallel for schedule(static) if (N >= PAR_MIN)
    for (int64_t i = 0; i < N; i++) {
        const float s = inp[i] + fx[i];
        out[i] = s > 0.0f ? s : 0.0f;
    }
}

void residual_backward(float *dinp, const float *dout, const float *out, const float *dbody,
                       int64_t N) {
#pragma omp parallel for schedule(static) if (N >= PAR_MIN)
    for (int64_t i = 0; i < N; i++) dinp[i] = (out[i] > 0.0f ? dout[i] : 0.0f) + dbody[i];
}
