/* conv.c - 2-D convolution ("same" zero padding, stride 1, odd kernel size k)
 * on images stored NHWC (see pynn.h).
 *
 * The plain version it must equal: tests/cnn_reference.py conv2d_forward /
 * conv2d_backward, seven loops each (tests/test_cnn_kernels.py).
 *
 * A convolution is a matrix product in disguise (im2col). Seen as N = B*H*W
 * rows of C channels, the output pixel r = (b, y, x) is
 *     out[r, o] = bias[o] + sum_t col[r, t] * weight[o, t]
 * where t = (i, j, c) runs over the k*k*C inputs under the kernel, and row r
 * of col holds them: col[r, (i, j, c)] = inp[b, y+i-k/2, x+j-k/2, c], or 0
 * outside the image. So out = col . weight^T + bias: exactly a dense layer's
 * forward (dense_forward), with weight (OC, k*k*C) and B*H*W rows. Its
 * backward is the dense layer's too:
 *     dweight = dout^T . col          (OC, k*k*C)
 *     dbias   = column sums of dout   (OC,)
 *     dcol    = dout . weight, and dinp is dcol summed back over the pixels
 *               that read each input ("col2im")
 * The last one is computed another way, without a scatter: the input gradient
 * of a "same" convolution is again a "same" convolution, of dout with the
 * kernel turned by 180 degrees and its channel axes swapped,
 *     dinp[b, y, x, c] = sum_{i,j,o} dout[b, y+i-k/2, x+j-k/2, o] * wflip[c, i, j, o],
 *     wflip[c, i, j, o] = weight[o, k-1-i, k-1-j, c],
 * so the forward code computes it (index check: dout's row y' = y + i - k/2
 * meets weight[o, k-1-i, ., .], which in the forward read the input at
 * y' + (k-1-i) - k/2 = y, as it should, since k - 1 = 2 (k/2) for odd k).
 *
 * col never exists for a whole batch (for 128 images of 28x28 and k*k*C = 288
 * it would be 115 MB): it is built CHUNK rows at a time into a small buffer
 * that stays in the core's L2 cache while the GEMM reads it. In the forward
 * products each thread takes whole chunks and multiplies them on its own
 * (pynn_gemm_solo): rows are independent, so no thread ever waits for
 * another. dweight is a sum over all rows: there each chunk's product goes
 * to a slot of its own, and the slots are added in chunk order - so its sums,
 * like every other result here, do not depend on the thread count.
 *
 * A one-channel input (the first layer) takes another road, direct loops
 * without im2col (below): its product has K = k*k = 9, too short to pay for
 * building col rows.
 */
#include "internal.h"

/* rows of col per chunk in the forward products: about 256 KB of col */
static int64_t chunk_rows(int kkC) {
    int64_t rows = ((int64_t)65536 / kkC) / 8 * 8;
    return rows < 64 ? 64 : rows > 4096 ? 4096 : rows;
}
/* rows per chunk of the dweight sum: about 1 MB of im2col rows, half a core's
 * L2 here (2 MB chunks ran 17 % slower: they spill to L3) */
#define DW_CHUNK_FLOATS (1 << 18)
/* partial sums of a weight gradient, at most: enough to share the work among
 * the threads, few enough to keep the memory that of DW_SLOTS gradients */
#define DW_SLOTS 16

/* im2col of output pixels [r0, r1) of images (B,H,W,C): col is (r1-r0, k*k*C).
 * For each kernel row i, the k*C inputs under the kernel are one contiguous
 * run of the image row (NHWC), clipped at the left and right edges. */
