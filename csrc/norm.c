/* norm.c - batch normalization (Ioffe & Szegedy 2015) over the rows of x (N,C).
 *
 * One kernel pair serves both uses: after a dense layer x is its (B,F) output
 * (N = B rows, a mean per feature); after a convolution x is its (B,H,W,C)
 * output, which in NHWC is N = B*H*W rows of C channels (a mean per channel
 * over the batch and all pixels, as BatchNorm2d). With mu, var the batch
 * mean and (biased) variance of each column:
 *     xhat = (x - mu) / sqrt(var + eps),   y = gamma * xhat + beta
 * and, when relu is set, y = max(y, 0) (the activation after it, fused).
 * Backward, given dy (the ReLU's mask applied first, when fused):
 *     dbeta = sum_r dy,   dgamma = sum_r dy * xhat,
 *     dx = gamma / sqrt(var + eps) * (dy - (dbeta + xhat * dgamma) / N)
 * (the batch's mean and variance depend on every row, hence the two sums).
 *
 * The plain versions they must equal: tests/cnn_reference.py batchnorm_forward
 * and batchnorm_backward (tests/test_cnn_kernels.py).
 *
 * The column sums are taken in fixed blocks of BLOCK rows, in parallel, and
 * the blocks' results are then merged one after another in double (Chan et
 * al.'s pairwise update for the variance): the blocks do not depend on the
 * thread count, so neither does any result.
 */
#include <math.h>

#include "internal.h"

#define BLOCK PYNN_BN_BLOCK /* rows: a block of 256 x C floats stays in L1/L2 while summed */
#define COLUMNS 64 /* channels whose block sums the backward merges side by side, in
                    * double sums on the stack (any number: each channel's sums are
                    * added in block order all the same) */
#define LANES 16  /* channels summed together (one AVX-512 register; fixed, so that the
                   * sums are the same on every target) */

/* the n_blocks of BLOCK rows that cover N rows */
static int64_t blocks(int64_t N) { return (N + BLOCK - 1) / BLOCK; }

/* s[c] = sum over rows [r0, r1) of x[r,c] (- shift[c], squared when sq), for
 * c in [c0, c0 + n), n <= LANES; x is (.,C). The LANES partial sums live in one
 * register while the rows go by (a loop of fixed length the compiler
 * vectorizes); rows are added in order. */
static inline void sum_rows(float *restrict s, const float *restrict x, int64_t r0, int64_t r1,
                            int C, int c0, int n, const float *restrict shift, int sq) {
    float acc[LANES] = {0}, sh[LANES] = {0};
    if (shift)
        for (int j = 0; j < n; j++) sh[j] = shift[c0 + j];
    if (n == LANES) {
        for (int64_t r = r0; r < r1; r++) {
            const float *row = x + (size_t)r * C + c0;
            for (int j = 0; j < LANES; j++) {
                const float d = row[j] - sh[j];
                acc[j] += sq ? d * d : d;
            }
        }
    } else {
        for (int64_t r = r0; r < r1; r++)
            for (int j = 0; j < n; j++) {
                const float d = x[(size_t)r * C + c0 + j] - sh[j];
                acc[j] += sq ? d * d : d;
            }
    }
    for (int j = 0; j < n; j++) s[j] = acc[j];
}

/* rows [r0, r1) of x (N,C) where they lie: the statistics of a tensor in memory */
typedef struct { const float *x; int C; } stored_rows;
static const float *rows_in_memory(void *ctx, int64_t r0, int64_t r1, float *scratch) {
    (void)r1, (void)scratch;
    const stored_rows *s = ctx;
    return s->x + (size_t)r0 * s->C;
}

/* mean and biased variance of each column of x (N,C), in double: each block
 * of rows gives its count, mean and sum of squared deviations (M2), and the
 * blocks are merged in order (Chan, Golub, LeVeque 1983). The blocks come from
 * rows_of (internal.h): read where they lie, or recomputed (fused.c). */
