/* fused.c - batch norm, ReLU and 2x2 max-pool in one kernel pair: the tail of
 * a conv block (Conv2d, BatchNorm2d, ReLU, MaxPool2d), which pynn/fuse.py
 * hands to it; and, at the end of the file, the whole first block (its
 * one-channel Conv2d too) in another pair, built on the first.
 *
 *     out = maxpool2x2(max(gamma * (inp - mean) * invstd + beta, 0))
 *
 * The plain version it must equal is the three layers one after another:
 * batchnorm_forward (norm.c), relu_forward (activation.c), maxpool2x2_forward
 * (pool.c) - the same bits forward, the same gradients up to the order of
 * the sums backward (tests/test_cnn_kernels.py, tests/test_fuse.py).
 *
 * Why fuse: the three layers touch the conv's output, the block's largest
 * tensor, in turn: batch norm reads it twice and writes it, the ReLU again,
 * the pool reads it, and backward the same once more. Fused, the forward
 * reads it twice (statistics, then normalize, ReLU and pool on the fly) and
 * writes only the pooled quarter; in training, also each window's route:
 * which input won and whether it got through the ReLU, and its value (as
 * PyTorch's max-pool keeps its indices; pool.c's MaxPool2d, the plain
 * version, finds them again in its backward). The backward takes batch
 * norm's sums from the routes (three arrays of the pooled size: way, zway
 * and dout) and reads inp once more for the gradient. (The first version
 * recomputed the routes from inp in both passes: the first block's backward
 * took 1.4x as long; the tail alone is faster that way, but whole training
 * steps 0.96x as long this way, docs/performance.md, 2026-12-07.)
 */
#include "internal.h"

/* y = max(scale * z + shift, 0): one channel's normalized, rectified value */
static inline float bn_relu(float z, float scale, float shift) {
    const float v = scale * z + shift;
    return v > 0.0f ? v : 0.0f;
}

/* One window of the tail, from its four inputs z0..z3 (the conv's outputs):
 * their y = max(scale z + shift, 0), the largest y (top, the pool's output),
 * which input is the first maximum of the y (the pool's rule,
 * pynn_window_argmax, spelled here as comparisons: "y1, y2, y3 took the lead
 * in turn", so that loops over channels vectorize) and that input's z. The
 * winner is a float, 0 to 3 (ints and an index array leave gcc's AVX2 target
 * a scalar loop). */
typedef struct {
    float top, winner, z;
} route;

static inline route window_route(float z0, float z1, float z2, float z3, float scale,
                                 float shift) {
    const float v0 = bn_relu(z0, scale, shift), v1 = bn_relu(z1, scale, shift);
    const float v2 = bn_relu(z2, scale, shift), v3 = bn_relu(z3, scale, shift);
    const int s1 = v1 > v0;
    const float m1 = s1 ? v1 : v0;
    const int s2 = v2 > m1;
    const float m2 = s2 ? v2 : m1;
    const int s3 = v3 > m2;
    const float z_so_far = s1 ? z1 : z0, z_before = s2 ? z2 : z_so_far;
    const route r = {s3 ? v3 : m2, s3 ? 3.0f : s2 ? 2.0f : s1 ? 1.0f : 0.0f,
                     s3 ? z3 : z_before};
    return r;
}

/* one pooled row o (OW,C) from the two input rows r0, r1 (W,C) under it.
 * With `way` and `zway` (training; both or neither), each window's route is
 * kept for the backward: way = the winner (0 to 3) when its y is > 0, where
 * the gradient gets through the ReLU, else -1; zway = the winner's input z. */