static void im2col(float *restrict col, const float *restrict inp, int64_t r0, int64_t r1,
                   int H, int W, int C, int k) {
    const int p = k / 2;
    float *dst = col;
    for (int64_t r = r0; r < r1; r++) {
        const int x = (int)(r % W), y = (int)(r / W % H);
        const int64_t b = r / ((int64_t)W * H);
        for (int i = 0; i < k; i++) {
            const int yy = y + i - p;
            if (yy < 0 || yy >= H) {
                for (int t = 0; t < k * C; t++) *dst++ = 0.0f;
                continue;
            }
            const int x0 = x - p < 0 ? 0 : x - p, x1 = x + p >= W ? W - 1 : x + p;
            const float *src = inp + (((size_t)b * H + yy) * W + x0) * C;
            for (int t = 0; t < (x0 - (x - p)) * C; t++) *dst++ = 0.0f;
            for (int t = 0; t < (x1 - x0 + 1) * C; t++) *dst++ = src[t];
            for (int t = 0; t < ((x + p) - x1) * C; t++) *dst++ = 0.0f;
        }
    }
}

/* ---- one input channel: direct loops instead of im2col ------------------- */
/* The first layer reads one channel, so k*k*C is 9 for a 3x3 kernel: as a
 * GEMM a K = 9 product, whose time goes to building and reading im2col rows,
 * not to multiplying. It is computed directly instead. Each image is first
 * copied into a zero-bordered buffer pad (H+k-1, PW), so that no output
 * pixel needs an edge test, and then
 *     out[b,y,x,o] = sum_{i,j} pad[y+i, x+j] * wt[i,j,o]  (+ bias[o])
 *     dw[i,j,o]    = sum_{b,y,x} pad_b[y+i, x+j] * dout[b,y,x,o]
 * with wt[i,j,o] = weight[o,i,j,0] (o last: a vector of channels per tap).
 * The forward keeps a block of DX_FWD pixels x DO channels in registers while
 * the k*k taps go by; the weight gradient keeps DX_DW pixels' partial sums of
 * a few taps (TAPS, below) and DO channels while the pixels of an image go
 * by. Each image's dw is its own (scratch), and the images' are added in
 * image order: as everywhere, the bits do not depend on the thread count. */
#define DX_DW 4      /* pixels of a weight-gradient block (its sums' order depends on it;
                      * the sums of its 4 partial results are written out below) */
_Static_assert(DX_DW == 4, "direct_dweight's sums add exactly 4 partial results");
#define DO (2 * VEC) /* channels of a block: two vecs (internal.h) */
/* pixels of a forward block: 2 * DX_FWD accumulators, 16 of AVX-512's 32
 * registers, 8 of AVX2's 16. (Each output is its own sum over the taps, so
 * the bits do not depend on DX_FWD; with 8 accumulators on AVX-512 the FMAs
 * waited for each other.) */
#if VEC >= 16
#define DX_FWD 8
#else
#define DX_FWD 4
#endif

/* the padded row length: room for the left and right borders and for a last
 * block of DX_DW or DX_FWD pixels that reaches past the image */
static int pad_width(int W, int k) { return W + k - 1 + (DX_DW > DX_FWD ? DX_DW : DX_FWD); }
size_t pynn_direct_pad_floats(int H, int W, int k) { return (size_t)(H + k - 1) * pad_width(W, k); }

/* pad (H+k-1, pad_width) = img (H,W) with a zero border of k/2 (and zeros
 * right of it) */
void pynn_direct_pad(float *restrict pad, const float *restrict img, int H, int W, int k) {
    const int p = k / 2, PW = pad_width(W, k);
    for (int t = 0; t < (H + k - 1) * PW; t++) pad[t] = 0.0f;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) pad[(size_t)(y + p) * PW + x + p] = img[(size_t)y * W + x];
}

/* out (nq, OC) = the outputs of nq <= DX_FWD pixels in a row, channels o0 ..
 * o0+nv*VEC-1 (nv vecs, 1 or 2: one when the channels left fit in one), src
 * their pad's first input (tap 0,0 of the first pixel); written for a
 * constant k and nv (the loops over the taps unroll) */