static void column_moments(double *mean, double *var, pynn_row_block rows_of, void *ctx,
                           size_t scratch, int64_t N, int C) {
    const int64_t nb = blocks(N);
    float *part = pynn_work(PYNN_WORK_BLOCK_SUMS, (size_t)nb * C * 2);
    float *scr = scratch ? pynn_work(PYNN_WORK_RECOMPUTED, omp_get_max_threads() * scratch) : NULL;
#pragma omp parallel for schedule(static) if (N * C >= PAR_MIN)
    for (int64_t q = 0; q < nb; q++) {
        const int64_t r0 = q * BLOCK, r1 = r0 + BLOCK < N ? r0 + BLOCK : N;
        const float *x = rows_of(ctx, r0, r1, scr ? scr + omp_get_thread_num() * scratch : NULL);
        float *m = part + (size_t)q * C * 2, *m2 = m + C;
        for (int c0 = 0; c0 < C; c0 += LANES) {
            const int n = C - c0 < LANES ? C - c0 : LANES;
            sum_rows(m + c0, x, 0, r1 - r0, C, c0, n, NULL, 0);
            for (int j = 0; j < n; j++) m[c0 + j] /= (float)(r1 - r0); /* the block's mean */
            sum_rows(m2 + c0, x, 0, r1 - r0, C, c0, n, m, 1);
        }
    }
    /* the blocks merged in order: with `rows` rows merged so far and block q's
     * nq rows, mean_q and M2_q, delta = mean_q - mean:
     *     mean += delta * nq / (rows + nq),
     *     M2   += M2_q + delta^2 * rows * nq / (rows + nq),
     * and at the end var = M2 / N (var holds M2 until then). Each channel on
     * its own, but the channels side by side in the inner loop, so that one
     * channel's chain of divisions overlaps the others' (a channel at a time,
     * this serial loop took 0.6 % of a default run's samples: perf) */
    for (int c = 0; c < C; c++) mean[c] = 0.0, var[c] = 0.0;
    double rows = 0.0;
    for (int64_t q = 0; q < nb; q++) {
        const double nq = (double)((q + 1) * BLOCK < N ? BLOCK : N - q * BLOCK), tot = rows + nq;
        const float *mean_q = part + (size_t)q * C * 2, *m2_q = mean_q + C;
        for (int c = 0; c < C; c++) {
            const double delta = mean_q[c] - mean[c];
            mean[c] += delta * nq / tot;
            var[c] += m2_q[c] + delta * delta * rows * nq / tot;
        }
        rows = tot;
    }
    for (int c = 0; c < C; c++) var[c] = N > 0 ? var[c] / (double)N : 0.0;
}

/* out[r,c] = a[c] * x[r,c] + b[c], then max(., 0) when relu: the forward's
 * element-wise pass */
static void affine(float *restrict out, const float *restrict x, const float *restrict a,
                   const float *restrict b, int64_t N, int C, int relu) {
#pragma omp parallel for schedule(static) if (N * C >= PAR_MIN)
    for (int64_t r = 0; r < N; r++) {
        const float *xr = x + (size_t)r * C;
        float *o = out + (size_t)r * C;
        if (relu) {
            for (int c = 0; c < C; c++) { /* the ReLU's input, as the backward's mask reads it */
                const float v = muladd(a[c], xr[c], b[c]);
                o[c] = v > 0.0f ? v : 0.0f;
            }
        } else {
            for (int c = 0; c < C; c++) o[c] = a[c] * xr[c] + b[c];
        }
    }
}

void pynn_bn_statistics(float *mean, float *invstd, float *running_mean, float *running_var,
                        const float *inp, int64_t N, int C, float momentum, float eps,
                        int training) {
    stored_rows rows = {inp, C};
    pynn_bn_statistics_of(mean, invstd, running_mean, running_var, rows_in_memory, &rows, 0, N,
                          C, momentum, eps, training);
}

void pynn_bn_statistics_of(float *mean, float *invstd, float *running_mean, float *running_var,
                           pynn_row_block rows_of, void *ctx, size_t scratch, int64_t N, int C,
                           float momentum, float eps, int training) {
    /* training: mean, invstd of this batch, and
     *   running = (1 - momentum) * running + momentum * batch statistic
     *   (the variance unbiased there, N/(N-1), as PyTorch);
     * evaluation: mean, invstd from the running statistics */
    if (training) {
        double *m = (double *)pynn_work(PYNN_WORK_MOMENTS, (size_t)C * 4), *v = m + C;
        column_moments(m, v, rows_of, ctx, scratch, N, C);
        for (int c = 0; c < C; c++) {
            mean[c] = (float)m[c];
            invstd[c] = (float)(1.0 / sqrt(v[c] + eps));
            const double unbiased = N > 1 ? v[c] * (double)N / (double)(N - 1) : v[c];
            /* muladd (internal.h), as in optim.c: of the two products gcc fused
             * the first, clang the second, and the clang build's running
             * variances (so its predictions) parted from gcc's at batch 96 */
            running_mean[c] = muladd(1.0f - momentum, running_mean[c], momentum * (float)m[c]);
            running_var[c] = muladd(1.0f - momentum, running_var[c], momentum * (float)unbiased);
        }
    } else {
        for (int c = 0; c < C; c++) {
            mean[c] = running_mean[c];
            invstd[c] = (float)(1.0 / sqrt((double)running_var[c] + eps));
        }
    }
}