static void pooled_row(float *restrict o, float *restrict way, float *restrict zway,
                       const float *restrict r0, const float *restrict r1,
                       const float *restrict scale, const float *restrict shift, int OW, int C) {
    if (!way || !zway) { /* evaluation: the values alone */
        for (int x = 0; x < OW; x++) {
            const size_t at = (size_t)2 * x * C;
            for (int c = 0; c < C; c++) {
                const float v0 = bn_relu(r0[at + c], scale[c], shift[c]);
                const float v1 = bn_relu(r0[at + C + c], scale[c], shift[c]);
                const float v2 = bn_relu(r1[at + c], scale[c], shift[c]);
                const float v3 = bn_relu(r1[at + C + c], scale[c], shift[c]);
                o[(size_t)x * C + c] = pynn_window_max(v0, v1, v2, v3);
            }
        }
        return;
    }
    for (int x = 0; x < OW; x++) {
        const size_t at = (size_t)2 * x * C, ox = (size_t)x * C;
        for (int c = 0; c < C; c++) {
            const route r = window_route(r0[at + c], r0[at + C + c], r1[at + c],
                                         r1[at + C + c], scale[c], shift[c]);
            o[ox + c] = r.top;
            way[ox + c] = r.top > 0.0f ? r.winner : -1.0f;
            zway[ox + c] = r.z;
        }
    }
}

void batchnorm_relu_maxpool_forward(float *out, float *way, float *zway, float *mean,
                                    float *invstd, float *running_mean, float *running_var,
                                    const float *inp, const float *gamma, const float *beta,
                                    int B, int H, int W, int C, float momentum, float eps,
                                    int training) {
    /* out (B,H/2,W/2,C) = maxpool(max(gamma * (inp - mean) * invstd + beta, 0));
     * way, zway (B,H/2,W/2,C): each window's route (pooled_row), or NULL */
    const int64_t N = (int64_t)B * H * W;
    const int keep = way && zway;
    pynn_bn_statistics(mean, invstd, running_mean, running_var, inp, N, C, momentum, eps,
                       training);
    float *coef = pynn_work(PYNN_WORK_COEFFICIENTS, (size_t)C * 3);
    const float *scale = coef, *shift = coef + C;
    pynn_bn_coefficients(coef, coef + C, mean, invstd, gamma, beta, C);
    const int OH = H / 2, OW = W / 2;
    const size_t row = (size_t)W * C;
#pragma omp parallel for schedule(static) if (N * C >= PAR_MIN)
    for (int64_t q = 0; q < (int64_t)B * OH; q++) {
        const float *r0 = inp + ((size_t)(q / OH) * H + 2 * (q % OH)) * row;
        const size_t oq = (size_t)q * OW * C;
        pooled_row(out + oq, keep ? way + oq : NULL, keep ? zway + oq : NULL, r0, r0 + row,
                   scale, shift, OW, C);
    }
}

/* pass 1 over one pooled row: sb[c] = sum dy, sx[c] = sum dy * (z - mean) over
 * its windows, from the routes the forward kept (way, zway) and the pooled
 * row's dout g: dy = g where the winner's y is > 0 (way >= 0), else 0 */
static void pooled_sums(float *restrict sb, float *restrict sx, const float *restrict way,
                        const float *restrict zway, const float *restrict g,
                        const float *restrict mean, int OW, int C) {
    for (int c = 0; c < C; c++) sb[c] = sx[c] = 0.0f;
    for (int x = 0; x < OW; x++) {
        const float *wx = way + (size_t)x * C, *zx = zway + (size_t)x * C;
        const float *gx = g + (size_t)x * C;
        for (int c = 0; c < C; c++) {
            const float dy = wx[c] >= 0.0f ? gx[c] : 0.0f;
            sb[c] += dy;
            sx[c] += dy * (zx[c] - mean[c]);
        }
    }
}

/* pass 2 over one pooled row: dinp = cd * dy + ca * z + cb at its two input
 * rows d0, d1 (dy = the pooled row's dout g at each window's winner, where
 * way says, and 0 elsewhere and in an odd last column) */