static inline __attribute__((always_inline)) void
direct_block(float *restrict out, const float *restrict src, const float *restrict wt,
             const float *restrict bias, int PW, int OC, int OCP, int o0, int nq, int k,
             int nv) {
    vec acc[DX_FWD][2];
    for (int q = 0; q < DX_FWD; q++) acc[q][0] = acc[q][1] = vzero();
    for (int i = 0; i < k; i++)
        for (int j = 0; j < k; j++) {
            const float *w = wt + (size_t)(i * k + j) * OCP + o0;
            const float *s = src + (size_t)i * PW + j;
            vec wv[2];
            for (int h = 0; h < nv; h++) wv[h] = vload(w + h * VEC);
            for (int q = 0; q < DX_FWD; q++)
                for (int h = 0; h < nv; h++) acc[q][h] = vfma(acc[q][h], s[q], wv[h]);
        }
    const int nl = OC - o0 < DO ? OC - o0 : DO;
    for (int q = 0; q < nq; q++) {
        float *o = out + (size_t)q * OC + o0;
        for (int h = 0; h < nv; h++) {
            const int l0 = h * VEC;
            if (l0 + VEC <= nl) { /* a whole vec of channels */
                vstore(o + l0, bias ? vadd(acc[q][h], vload(bias + o0 + l0)) : acc[q][h]);
                continue;
            }
            /* the last few channels (bias has no more): the vec stored once,
             * then copied (read lane by lane from the register, each lane
             * cost a store of the whole vec: c16 took 4x c32's time a channel) */
            float lanes[VEC];
            vstore(lanes, acc[q][h]);
            const int n = nl - l0 < VEC ? nl - l0 : VEC; /* (always nl - l0: said for gcc) */
            for (int l = 0; l < n; l++)
                o[l0 + l] = bias ? lanes[l] + bias[o0 + l0 + l] : lanes[l];
        }
    }
}

/* pixels p0 .. p1-1 (row by row) of one image's output, (p1-p0, OC) at out,
 * from its pad; wt (k,k,OCP), OCP = OC rounded up to DO (zeros past OC).
 * Each output value is its own sum over the k*k taps in order, whichever
 * pixels are asked: fused.c recomputes parts of the first layer's output
 * with it. */
void pynn_direct_pixels(float *restrict out, const float *restrict pad,
                        const float *restrict wt, const float *restrict bias, int p0, int p1,
                        int W, int OC, int OCP, int k) {
    const int PW = pad_width(W, k);
    for (int y = p0 / W; y * W < p1; y++) {
        const int x0 = y * W < p0 ? p0 - y * W : 0, x1 = (y + 1) * W > p1 ? p1 - y * W : W;
        for (int x = x0; x < x1; x += DX_FWD) {
            const int nq = x1 - x < DX_FWD ? x1 - x : DX_FWD;
            float *o = out + ((size_t)y * W + x - p0) * OC;
            const float *src = pad + (size_t)y * PW + x;
            for (int o0 = 0; o0 < OC; o0 += DO) {
                /* a last block of VEC channels or fewer computes one vec, not
                 * two (c16 on AVX-512: half the FMAs, and its stores whole) */
                const int nv = OC - o0 > VEC ? 2 : 1;
                /* The 3x3 kernels of every network here. A block of whole
                 * vecs of channels (OC - o0 >= DO) and as many pixels as a
                 * row's blocks have (28 pixels: 3 x 8 + 4 with AVX-512, 7 x
                 * 4 with AVX2) is compiled for exactly that, its stores
                 * straight from the registers: with nq and the channels
                 * left to the run time, gcc kept the sums on the stack for
                 * the loop that stores them (the fused first block took
                 * 0.74-0.77x the time forward, 0.82-0.88x backward, a
                 * default training step 0.975x; scripts/ab_kernels.py,
                 * ab_steps.py, Zen 4, 2026-12-08). The same sums: no bit moves. */
                if (k == 3 && nq == DX_FWD && OC - o0 >= DO)
                    direct_block(o, src, wt, bias, PW, OC, OCP, o0, DX_FWD, 3, 2);
                else if (k == 3 && nq == DX_FWD / 2 && OC - o0 >= DO)
                    direct_block(o, src, wt, bias, PW, OC, OCP, o0, DX_FWD / 2, 3, 2);
                else if (k == 3 && nv == 2)
                    direct_block(o, src, wt, bias, PW, OC, OCP, o0, nq, 3, 2);
                else if (k == 3)
                    direct_block(o, src, wt, bias, PW, OC, OCP, o0, nq, 3, 1);
                else
                    direct_block(o, src, wt, bias, PW, OC, OCP, o0, nq, k, nv);
            }
        }
    }
}