void pynn_bn_coefficients(float *scale, float *shift, const float *mean, const float *invstd,
                            const float *gamma, const float *beta, int C) {
    for (int c = 0; c < C; c++) {
        scale[c] = gamma[c] * invstd[c];
        shift[c] = beta[c] - mean[c] * scale[c];
    }
}

void batchnorm_forward(float *out, float *mean, float *invstd, float *running_mean,
                       float *running_var, const float *inp, const float *gamma,
                       const float *beta, int64_t N, int C, float momentum, float eps,
                       int training, int relu) {
    /* out, inp are (N,C); mean, invstd, running_mean, running_var, gamma, beta (C,)
     * out = gamma * (inp - mean) * invstd + beta  (then max(., 0) if relu),
     * computed as out = scale * inp + shift, scale = gamma * invstd,
     * shift = beta - mean * scale */
    pynn_bn_statistics(mean, invstd, running_mean, running_var, inp, N, C, momentum, eps,
                         training);
    float *coef = pynn_work(PYNN_WORK_COEFFICIENTS, (size_t)C * 3);
    float *scale = coef, *shift = coef + C;
    pynn_bn_coefficients(scale, shift, mean, invstd, gamma, beta, C);
    affine(out, inp, scale, shift, N, C, relu);
}

void pynn_bn_backward_coefficients(float *a, float *b, float *d, float *dgamma, float *dbeta,
                                     const float *part, int64_t nb, const float *mean,
                                     const float *invstd, const float *gamma, int64_t N, int C) {
    /* part is (nb, 2, C): per block of rows, sum dy and sum dy * (inp - mean);
     * merged in block order, in double:
     *   dbeta = sum dy,  dgamma = sum dy * xhat = invstd * sum dy * (inp - mean)
     * dinp = k (dy - (dbeta + xhat dgamma) / N), k = gamma invstd, xhat = (inp - mean) invstd,
     *      = d dy + a inp + b  with  d = k,  a = -k dgamma invstd / N,
     *                                b = -k (dbeta - mean dgamma invstd) / N */
    double sums[2 * COLUMNS]; /* sum dy, then sum dy * (inp - mean), of COLUMNS channels */
    const double n = N > 0 ? (double)N : 1.0;
    for (int c0 = 0; c0 < C; c0 += COLUMNS) { /* the blocks in order, the channels side by side */
        const int cols = C - c0 < COLUMNS ? C - c0 : COLUMNS;
        for (int j = 0; j < 2 * COLUMNS; j++) sums[j] = 0.0;
        for (int64_t q = 0; q < nb; q++)
            for (int j = 0; j < cols; j++) {
                sums[j] += part[(size_t)q * C * 2 + c0 + j];
                sums[COLUMNS + j] += part[(size_t)q * C * 2 + C + c0 + j];
            }
        for (int j = 0; j < cols; j++) {
            const int c = c0 + j;
            const double db = sums[j], dg = sums[COLUMNS + j] * invstd[c];
            dbeta[c] = (float)db;
            dgamma[c] = (float)dg;
            const double k = (double)gamma[c] * invstd[c];
            d[c] = (float)k;
            a[c] = (float)(-k * dg * invstd[c] / n);
            b[c] = (float)(-k * (db - (double)mean[c] * dg * invstd[c]) / n);
        }
    }
}

/* the gradient that reaches batch norm's output at x: g, or with the ReLU
 * after it, g where the forward's ReLU input scale * x + shift (its own
 * expression, affine above) was > 0, else 0 */