static void pooled_grad(float *restrict d0, float *restrict d1, const float *restrict r0,
                        const float *restrict r1, const float *restrict way,
                        const float *restrict g, const float *restrict ca,
                        const float *restrict cb, const float *restrict cd, int OW, int W,
                        int C) {
    for (int x = 0; x < OW; x++) {
        const size_t at = (size_t)2 * x * C;
        const float *p0 = r0 + at, *p1 = p0 + C, *p2 = r1 + at, *p3 = p2 + C;
        const float *gx = g + (size_t)x * C, *wx = way + (size_t)x * C;
        float *e0 = d0 + at, *e1 = e0 + C, *e2 = d1 + at, *e3 = e2 + C;
#pragma omp simd /* gcc's alias check sends this loop down its scalar path */
        for (int c = 0; c < C; c++) {
            /* t[i]: the dy that reaches input i (the winner's, else 0) */
            const float t0 = wx[c] == 0.0f ? gx[c] : 0.0f, t1 = wx[c] == 1.0f ? gx[c] : 0.0f;
            const float t2 = wx[c] == 2.0f ? gx[c] : 0.0f, t3 = wx[c] == 3.0f ? gx[c] : 0.0f;
            /* dinp = ca z + cb + cd t, with each rounding written out
             * (muladd, product: internal.h): the last input's cd t is
             * rounded apart. That is what gcc had made of the plain
             * expressions, on AVX2 and AVX-512 alike, and what the golden
             * predictions were computed with. */
            e0[c] = muladd(cd[c], t0, muladd(ca[c], p0[c], cb[c]));
            e1[c] = muladd(cd[c], t1, muladd(ca[c], p1[c], cb[c]));
            e2[c] = muladd(cd[c], t2, muladd(ca[c], p2[c], cb[c]));
            e3[c] = muladd(ca[c], p3[c], cb[c]) + product(cd[c], t3);
        }
    }
    for (int x = 2 * OW; x < W; x++) /* an odd last column */
        for (int c = 0; c < C; c++) {
            d0[(size_t)x * C + c] = ca[c] * r0[(size_t)x * C + c] + cb[c];
            d1[(size_t)x * C + c] = ca[c] * r1[(size_t)x * C + c] + cb[c];
        }
}

/* dinp = a * inp + b on a row (W,C) that no window covers (dy = 0) */
static void windowless_row(float *restrict d, const float *restrict r, const float *restrict ca,
                           const float *restrict cb, int W, int C) {
    for (size_t t = 0; t < (size_t)W * C; t++) d[t] = ca[t % C] * r[t] + cb[t % C];
}

/* pass 1 of both backwards: each pooled row's sums (pooled_sums, in
 * parallel, a block each), then batch norm's dgamma, dbeta and the
 * coefficients ca, cb, cd of dinp = cd * dy + ca * inp + cb from them,
 * merged in order (norm.c) */
static void route_coefficients(float *ca, float *cb, float *cd, float *dgamma, float *dbeta,
                               const float *dout, const float *way, const float *zway,
                               const float *mean, const float *invstd, const float *gamma,
                               int B, int H, int W, int C) {
    /* ca, cb, cd, dgamma, dbeta, mean, invstd, gamma are (C,); dout, way,
     * zway are (B,H/2,W/2,C); the block sums part are (B*H/2, 2, C) */
    const int64_t N = (int64_t)B * H * W, nq = (int64_t)B * (H / 2);
    const size_t prow = (size_t)(W / 2) * C;
    float *part = pynn_work(PYNN_WORK_BLOCK_SUMS, (size_t)(nq > 0 ? nq : 1) * C * 2);
#pragma omp parallel for schedule(static) if (N * C >= PAR_MIN)
    for (int64_t q = 0; q < nq; q++)
        pooled_sums(part + (size_t)q * C * 2, part + (size_t)q * C * 2 + C, way + q * prow,
                    zway + q * prow, dout + q * prow, mean, W / 2, C);
    pynn_bn_backward_coefficients(ca, cb, cd, dgamma, dbeta, part, nq, mean, invstd, gamma, N,
                                  C);
}

