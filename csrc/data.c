/* data.c - small helpers on whole datasets and batches. */
#include <math.h>
#include <string.h>

#include "pynn.h"

void pynn_moments(const float *x, int64_t n, double *mean, double *var) {
    /* two passes in double: exact enough for 47 million pixels */
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += x[i];
    const double mu = n > 0 ? s / (double)n : 0.0;
    double q = 0.0;
    for (int64_t i = 0; i < n; i++) q += (x[i] - mu) * (x[i] - mu);
    *mean = mu;
    *var = n > 0 ? q / (double)n : 0.0;
}

void pynn_scale_shift(float *x, int64_t n, float scale, float shift) {
#pragma omp parallel for schedule(static) if (n >= 65536)
    for (int64_t i = 0; i < n; i++) x[i] = x[i] * scale + shift;
}

void pynn_gather_rows(float *out, const float *inp, const int32_t *idx, int B, int C) {
    /* out is (B,C), inp is (N,C): out[i,:] = inp[idx[i],:] */
    for (int i = 0; i < B; i++)
        memcpy(out + (size_t)i * C, inp + (size_t)idx[i] * C, (size_t)C * sizeof(float));
}

void pynn_gather_labels(int32_t *out, const int32_t *inp, const int32_t *idx, int B) {
    for (int i = 0; i < B; i++) out[i] = inp[idx[i]];
}

void pynn_argmax(int32_t *out, const float *inp, int B, int V) {
    /* inp is (B,V), out is (B,): the first maximum of each row */
    for (int b = 0; b < B; b++) {
        const float *x = inp + (size_t)b * V;
        int arg = 0;
        for (int v = 1; v < V; v++)
            if (x[v] > x[arg]) arg = v;
        out[b] = arg;
    }
}

int64_t pynn_count_equal(const int32_t *a, const int32_t *b, int64_t n) {
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) k += (a[i] == b[i]);
    return k;
}

int pynn_all_finite(const float *x, int64_t n) {
    int ok = 1;
    for (int64_t i = 0; i < n; i++) ok &= isfinite(x[i]) ? 1 : 0;
    return ok;
}
