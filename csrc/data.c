/* data.c - small helpers on whole datasets and batches: the normalization's
 * moments, the epoch's shuffle, the batch's gather (with augmentation), argmax.
 *
 * The plain versions they must equal: tests/reference.py moments, shuffle and
 * argmax_rows; tests/cnn_reference.py gather_augment (with augment_draw and
 * erase_draw, the draws bit for bit). */
#include <math.h>
#include <string.h>

#include "internal.h"

#if defined(__GNUC__)
#define PREFETCH(p) __builtin_prefetch((p), 0, 3) /* for reading, into all cache levels */
#else
#define PREFETCH(p) ((void)(p))
#endif

/* sum of (x[c] - mu)^p for p = 1 or 2 over one row, with 8 partial sums in
 * double so the adds overlap (and the order is fixed: results are exact-ish
 * and the same on every run and thread count) */
static double row_sum(const float *x, int64_t C, double mu, int squared) {
    double acc[8] = {0};
    int64_t c = 0;
    for (; c + 8 <= C; c += 8)
        for (int k = 0; k < 8; k++) {
            const double d = x[c + k] - mu;
            acc[k] += squared ? d * d : d;
        }
    for (; c < C; c++) {
        const double d = x[c] - mu;
        acc[0] += squared ? d * d : d;
    }
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

void pynn_moments(const float *x, const int32_t *idx, int64_t n, int64_t C, double *mean,
                  double *var) {
    /* two passes in double: exact enough for 47 million pixels */
    const double count = (double)n * (double)C;
    double s = 0.0, q = 0.0;
    for (int64_t r = 0; r < n; r++) s += row_sum(x + (idx ? idx[r] : r) * C, C, 0.0, 0);
    const double mu = count > 0 ? s / count : 0.0;
    for (int64_t r = 0; r < n; r++) q += row_sum(x + (idx ? idx[r] : r) * C, C, mu, 1);
    *mean = mu;
    *var = count > 0 ? q / count : 0.0;
}

void pynn_scale_shift(float *x, int64_t n, float scale, float shift) {
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t i = 0; i < n; i++) x[i] = x[i] * scale + shift;
}

void pynn_shuffle(int32_t *idx, int64_t n, uint64_t seed) {
    /* Fisher-Yates: i from the top down, swap with a uniform j in [0, i]; draw
     * t of the stream (pynn_draw) picks j, t = 1, 2, ... (any fixed start
     * would do; draw 0 is left unused); the modulo bias of a 64-bit draw is
     * below 2^-32 for any n that fits in int32 */
    int64_t t = 1;
    for (int64_t i = n - 1; i > 0; i--, t++) {
        const int64_t j = (int64_t)(pynn_draw(seed, t) % (uint64_t)(i + 1));
        const int32_t swap = idx[i];
        idx[i] = idx[j];
        idx[j] = swap;
    }
}

void pynn_gather_rows(float *out, const float *inp, const int32_t *idx, int B, int C) {
    /* out is (B,C), inp is (N,C): out[i,:] = inp[idx[i],:]. The rows lie
     * scattered over a large array (in DRAM, not in cache), so this waits on
     * memory. Copied one after another, each row waits its turn; asking for
     * every cache line of a thread's rows first (a prefetch does not wait)
     * keeps more loads in flight: measured 20-25 % faster (13.0 -> 10.4 us
     * on 2 threads, 23 -> 20 on 1, for 64 rows of 784). The two loops share
     * the rows among the threads alike (the same static schedule). */
#pragma omp parallel if ((int64_t)B * C >= PAR_MIN / 4) /* waits on memory: worth it sooner */
    {
#pragma omp for schedule(static) nowait
        for (int i = 0; i < B; i++) {
            const char *row = (const char *)(inp + (size_t)idx[i] * C);
            for (size_t at = 0; at < (size_t)C * sizeof(float); at += 64) PREFETCH(row + at);
        }
#pragma omp for schedule(static)
        for (int i = 0; i < B; i++)
            memcpy(out + (size_t)i * C, inp + (size_t)idx[i] * C, (size_t)C * sizeof(float));
    }
}