void batchnorm_relu_maxpool_backward(float *dinp, float *dgamma, float *dbeta,
                                     const float *dout, const float *way, const float *zway,
                                     const float *inp, const float *mean, const float *invstd,
                                     const float *gamma, int B, int H, int W, int C) {
    /* The pool passes dout to each window's first maximum and the ReLU lets
     * it through where that maximum is > 0: dy is dout there, 0 elsewhere
     * (the routes the forward kept, way and zway). Batch norm's backward
     * (norm.c) then needs sum dy and sum dy * (inp - mean) per channel (pass
     * 1, a block per pooled row, merged in order) and writes dinp = d * dy +
     * a * inp + b everywhere (pass 2). */
    const int64_t N = (int64_t)B * H * W, nq = (int64_t)B * (H / 2);
    const int OW = W / 2, OH = H / 2;
    const size_t row = (size_t)W * C, prow = (size_t)OW * C;
    float *coef = pynn_work(PYNN_WORK_COEFFICIENTS, (size_t)C * 3);
    float *ca = coef, *cb = coef + C, *cd = coef + 2 * C;
    (void)N; /* read only by the clause below, which a build without OpenMP ignores */
    route_coefficients(ca, cb, cd, dgamma, dbeta, dout, way, zway, mean, invstd, gamma, B, H, W,
                       C);
#pragma omp parallel for schedule(static) if (N * C >= PAR_MIN)
    for (int64_t q = 0; q < nq; q++) {
        const size_t top = ((size_t)(q / OH) * H + 2 * (q % OH)) * row;
        pooled_grad(dinp + top, dinp + top + row, inp + top, inp + top + row, way + q * prow,
                    dout + q * prow, ca, cb, cd, OW, W, C);
    }
    if (H % 2) /* an odd last row of each image (or H == 1): no window, dy = 0 */
        for (int64_t b = 0; b < B; b++) {
            const size_t at = ((size_t)b * H + H - 1) * row;
            windowless_row(dinp + at, inp + at, ca, cb, W, C);
        }
}

/* ---- the first conv block: Conv2d(1, C), batch norm, ReLU, max-pool ------------------ */
/* The first layer's output (B,H,W,C) is the network's largest tensor (128
 * images x 28 x 28 x 32 channels: 12.8 MB). Run as layers, it is written by
 * the conv, read twice by the tail's forward and twice by its backward, whose
 * gradient (as large) is written for the conv's weight gradient to read. But
 * the conv reads one channel, so each of its values costs only k*k = 9
 * multiply-adds of the image: these two kernels never store it. Each pass
 * over it (the forward's two, the backward's gradient pass; its sums come
 * from the routes) recomputes the few rows it needs from the image
 * (pynn_direct_pixels, conv.c)
 * into a buffer that stays in L1 or L2, and the gradient of the conv's output
 * lives one image at a time, in L2 (recomputing instead of storing, as
 * activation checkpointing does across layers). Timed alone, the kernels
 * gain little (the stored tensor waits in the L3 from one call to the next);
 * in a training step, where the other layers run in between, the default
 * network's step takes 0.90x the time (docs/performance.md, 2026-12-07).
 *
 * The plain version it must equal: conv2d_forward, then
 * batchnorm_relu_maxpool_forward, and backward the same two in reverse
 * (conv2d_backward without dinp: this is the first layer). The same bits,
 * forward and backward: the recomputed values are the conv's own, batch
 * norm's sums go in the same blocks of rows (pynn_bn_statistics_of) and the
 * weight gradient's in the same slots of images (pynn_direct_dweight), in
 * the same order (tests/test_fuse.py). */