/* Taps of one kernel row summed in one pass over the image: TAPS x DX_DW x 2
 * accumulators. With AVX-512's 32 registers three taps fit (24), and each
 * vector of dout read serves three FMAs instead of one (the pass was bound
 * by its loads); AVX2's 16 hold one tap's 8. Each tap's accumulators see
 * the same sums in the same order either way, so the bits do not depend on
 * TAPS. */
#if VEC >= 16
#define TAPS 3
#else
#define TAPS 1
#endif

/* dw[t0 .. t0+nt-1] (channels o0 .. o0+nv*VEC-1 of each tap (k,k,OCP)) =
 * this image's sum over its pixels of pad[y+i, x+j] * dout[y,x,o], taps t0
 * .. t0+nt-1 in one kernel row (nt <= TAPS and nv <= 2 whole vecs of
 * channels, constants where it is called); dout (H,W,OC) */
static inline __attribute__((always_inline)) void
dweight_taps(float *restrict dw, const float *restrict pad, const float *restrict dout, int H,
             int W, int OC, int OCP, int k, int t0, int nt, int o0, int nv) {
    const int PW = pad_width(W, k);
    vec acc[TAPS][DX_DW][2];
    for (int u = 0; u < nt; u++)
        for (int q = 0; q < DX_DW; q++) acc[u][q][0] = acc[u][q][1] = vzero();
    for (int y = 0; y < H; y++) {
        const float *src = pad + (size_t)(y + t0 / k) * PW + t0 % k; /* tap t0 + u: src + u */
        const float *g = dout + (size_t)y * W * OC + o0;
        int x = 0;
        vec gv[2];
        for (; x + DX_DW <= W; x += DX_DW)
            for (int q = 0; q < DX_DW; q++) {
                for (int h = 0; h < nv; h++) gv[h] = vload(g + (size_t)(x + q) * OC + h * VEC);
                for (int u = 0; u < nt; u++)
                    for (int h = 0; h < nv; h++)
                        acc[u][q][h] = vfma(acc[u][q][h], src[x + q + u], gv[h]);
            }
        for (; x < W; x++) {
            for (int h = 0; h < nv; h++) gv[h] = vload(g + (size_t)x * OC + h * VEC);
            for (int u = 0; u < nt; u++)
                for (int h = 0; h < nv; h++) acc[u][0][h] = vfma(acc[u][0][h], src[x + u], gv[h]);
        }
    }
    for (int u = 0; u < nt; u++)
        for (int h = 0; h < nv; h++) {
            const vec sum =
                vadd(vadd(acc[u][0][h], acc[u][1][h]), vadd(acc[u][2][h], acc[u][3][h]));
            float *d = dw + (size_t)(t0 + u) * OCP + o0 + h * VEC;
            for (int l = 0; l < VEC; l++) d[l] = vget(sum, l);
        }
}

/* dw (k,k,OCP) = this image's sum over its pixels of pad[y+i, x+j] * dout[y,x,o];
 * dout (H,W,OC) */
