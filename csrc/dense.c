/* dense.c - the Linear layer (a fully connected layer), forward and backward,
 * and the same fused with a ReLU. Its products are gemm.c's.
 *
 *     forward:   out = inp . weight^T + bias                (the inner potential xi)
 *     backward:  dinp = dout . weight,  dweight = dout^T . inp,  dbias = column sums of dout
 *
 * The plain version it must equal: tests/reference.py dense_forward /
 * dense_backward (tests/test_kernels.py).
 */
#include "internal.h"

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
#define BACKWARD_IN_PARALLEL(B, C, OC) (4.0 * (B) * (C) * (OC) >= PAR_MIN_FLOPS)

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