typedef struct {
    const float *inp, *wt; /* the images (B,H,W); the conv's weights, taps first */
    int H, W, C, OCP, k;   /* C: the conv's output channels, OCP of them stored per tap */
    size_t padn;           /* floats of a padded image */
    const float *scale, *shift;          /* the forward's: batch norm's coefficients, */
    float *out, *way, *zway;             /* its pooled output and the windows' routes */
    const float *dout, *bway, *ca, *cb, *cd; /* the backward's */
} first_block;

static first_block first_block_of(const float *inp, const float *weight, int H, int W, int C,
                                  int k) {
    first_block f = {.inp = inp, .H = H, .W = W, .C = C, .k = k,
                     .padn = pynn_direct_pad_floats(H, W, k)};
    f.wt = pynn_direct_weights(weight, C, k, &f.OCP);
    return f;
}

/* the conv's output rows y0 .. y1-1 of the image padded in pad, into rows */
static void conv_rows(float *rows, const first_block *f, const float *pad, int y0, int y1) {
    pynn_direct_pixels(rows, pad, f->wt, NULL, y0 * f->W, y1 * f->W, f->W, f->C, f->OCP, f->k);
}

/* the floats of scratch conv_output_rows needs: a pad and a block of rows */
static size_t first_block_scratch(const first_block *f) {
    return f->padn + (size_t)PYNN_BN_BLOCK * f->C;
}

/* rows [r0, r1) of the conv's output (B*H*W rows of C) for batch norm's
 * statistics (pynn_row_block): the pixels of each image the block reaches
 * into, recomputed into scratch (first_block_scratch floats) */
static const float *conv_output_rows(void *ctx, int64_t r0, int64_t r1, float *scratch) {
    const first_block *f = ctx;
    const int64_t HW = (int64_t)f->H * f->W;
    float *pad = scratch, *block = pad + f->padn;
    for (int64_t b = r0 / HW; b * HW < r1; b++) {
        const int64_t p0 = (r0 > b * HW ? r0 : b * HW) - b * HW;             /* its pixels */
        const int64_t p1 = (r1 < (b + 1) * HW ? r1 : (b + 1) * HW) - b * HW; /* [p0, p1) */
        pynn_direct_pad(pad, f->inp + b * HW, f->H, f->W, f->k);
        pynn_direct_pixels(block + (size_t)(b * HW + p0 - r0) * f->C, pad, f->wt, NULL, (int)p0,
                           (int)p1, f->W, f->C, f->OCP, f->k);
    }
    return block;
}

/* For each image and each pooled row q of it (b * H/2 + y), the two conv
 * output rows under it recomputed (W,C each) and handed to visit; the
 * images are shared among the threads, each with its pad and rows */
typedef void (*row_pair_visit)(const first_block *f, int64_t q, const float *r0,
                               const float *r1);
static void each_row_pair(const first_block *f, int B, row_pair_visit visit) {
    const int H = f->H, W = f->W, C = f->C, OH = H / 2;
    const size_t per = f->padn + (size_t)2 * W * C; /* a thread's pad and two rows */
    float *scr = pynn_work(PYNN_WORK_RECOMPUTED, (size_t)omp_get_max_threads() * per);
#pragma omp parallel if ((int64_t)B * H * W * C >= PAR_MIN)
    {
        float *pad = scr + (size_t)omp_get_thread_num() * per, *rows = pad + f->padn;
#pragma omp for schedule(static)
        for (int b = 0; b < B; b++) {
            pynn_direct_pad(pad, f->inp + (size_t)b * H * W, H, W, f->k);
            for (int y = 0; y < OH; y++) {
                conv_rows(rows, f, pad, 2 * y, 2 * y + 2);
                visit(f, (int64_t)b * OH + y, rows, rows + (size_t)W * C);
            }
        }
    }
}

/* the forward's visit: pooled row q of the output (and its routes) */
static void pool_row_pair(const first_block *f, int64_t q, const float *r0, const float *r1) {
    const size_t oq = (size_t)q * (f->W / 2) * f->C;
    const int keep = f->way && f->zway;
    pooled_row(f->out + oq, keep ? f->way + oq : NULL, keep ? f->zway + oq : NULL, r0, r1,
               f->scale, f->shift, f->W / 2, f->C);
}