void pynn_direct_dweight_image(float *restrict dw, const float *restrict pad,
                                const float *restrict dout, int H, int W, int OC, int OCP,
                                int k) {
    const int PW = pad_width(W, k);
    for (int o0 = 0; o0 < OC; o0 += DO) {
        const int nl = OC - o0 < DO ? OC - o0 : DO;
        const int nv = nl / VEC; /* whole vecs: the taps of a kernel row TAPS at a time */
        for (int t = 0; nv && t < k * k;) {
            const int nt = t % k + TAPS <= k ? TAPS : 1;
            if (nt == TAPS && nv == 2)
                dweight_taps(dw, pad, dout, H, W, OC, OCP, k, t, TAPS, o0, 2);
            else if (nt == TAPS)
                dweight_taps(dw, pad, dout, H, W, OC, OCP, k, t, TAPS, o0, 1);
            else if (nv == 2)
                dweight_taps(dw, pad, dout, H, W, OC, OCP, k, t, 1, o0, 2);
            else
                dweight_taps(dw, pad, dout, H, W, OC, OCP, k, t, 1, o0, 1);
            t += nt;
        }
        if (nv * VEC == DO) continue;
        /* the channels past the whole vecs (and past OC: zeros) go one at a
         * time, in the same order as the vecs (four pixel accumulators, then
         * (0 + 1) + (2 + 3)): which channels fall here depends on the vector
         * width, their bits must not */
        const int l0 = nv * VEC;
        for (int t = 0; t < k * k; t++) {
            float rest[DX_DW][DO] = {{0}};
            for (int y = 0; y < H; y++) {
                const float *src = pad + (size_t)(y + t / k) * PW + t % k;
                const float *g = dout + (size_t)y * W * OC + o0;
                int x = 0;
                for (; x + DX_DW <= W; x += DX_DW)
                    for (int q = 0; q < DX_DW; q++)
                        for (int l = l0; l < nl; l++)
                            rest[q][l] += src[x + q] * g[(size_t)(x + q) * OC + l];
                for (; x < W; x++)
                    for (int l = l0; l < nl; l++) rest[0][l] += src[x] * g[(size_t)x * OC + l];
            }
            for (int c = l0; c < DO; c++)
                dw[(size_t)t * OCP + o0 + c] =
                    (rest[0][c] + rest[1][c]) + (rest[2][c] + rest[3][c]);
        }
    }
}

static int round_up(int n, int m) { return (n + m - 1) / m * m; }

const float *pynn_direct_weights(const float *weight, int OC, int k, int *OCP) {
    *OCP = round_up(OC, DO);
    float *wt = pynn_work(PYNN_WORK_TAP_WEIGHTS, (size_t)k * k * *OCP);
    for (int t = 0; t < k * k; t++)
        for (int o = 0; o < *OCP; o++)
            wt[(size_t)t * *OCP + o] = o < OC ? weight[(size_t)o * k * k + t] : 0.0f;
    return wt;
}

/* conv2d_forward of a one-channel input: inp (B,H,W), the rest as there */
static void direct_forward(float *out, const float *inp, const float *weight, const float *bias,
                           int B, int H, int W, int OC, int k) {
    int OCP;
    const float *wt = pynn_direct_weights(weight, OC, k, &OCP);
    const size_t padn = pynn_direct_pad_floats(H, W, k);
    float *pads = pynn_work(PYNN_WORK_PADDED_IMAGES, (size_t)omp_get_max_threads() * padn);
#pragma omp parallel if (2.0 * B * H * W * k * k * OC >= PAR_MIN_FLOPS)
    {
        float *pad = pads + (size_t)omp_get_thread_num() * padn;
#pragma omp for schedule(static)
        for (int b = 0; b < B; b++) {
            pynn_direct_pad(pad, inp + (size_t)b * H * W, H, W, k);
            pynn_direct_pixels(out + (size_t)b * H * W * OC, pad, wt, bias, 0, H * W, W, OC, OCP,
                               k);
        }
    }
}