static inline float masked(float g, float x, float scale, float shift, int relu) {
    return !relu || muladd(scale, x, shift) > 0.0f ? g : 0.0f;
}

void batchnorm_backward(float *dinp, float *dgamma, float *dbeta, const float *dout,
                        const float *inp, const float *mean, const float *invstd,
                        const float *gamma, const float *beta, int64_t N, int C, int relu) {
    /* dinp, dout, inp are (N,C); dgamma, dbeta, mean, invstd, gamma, beta (C,).
     * dy = dout (masked by the ReLU's input > 0 when relu), xhat = (inp - mean) * invstd:
     *   dbeta[c]  = sum_r dy[r,c]
     *   dgamma[c] = sum_r dy[r,c] * xhat[r,c]
     *   dinp[r,c] = gamma[c] * invstd[c] * (dy[r,c] - (dbeta[c] + xhat[r,c] * dgamma[c]) / N)
     * (the last line is the gradient through the batch statistics mean and
     * invstd too, which depend on every row of the batch). Two passes over
     * the rows, the sums and then dinp; the ReLU's mask is recomputed from
     * inp in both (cheaper than storing it or reading the output again).
     * dinp may be dout itself: each element is read before it is written. */
    const int64_t nb = blocks(N);
    float *coef = pynn_work(PYNN_WORK_COEFFICIENTS, (size_t)C * 5);
    float *a = coef, *b = coef + C, *d = coef + 2 * C, *scale = coef + 3 * C;
    float *shift = coef + 4 * C;
    pynn_bn_coefficients(scale, shift, mean, invstd, gamma, beta, C);
    float *part = pynn_work(PYNN_WORK_BLOCK_SUMS, (size_t)nb * C * 2);
#pragma omp parallel for schedule(static) if (N * C >= PAR_MIN)
    for (int64_t q = 0; q < nb; q++) { /* per block: sum dy, sum dy * (inp - mean) */
        const int64_t r0 = q * BLOCK, r1 = r0 + BLOCK < N ? r0 + BLOCK : N;
        float *sb = part + (size_t)q * C * 2, *sx = sb + C;
        for (int c0 = 0; c0 < C; c0 += LANES) {
            const int n = C - c0 < LANES ? C - c0 : LANES;
            float ab[LANES] = {0}, ax[LANES] = {0}, mu[LANES] = {0}, sc[LANES] = {0};
            float sh[LANES] = {0};
            for (int j = 0; j < n; j++)
                mu[j] = mean[c0 + j], sc[j] = scale[c0 + j], sh[j] = shift[c0 + j];
            if (n == LANES) {
                for (int64_t r = r0; r < r1; r++) {
                    const float *g = dout + (size_t)r * C + c0, *x = inp + (size_t)r * C + c0;
                    for (int j = 0; j < LANES; j++) {
                        const float dy = masked(g[j], x[j], sc[j], sh[j], relu);
                        ab[j] += dy, ax[j] = muladd(dy, x[j] - mu[j], ax[j]);
                    }
                }
            } else {
                for (int64_t r = r0; r < r1; r++) {
                    const float *g = dout + (size_t)r * C + c0, *x = inp + (size_t)r * C + c0;
                    for (int j = 0; j < n; j++) {
                        const float dy = masked(g[j], x[j], sc[j], sh[j], relu);
                        ab[j] += dy, ax[j] = muladd(dy, x[j] - mu[j], ax[j]);
                    }
                }
            }
            for (int j = 0; j < n; j++) sb[c0 + j] = ab[j], sx[c0 + j] = ax[j];
        }
    }
    pynn_bn_backward_coefficients(a, b, d, dgamma, dbeta, part, nb, mean, invstd, gamma, N, C);
    /* dinp = d dy + a inp + b, rounded as d * dy + (a * inp + b) with each
     * multiply-add once (what gcc had made of the plain expression, which
     * the golden predictions were computed with) */
#pragma omp parallel for schedule(static) if (N * C >= PAR_MIN)
    for (int64_t r = 0; r < N; r++) {
        const float *x = inp + (size_t)r * C, *g = dout + (size_t)r * C;
        float *o = dinp + (size_t)r * C;
        for (int c = 0; c < C; c++)
            o[c] = muladd(d[c], masked(g[c], x[c], scale[c], shift[c], relu),
                          muladd(a[c], x[c], b[c]));
    }
}