void conv_batchnorm_relu_maxpool_forward(float *out, float *way, float *zway, float *mean,
                                         float *invstd, float *running_mean, float *running_var,
                                         const float *inp, const float *weight,
                                         const float *gamma, const float *beta, int B, int H,
                                         int W, int C, int k, float momentum, float eps,
                                         int training) {
    /* out (B,H/2,W/2,C) = maxpool(max(batchnorm(conv2d(inp, weight)), 0)),
     * inp (B,H,W,1), weight (C,k,k,1): statistics of the recomputed conv
     * output (training), then each pair of its rows recomputed, normalized,
     * rectified and pooled; way, zway: the windows' routes, as
     * batchnorm_relu_maxpool_forward's */
    first_block f = first_block_of(inp, weight, H, W, C, k);
    const int64_t N = (int64_t)B * H * W;
    pynn_bn_statistics_of(mean, invstd, running_mean, running_var, conv_output_rows, &f,
                          first_block_scratch(&f), N, C, momentum, eps, training);
    float *coef = pynn_work(PYNN_WORK_COEFFICIENTS, (size_t)C * 2);
    pynn_bn_coefficients(coef, coef + C, mean, invstd, gamma, beta, C);
    f.scale = coef, f.shift = coef + C, f.out = out, f.way = way, f.zway = zway;
    each_row_pair(&f, B, pool_row_pair);
}

/* the gradient (H,W,C) of image b's conv output, into scratch (pynn_image_grad):
 * pass 2 of batchnorm_relu_maxpool_backward on its recomputed rows */
static const float *conv_output_grad(void *ctx, int b, const float *pad, float *scratch) {
    const first_block *f = ctx;
    const int H = f->H, W = f->W, C = f->C, OH = H / 2, OW = W / 2;
    const size_t row = (size_t)W * C;
    float *dz = scratch, *rows = dz + (size_t)H * row;
    for (int y = 0; y < OH; y++) {
        conv_rows(rows, f, pad, 2 * y, 2 * y + 2);
        const size_t oq = ((size_t)b * OH + y) * OW * C;
        pooled_grad(dz + 2 * y * row, dz + (2 * y + 1) * row, rows, rows + row, f->bway + oq,
                    f->dout + oq, f->ca, f->cb, f->cd, OW, W, C);
    }
    if (H % 2) { /* an odd last row: no window */
        conv_rows(rows, f, pad, H - 1, H);
        windowless_row(dz + (size_t)(H - 1) * row, rows, f->ca, f->cb, W, C);
    }
    return dz;
}

void conv_batchnorm_relu_maxpool_backward(float *dweight, float *dgamma, float *dbeta,
                                          const float *dout, const float *way, const float *zway,
                                          const float *inp, const float *weight,
                                          const float *mean, const float *invstd,
                                          const float *gamma, int B, int H, int W, int C, int k) {
    /* batchnorm_relu_maxpool_backward's two passes: the sums, from the
     * routes the forward kept; then the conv output's gradient, image by
     * image on its recomputed rows, each image's feeding the conv's weight
     * gradient as it is made */
    first_block f = first_block_of(inp, weight, H, W, C, k);
    float *coef = pynn_work(PYNN_WORK_COEFFICIENTS, (size_t)C * 3);
    float *ca = coef, *cb = coef + C, *cd = coef + 2 * C;
    route_coefficients(ca, cb, cd, dgamma, dbeta, dout, way, zway, mean, invstd, gamma, B, H, W,
                       C);
    f.dout = dout, f.bway = way, f.ca = ca, f.cb = cb, f.cd = cd;
    pynn_direct_dweight(dweight, conv_output_grad, &f, (size_t)(H + 2) * W * C, inp, B, H, W, C,
                        k);
}