/* dout of image b as conv2d_backward has it: a slice of the batch's */
typedef struct { const float *dout; size_t per; } batch_grad;
static const float *slice_of(void *ctx, int b, const float *pad, float *scratch) {
    (void)pad, (void)scratch;
    const batch_grad *g = ctx;
    return g->dout + (size_t)b * g->per;
}

/* conv2d_backward's dweight of a one-channel input, dweight (OC,k,k), with
 * image b's output gradient from grad_of (internal.h). The images go in at
 * most DW_SLOTS slots of consecutive images, each summed in image order, then
 * the slots in order (as gemm_dweight's chunks). */
void pynn_direct_dweight(float *dweight, pynn_image_grad grad_of, void *ctx, size_t scratch,
                         const float *inp, int B, int H, int W, int OC, int k) {
    const int OCP = round_up(OC, DO), kk = k * k;
    const int n_slots = B < DW_SLOTS ? B : DW_SLOTS, threads = omp_get_max_threads();
    const size_t padn = pynn_direct_pad_floats(H, W, k), per = (size_t)kk * OCP;
    float *slot = pynn_work(PYNN_WORK_PARTIAL_DWEIGHT, (size_t)(n_slots + threads) * per);
    float *pads = pynn_work(PYNN_WORK_PADDED_IMAGES, (size_t)threads * (padn + scratch));
#pragma omp parallel if (2.0 * B * H * W * kk * OC >= PAR_MIN_FLOPS)
    {
        float *pad = pads + (size_t)omp_get_thread_num() * (padn + scratch);
        float *image = slot + (size_t)(n_slots + omp_get_thread_num()) * per;
#pragma omp for schedule(dynamic)
        for (int sl = 0; sl < n_slots; sl++) {
            float *sum = slot + (size_t)sl * per;
            for (size_t t = 0; t < per; t++) sum[t] = 0.0f;
            const int b0 = (int)((int64_t)sl * B / n_slots);
            const int b1 = (int)((int64_t)(sl + 1) * B / n_slots);
            for (int b = b0; b < b1; b++) {
                pynn_direct_pad(pad, inp + (size_t)b * H * W, H, W, k);
                const float *g = grad_of(ctx, b, pad, pad + padn);
                pynn_direct_dweight_image(image, pad, g, H, W, OC, OCP, k);
                for (size_t t = 0; t < per; t++) sum[t] += image[t];
            }
        }
#pragma omp for schedule(static)
        for (int o = 0; o < OC; o++)
            for (int t = 0; t < kk; t++) {
                float sum = 0.0f;
                for (int sl = 0; sl < n_slots; sl++)
                    sum += slot[(size_t)sl * per + (size_t)t * OCP + o];
                dweight[(size_t)o * kk + t] = sum;
            }
    }
}
#undef DX_DW
#undef DX_FWD
#undef DO

/* Which road a convolution of C > 1 input channels takes: the one its
 * shape asks for (pynn_winograd_fits: 3x3 kernels with enough channels go
 * through winograd.c, the rest through im2col), or the one a test or a
 * benchmark forces (pynn_set_conv_path). Never the instruction set: every
 * build takes the same road, and gives the same bits. */
static int conv_path = PYNN_CONV_BY_SHAPE;

void pynn_set_conv_path(int path) { conv_path = path; }

static int use_winograd(int C, int OC, int k) {
    if (k != 3 || C == 1) return 0;
    if (conv_path == PYNN_CONV_BY_SHAPE) return pynn_winograd_fits(C, OC, k);
    return conv_path == PYNN_CONV_WINOGRAD;
}

/* out (N,OC) = im2col(inp) . weight^T (+ bias), N = B*H*W rows, inp
 * (B,H,W,C), weight (OC, k*k*C), by one of three roads, equal up to rounding
 * (Winograd's about 1e-6 relative, winograd.c): direct loops for one input
 * channel, Winograd (use_winograd), or im2col chunks, each thread taking
 * whole chunks */