void pynn_flip_images(float *restrict out, const float *restrict inp, int B, int H, int W,
                      int C) {
    /* out (B,H,W,C): pixel x of a row takes pixel W-1-x, its C channels as they are */
    for (int64_t r = 0; r < (int64_t)B * H; r++) {
        const float *src = inp + (size_t)r * W * C;
        float *dst = out + (size_t)r * W * C;
        for (int x = 0; x < W; x++)
            for (int c = 0; c < C; c++) dst[(size_t)x * C + c] = src[(size_t)(W - 1 - x) * C + c];
    }
}

void pynn_axpy(float *restrict y, float a, const float *restrict x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
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

/* sample i's shift (dy, dx), each in [-shift, shift], and flip bit, from
 * three separate bit fields of its draw */
static void augment_draw(uint64_t seed, int i, int shift, int flip, int *dy, int *dx,
                         int *mirror) {
    const uint64_t z = pynn_draw(seed, i), span = 2 * (uint64_t)shift + 1;
    *dy = (int)((z & 0xFFFF) % span) - shift;
    *dx = (int)((z >> 16 & 0xFFFF) % span) - shift;
    *mirror = flip ? (int)(z >> 32 & 1) : 0;
}

/* sample i's erased rectangle (random erasing, Zhong et al. 2017, in the
 * cutout form): with probability erase, rows [y0, y0+h) x columns [x0, x0+w)
 * with h in [1, H/2], w in [1, W/2], placed uniformly inside the image; from a
 * second stream of draws, so that erase = 0 leaves every other draw as it was.
 * Returns 0 (and h = w = 0) for no rectangle. The second stream is the seed
 * xor ERASE_STREAM: any constant that is not 0 would do (this one is
 * drand48's multiplier). */
#define ERASE_STREAM 0x5DEECE66DULL
static int erase_draw(uint64_t seed, int i, int H, int W, uint32_t threshold, int *y0, int *x0,
                      int *h, int *w) {
    const uint64_t z = pynn_draw(seed ^ ERASE_STREAM, i);
    *h = *w = 0;
    if ((uint32_t)(z >> 48) >= threshold || H < 2 || W < 2) return 0;
    *h = 1 + (int)((z & 0xFF) % (uint64_t)(H / 2));
    *w = 1 + (int)((z >> 8 & 0xFF) % (uint64_t)(W / 2));
    *y0 = (int)((z >> 16 & 0xFFFF) % (uint64_t)(H - *h + 1));
    *x0 = (int)((z >> 32 & 0xFFFF) % (uint64_t)(W - *w + 1));
    return 1;
}

void pynn_gather_augment(float *out, const float *inp, const int32_t *idx, int B, int H, int W,
                         int shift, int flip, float erase, float fill, uint64_t seed) {
    /* out is (B,H,W), inp is (N,H*W) one-channel images, idx is (B,) in [0,N).
     * Sample i is image idx[i] mirrored left-right when its flip bit is set,
     * m[y,x] = img[y, W-1-x] (else m = img), then moved down by dy and right
     * by dx:  out[i,y,x] = m[y-dy, x-dx],  or fill where that lies outside;
     * then, with probability erase, a rectangle of it set to fill. */
    const double t = (double)erase * 65536.0;
    const uint32_t threshold = t < 65536.0 ? (uint32_t)(t > 0.0 ? t : 0.0) : 65536u;
#pragma omp parallel for schedule(static) if ((int64_t)B * H * W >= PAR_MIN / 4)
    for (int i = 0; i < B; i++) {
        int dy, dx, mirror, y0 = 0, x0 = 0, eh, ew;
        augment_draw(seed, i, shift, flip, &dy, &dx, &mirror);
        erase_draw(seed, i, H, W, threshold, &y0, &x0, &eh, &ew);
        const float *img = inp + (size_t)idx[i] * H * W;
        float *o = out + (size_t)i * H * W;
        for (int y = 0; y < H; y++) {
            const int sy = y - dy;
            for (int x = 0; x < W; x++) {
                const int mx = x - dx; /* column of m */
                const int sx = mirror ? W - 1 - mx : mx;
                o[(size_t)y * W + x] = sy >= 0 && sy < H && mx >= 0 && mx < W
                                           ? img[(size_t)sy * W + sx] : fill;
            }
        }
        for (int y = y0; y < y0 + eh; y++)
            for (int x = x0; x < x0 + ew; x++) o[(size_t)y * W + x] = fill;
    }
}