static void conv_product(float *out, const float *inp, const float *weight, const float *bias,
                         int B, int H, int W, int C, int OC, int k) {
    if (C == 1) {
        direct_forward(out, inp, weight, bias, B, H, W, OC, k);
        return;
    }
    if (use_winograd(C, OC, k)) {
        pynn_winograd_forward(out, inp, weight, bias, B, H, W, C, OC);
        return;
    }
    const int kkC = k * k * C;
    const int64_t N = (int64_t)B * H * W, rows = chunk_rows(kkC);
    const int64_t n_chunks = (N + rows - 1) / rows;
    float *col = pynn_work(PYNN_WORK_IM2COL, (size_t)omp_get_max_threads() * rows * kkC);
    pynn_gemm_reserve();
#pragma omp parallel if (2.0 * N * kkC * OC >= PAR_MIN_FLOPS)
    {
        float *mine = col + (size_t)omp_get_thread_num() * rows * kkC;
#pragma omp for schedule(dynamic)
        for (int64_t ch = 0; ch < n_chunks; ch++) {
            const int64_t r0 = ch * rows, r1 = r0 + rows < N ? r0 + rows : N;
            im2col(mine, inp, r0, r1, H, W, C, k);
            pynn_gemm_solo(0, 1, (int)(r1 - r0), OC, kkC, mine, weight, bias,
                           out + (size_t)r0 * OC, 0);
        }
    }
}

void conv2d_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int B, int H, int W, int C, int OC, int k) {
    /* out is (B,H,W,OC), inp is (B,H,W,C), weight is (OC,k,k,C), bias is (OC,)
     * out[b,y,x,o] = bias[o] + sum_{i,j,c} inp[b, y+i-k/2, x+j-k/2, c] * weight[o,i,j,c] */
    conv_product(out, inp, weight, bias, B, H, W, C, OC, k);
}

/* dweight (OC, k*k*C) = dout^T . col, a sum over all N rows, in fixed chunks
 * of rows grouped into at most DW_SLOTS slots of consecutive chunks: each
 * thread takes whole slots (its own im2col buffer, no waiting for the
 * others) and sums a slot's chunks in order into the slot; then the slots
 * are added in order. Neither the chunks nor the slots depend on the thread
 * count, so neither do the sums; the memory is DW_SLOTS dweights at most. */
static void gemm_dweight(float *dweight, const float *dout, const float *inp, int B, int H,
                         int W, int C, int OC, int k) {
    const int kkC = k * k * C;
    const int64_t N = (int64_t)B * H * W;
    const int64_t rows = DW_CHUNK_FLOATS / kkC < 64 ? 64 : DW_CHUNK_FLOATS / kkC;
    const int64_t n_chunks = (N + rows - 1) / rows;
    const int64_t n_slots = n_chunks < DW_SLOTS ? n_chunks : DW_SLOTS;
    const size_t per = (size_t)OC * kkC;
    float *col = pynn_work(PYNN_WORK_IM2COL, (size_t)omp_get_max_threads() * rows * kkC);
    float *slot = pynn_work(PYNN_WORK_PARTIAL_DWEIGHT, (size_t)(n_slots ? n_slots : 1) * per);
    /* With fewer inputs under the kernel than outputs (k*k*C = 4 against 12,
     * say), the MR x NR tiles fit a chunk's dweight^T = col^T . dout better
     * (4 rows pad to 8, not 4 columns to 32); it is transposed when added. */
    const int swap = kkC < OC;
    pynn_gemm_reserve();
#pragma omp parallel if (2.0 * N * kkC * OC >= PAR_MIN_FLOPS)
    {
        float *mine = col + (size_t)omp_get_thread_num() * rows * kkC;
#pragma omp for schedule(dynamic)
        for (int64_t sl = 0; sl < n_slots; sl++) { /* chunks [c0, c1) */
            const int64_t c0 = sl * n_chunks / n_slots, c1 = (sl + 1) * n_chunks / n_slots;
            for (int64_t ch = c0; ch < c1; ch++) {
                const int64_t r0 = ch * rows, r1 = r0 + rows < N ? r0 + rows : N;
                const int flags = ch > c0 ? PYNN_GEMM_ACCUMULATE : 0;
                im2col(mine, inp, r0, r1, H, W, C, k);
                if (swap)
                    pynn_gemm_solo(1, 0, kkC, OC, (int)(r1 - r0), mine, dout + (size_t)r0 * OC,
                                   NULL, slot + sl * per, flags);
                else
                    pynn_gemm_solo(1, 0, OC, kkC, (int)(r1 - r0), dout + (size_t)r0 * OC, mine,
                                   NULL, slot + sl * per, flags);
            }
        }
#pragma omp for schedule(static)
        for (int o = 0; o < OC; o++) { /* dweight[o,:] = the slots' rows o, in order */
            float *d = dweight + (size_t)o * kkC;
            for (int t = 0; t < kkC; t++) d[t] = 0.0f;
            for (int64_t sl = 0; sl < n_slots; sl++) {
                const float *src = slot + sl * per;
                if (swap)
                    for (int t = 0; t < kkC; t++) d[t] += src[(size_t)t * OC + o];
                else
                    for (int t = 0; t < kkC; t++) d[t] += src[(size_t)o * kkC + t];
            }
        }
    }
}

/* dbias[o] = sum_r dout[r,o] over the N rows: column sums, 16 columns a
 * share, rows in order */
static void bias_sums(float *dbias, const float *dout, int64_t N, int OC) {
#pragma omp parallel for schedule(static) if (N * OC >= PAR_MIN)
    for (int o0 = 0; o0 < OC; o0 += 16) {
        const int o1 = o0 + 16 < OC ? o0 + 16 : OC;
        for (int o = o0; o < o1; o++) dbias[o] = 0.0f;
        for (int64_t r = 0; r < N; r++) {
            const float *row = dout + (size_t)r * OC;
            for (int o = o0; o < o1; o++) dbias[o] += row[o];
        }
    }
}

void conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, int B, int H, int W, int C, int OC,
                     int k) {
    /* dout is (B,H,W,OC), inp is (B,H,W,C), weight is (OC,k,k,C)
     * dweight[o,t] = sum_r dout[r,o] * col[r,t]     (OC, k*k*C), r over all B*H*W pixels
     * dbias[o]     = sum_r dout[r,o]                (OC,)
     * dinp         = conv2d(dout, wflip)            (B,H,W,C), see the top of this file */
    const int kkC = k * k * C;
    if (C == 1) {
        batch_grad g = {dout, (size_t)H * W * OC};
        pynn_direct_dweight(dweight, slice_of, &g, 0, inp, B, H, W, OC, k);
    } else if (use_winograd(C, OC, k))
        pynn_winograd_dweight(dweight, dout, inp, B, H, W, C, OC);
    else
        gemm_dweight(dweight, dout, inp, B, H, W, C, OC, k);
    if (dbias) bias_sums(dbias, dout, (int64_t)B * H * W, OC);
    if (dinp) {
        float *wflip = pynn_work(PYNN_WORK_FLIPPED_WEIGHTS, (size_t)OC * kkC);
        for (int c = 0; c < C; c++)
            for (int i = 0; i < k; i++)
                for (int j = 0; j < k; j++)
                    for (int o = 0; o < OC; o++)
                        wflip[(((size_t)c * k + i) * k + j) * OC + o] =
                            weight[(((size_t)o * k + (k - 1 - i)) * k + (k - 1 - j)) * C + c];
        conv_product(dinp, dout, wflip, NULL, B, H, W, OC, C, k);
    }
}
