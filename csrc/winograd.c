/* winograd.c - 3x3 convolutions ("same" padding, stride 1) by Winograd's
 * minimal filtering F(4x4, 3x3) (Lavin and Gray, "Fast Algorithms for
 * Convolutional Neural Networks", 2015).
 *
 * The output is cut into tiles of 4x4 pixels. A tile needs the 6x6 input
 * pixels d around it (one pixel of border each side), and its 16 outputs of
 * one channel pair are, with the paper's matrices,
 *
 *     Y = A^T [ (G g G^T) . (B^T d B) ] A          (. : element by element)
 *
 * where g is the 3x3 kernel and
 *
 *     B^T = | 4  0 -5  0  1  0 |     G = |  1/4     0     0  |    A^T = | 1  1  1  1  1  0 |
 *           | 0 -4 -4  1  1  0 |         | -1/6  -1/6  -1/6 |          | 0  1 -1  2 -2  0 |
 *           | 0  4 -4 -1  1  0 |         | -1/6   1/6  -1/6 |          | 0  1  1  4  4  0 |
 *           | 0 -2 -1  2  1  0 |         |  1/24  1/12  1/6 |          | 0  1 -1  8 -8  1 |
 *           | 0  2 -1 -2  1  0 |         |  1/24 -1/12  1/6 |
 *           | 0  4  0 -5  0  1 |         |   0     0     1  |
 *
 * Summed over the input channels, the middle step is, for each of the 36
 * positions xi of the 6x6 transform, a matrix product over the tiles:
 *
 *     M[xi] (tiles, OC) = V[xi] (tiles, C) . U[xi] (C, OC),
 *     V[xi][t][c] = (B^T d_tc B)[xi],  U[xi][c][o] = (G g_oc G^T)[xi]
 *
 * 36 products of 36/144 the multiplies of the direct convolution (a 4x4 tile
 * costs 36 instead of 16 x 9 = 144 per channel pair), computed by gemm.c.
 * The transforms themselves are additions and small multiples.
 *
 * The weight gradient is the gradient of this same computation: with
 * Yhat = A dY A^T (dY the tile's 4x4 output gradient, A = (A^T)^T),
 *
 *     dU[xi] (OC, C) = sum over tiles of Yhat[xi]^T . V[xi],   dg = G^T dU G
 *
 * again 36 products, each a sum over all tiles. The input gradient is the
 * forward convolution of dout with the flipped kernel (conv.c), so it comes
 * here as a forward.
 *
 * The tiles are taken in chunks of a size fixed by the layer's shape; each
 * thread transforms and multiplies whole chunks in its own buffers (they stay
 * in L2). The weight gradient's chunks are summed in at most DW_SLOTS slots
 * of consecutive chunks, each in chunk order, and the slots in slot order:
 * nothing depends on the thread count. Each output element is the same
 * sequence of operations in every build (the transforms are per channel,
 * the GEMM sums each element along K in order).
 *
 * Rounding: the transforms add terms of different sizes (up to 5 and 8
 * times a value, and G's 1/6, 1/12, 1/24), so the result is about three bits
 * less exact than a direct float32 sum: errors of 1e-6 to 6e-6 of the sum of
 * |terms|, where the direct road's are about 2e-7 (tests/test_winograd.py,
 * against the double-precision reference tests/cnn_reference.py
 * conv2d_forward and against the im2col road). Training does not notice.
 */
#include "internal.h"

#define ALPHA 6      /* the transform's side: m + r - 1 = 4 + 3 - 1 */
#define TILE 4       /* outputs of a tile, each way */
#define XI (ALPHA * ALPHA)
#define DW_SLOTS 16  /* partial sums of a weight gradient, at most (as conv.c) */
#define TILE_PAD 16  /* floats after each transformed tile: see at() */
#define SUM_BLOCK 4096 /* floats of the weight gradient's slots summed at a time */
#define PREFETCH_TILES 2 /* the input of the tile this far ahead is fetched early */

/* ---- the transforms, LANES channels at a time ------------------------------------ */
/* Each transform maps six (or three, or four) vectors of LANES channels to
 * six (or four, or three): out[i * os] = (matrix . in)[i], in[j] = in[j * is],
 * lane by lane. LANES is fixed, not the target's vector width, so every build
 * computes each channel with the same operations in the same order (a loop
 * of LANES iterations the compiler turns into one or two vectors). */
#define LANES 16
typedef float lanes[LANES];

/* B^T d */
static inline void bt6(lanes *restrict out, int os, const lanes *restrict in, int is) {
    for (int l = 0; l < LANES; l++) {
        const float d0 = in[0][l], d1 = in[is][l], d2 = in[2 * is][l], d3 = in[3 * is][l];
        const float d4 = in[4 * is][l], d5 = in[5 * is][l];
        out[0][l] = 4.0f * d0 - 5.0f * d2 + d4;
        out[os][l] = -4.0f * d1 - 4.0f * d2 + d3 + d4;
        out[2 * os][l] = 4.0f * d1 - 4.0f * d2 - d3 + d4;
        out[3 * os][l] = -2.0f * d1 - d2 + 2.0f * d3 + d4;
        out[4 * os][l] = 2.0f * d1 - d2 - 2.0f * d3 + d4;
        out[5 * os][l] = 4.0f * d1 - 5.0f * d3 + d5;
    }
}

/* A^T m (6 -> 4) */
static inline void at6(lanes *restrict out, int os, const lanes *restrict in, int is) {
    for (int l = 0; l < LANES; l++) {
        const float m0 = in[0][l], m1 = in[is][l], m2 = in[2 * is][l], m3 = in[3 * is][l];
        const float m4 = in[4 * is][l], m5 = in[5 * is][l];
        out[0][l] = m0 + m1 + m2 + m3 + m4;
        out[os][l] = m1 - m2 + 2.0f * m3 - 2.0f * m4;
        out[2 * os][l] = m1 + m2 + 4.0f * m3 + 4.0f * m4;
        out[3 * os][l] = m1 - m2 + 8.0f * m3 - 8.0f * m4 + m5;
    }
}

/* G g (3 -> 6) */
static inline void g3(lanes *restrict out, int os, const lanes *restrict in, int is) {
    for (int l = 0; l < LANES; l++) {
        const float g0 = in[0][l], g1 = in[is][l], g2 = in[2 * is][l];
        out[0][l] = g0 * (1.0f / 4.0f);
        out[os][l] = (g0 + g1 + g2) * (-1.0f / 6.0f);
        out[2 * os][l] = (g0 - g1 + g2) * (-1.0f / 6.0f);
        out[3 * os][l] = g0 * (1.0f / 24.0f) + g1 * (1.0f / 12.0f) + g2 * (1.0f / 6.0f);
        out[4 * os][l] = g0 * (1.0f / 24.0f) - g1 * (1.0f / 12.0f) + g2 * (1.0f / 6.0f);
        out[5 * os][l] = g2;
    }
}

/* A y (4 -> 6): the output gradient's transform */
static inline void a4(lanes *restrict out, int os, const lanes *restrict in, int is) {
    for (int l = 0; l < LANES; l++) {
        const float y0 = in[0][l], y1 = in[is][l], y2 = in[2 * is][l], y3 = in[3 * is][l];
        out[0][l] = y0;
        out[os][l] = y0 + y1 + y2 + y3;
        out[2 * os][l] = y0 - y1 + y2 - y3;
        out[3 * os][l] = y0 + 2.0f * y1 + 4.0f * y2 + 8.0f * y3;
        out[4 * os][l] = y0 - 2.0f * y1 + 4.0f * y2 - 8.0f * y3;
        out[5 * os][l] = y3;
    }
}

/* G^T x (6 -> 3): the weight gradient's transform */
static inline void gt6(lanes *restrict out, int os, const lanes *restrict in, int is) {
    for (int l = 0; l < LANES; l++) {
        const float x0 = in[0][l], x1 = in[is][l], x2 = in[2 * is][l], x3 = in[3 * is][l];
        const float x4 = in[4 * is][l], x5 = in[5 * is][l];
        out[0][l] = x0 * (1.0f / 4.0f) - (x1 + x2) * (1.0f / 6.0f) + (x3 + x4) * (1.0f / 24.0f);
        out[os][l] = (x2 - x1) * (1.0f / 6.0f) + (x3 - x4) * (1.0f / 12.0f);
        out[2 * os][l] = (x3 + x4 - x1 - x2) * (1.0f / 6.0f) + x5;
    }
}

/* dst[0:LANES] = src[0:LANES], or zeros when src is NULL, a target vector
 * (VEC floats) at a time. gcc 12 moves a 64-byte memcpy in 16-byte pieces
 * on AVX2 targets (x86-64-v3, znver3) and in 32-byte ones on Intel's AVX-512
 * ones: twice the instructions, and the transforms are mostly such moves
 * (this took 3-9 % off each Winograd kernel on AVX2, scripts/ab_kernels.py) */
static inline void move_lanes(float *restrict dst, const float *restrict src) {
    for (int l = 0; l < LANES; l += VEC) vstore(dst + l, src ? vload(src + l) : vzero());
}

/* n <= LANES values from src into a lanes vector, zeros after them; and back */
static inline void lanes_in(float *restrict dst, const float *restrict src, int n) {
    if (n == LANES) {
        move_lanes(dst, src);
        return;
    }
    for (int l = 0; l < LANES; l++) dst[l] = l < n ? src[l] : 0.0f;
}
static inline void lanes_out(float *restrict dst, const float *restrict src, int n) {
    if (n == LANES) {
        move_lanes(dst, src);
        return;
    }
    for (int l = 0; l < n; l++) dst[l] = src[l];
}

/* ---- tiles ------------------------------------------------------------------------ */
/* Transformed tiles are stored tile by tile: V (tc, 36, C), value xi of
 * channel c of tile t at t * (36 * C + TILE_PAD) + xi * C + c, so that a
 * transform reads or writes one contiguous block. Matrix xi of the chunk,
 * V[xi] (tc, C), is then a matrix whose rows lie 36 * C + TILE_PAD floats
 * apart, which the GEMM reads where it lies (pynn_gemm_solo_strided).
 * (Stored matrix by matrix instead, the 36 scattered rows of each tile kept
 * the transforms waiting for the cache: a quarter of the forward's time,
 * measured.) The pad, one cache line, is there for the GEMM: rows 36 * C
 * floats apart (9 KB for C = 64) all fall into 4 of the L1's 64 sets and
 * evict each other; one line more spreads them over all 64 (the weight
 * gradient 5-7 % faster on AVX2, scripts/ab_kernels.py; no bit moves: the
 * GEMM's sums do not depend on where their operands lie). */
static inline size_t tile_floats(int C) { return (size_t)XI * C + TILE_PAD; }
static inline size_t at(int64_t t, int xi, int C) {
    return (size_t)t * tile_floats(C) + (size_t)xi * C;
}

/* ---- the chunks -------------------------------------------------------------------- */

/* the chunk of tiles a thread takes: about `floats` floats of V and M (or V
 * and Yhat) together, so that both stay in L2 beside U; fixed by the shape
 * alone, a multiple of `unit` tiles. The forward takes 64 K floats (256 KB)
 * in multiples of 24, the GEMM's rows on AVX2 (6) and AVX-512 (8) alike: the
 * chunk is the product's M, and a partial row panel is padded work (8 tiles
 * of a 64 -> 64 layer were 12 rows on AVX2; with 24, 14x14x64 -> 64 forward
 * went 17.0 -> 11.3 ms, one thread, Zen 3). The forward's bits do not depend
 * on the chunk (each tile is transformed and multiplied alone). The weight
 * gradient takes 256 K in multiples of 8, and its chunks are fixed: they
 * decide the order of its sums over the tiles. Measured on the Zen 5 over
 * the presets' layers, scripts/bench.py --only conv: 1.6-2.2x over im2col
 * forward, against 1.6-2.0x with 128 K; on the Zen 3, 128 K in multiples
 * of 24 gained nothing over 64 K. */
static int64_t chunk_tiles(int C, int OC, int64_t floats, int unit) {
    int64_t t = floats / ((int64_t)XI * (C + OC)) / unit * unit;
    return t < unit ? unit : t;
}

/* dst[0:n] = src[0:n], or zeros when src is NULL: in lanes-sized moves the
 * compiler inlines (a call to memcpy per pixel row cost more than the copy) */
static inline void copy_floats(float *restrict dst, const float *restrict src, int n) {
    int i = 0;
    for (; i + LANES <= n; i += LANES) move_lanes(dst + i, src ? src + i : NULL);
    for (; i < n; i++) dst[i] = src ? src[i] : 0.0f;
}

/* where tile t (of B*tH*tW, image by image, row by row) lies: its image and the
 * top-left pixel of its 4x4 outputs; its 6x6 input patch starts one pixel up
 * and left of that */
typedef struct { int64_t img; int y, x; } tile_pos;
static inline tile_pos tile_at(int64_t t, int tH, int tW) {
    const tile_pos p = {t / ((int64_t)tH * tW), TILE * (int)(t / tW % tH), TILE * (int)(t % tW)};
    return p;
}

/* patch (6, 6, C) = the input pixels under tile t (image b, tile row ty,
 * column tx), zeros outside the image: copied row by row, so that the reads
 * stream (read where they lie, the 36 pixels of a tile kept the memory
 * system waiting: 70 % of the transform's time) */
static void tile_patch(float *restrict patch, const float *inp, int64_t t, int H, int W, int C,
                       int tH, int tW) {
    const tile_pos p = tile_at(t, tH, tW);
    const int x0 = p.x - 1, s0 = x0 < 0 ? -x0 : 0;
    const int s1 = W - x0 < ALPHA ? W - x0 : ALPHA; /* columns [s0, s1) are inside */
    const int row = ALPHA * C;
    for (int r = 0; r < ALPHA; r++) {
        const int y = p.y - 1 + r;
        float *dst = patch + (size_t)r * row;
        if (y < 0 || y >= H || s1 <= s0) {
            copy_floats(dst, NULL, row);
            continue;
        }
        copy_floats(dst, NULL, s0 * C);
        copy_floats(dst + (size_t)s0 * C, inp + (((size_t)p.img * H + y) * W + x0 + s0) * C,
                    (s1 - s0) * C);
        copy_floats(dst + (size_t)s1 * C, NULL, (ALPHA - s1) * C);
    }
}

/* ask the memory for the input pixels under tile t (of B*tH*tW tiles) ahead
 * of their use: a cache line at a time, the rows of the 6x6 patch that lie
 * inside the image. The patch copy waited on them otherwise (perf annotate:
 * half of input_transform's time on the loads of tile_patch). */
static void prefetch_patch(const float *inp, int64_t t, int64_t T, int H, int W, int C, int tH,
                           int tW) {
    if (t >= T) return;
    const tile_pos p = tile_at(t, tH, tW);
    const int x0 = p.x - 1 < 0 ? 0 : p.x - 1;
    const int x1 = p.x - 1 + ALPHA < W ? p.x - 1 + ALPHA : W;
    for (int r = 0; r < ALPHA; r++) {
        const int y = p.y - 1 + r;
        if (y < 0 || y >= H) continue;
        const char *row = (const char *)(inp + (((size_t)p.img * H + y) * W + x0) * C);
        const size_t bytes = (size_t)(x1 - x0) * C * sizeof(float);
        for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch(row + o);
    }
}

/* V (tc, 36, C): V[t][xi][c] = (B^T d B)[xi] of tiles t0 .. t0+tc-1 (of T);
 * patch is room for one tile's 6x6xC input pixels */
static void input_transform(float *restrict V, const float *inp, float *restrict patch, int64_t t0,
                            int tc, int64_t T, int H, int W, int C, int tH, int tW) {
    lanes d[XI], col[XI], v[XI];
    for (int t = 0; t < tc; t++) {
        prefetch_patch(inp, t0 + t + PREFETCH_TILES, T, H, W, C, tH, tW);
        tile_patch(patch, inp, t0 + t, H, W, C, tH, tW);
        for (int c0 = 0; c0 < C; c0 += LANES) {
            const int n = C - c0 < LANES ? C - c0 : LANES;
            for (int q = 0; q < XI; q++) lanes_in(d[q], patch + (size_t)q * C + c0, n);
            for (int s = 0; s < ALPHA; s++) bt6(col + s, ALPHA, d + s, ALPHA); /* B^T d */
            for (int i = 0; i < ALPHA; i++) bt6(v + i * ALPHA, 1, col + i * ALPHA, 1); /* . B */
            for (int q = 0; q < XI; q++) lanes_out(V + at(t, q, C) + c0, v[q], n);
        }
    }
}

/* out (B,H,W,OC) of tiles t0 .. t0+tc-1 from M (tc, 36, OC): A^T M A (+ bias);
 * the outputs of a tile that fall past the image are not stored */
static void output_transform(float *out, const float *restrict M, const float *bias, int64_t t0,
                             int tc, int H, int W, int OC, int tH, int tW) {
    lanes m[XI], col[TILE * ALPHA], y[TILE * TILE], b;
    for (int t = 0; t < tc; t++) {
        const tile_pos p = tile_at(t0 + t, tH, tW);
        const int ny = H - p.y < TILE ? H - p.y : TILE;
        const int nx = W - p.x < TILE ? W - p.x : TILE;
        float *o0 = out + (((size_t)p.img * H + p.y) * W + p.x) * OC;
        for (int c0 = 0; c0 < OC; c0 += LANES) {
            const int n = OC - c0 < LANES ? OC - c0 : LANES;
            for (int q = 0; q < XI; q++) lanes_in(m[q], M + at(t, q, OC) + c0, n);
            for (int j = 0; j < ALPHA; j++) at6(col + j, ALPHA, m + j, ALPHA); /* A^T m */
            if (!bias && OC % LANES == 0 && ny == TILE && nx == TILE) { /* so n == LANES */
                /* . A, written where the tile lies in out (row i's four pixels
                 * are OC floats, OC / LANES lanes, apart): one move less per
                 * value than through y (fwd 1-3 % faster, ab_kernels) */
                for (int i = 0; i < TILE; i++)
                    at6((lanes *)(o0 + (size_t)i * W * OC + c0), OC / LANES, col + i * ALPHA, 1);
                continue;
            }
            for (int i = 0; i < TILE; i++) at6(y + i * TILE, 1, col + i * ALPHA, 1); /* . A */
            if (bias) lanes_in(b, bias + c0, n);
            for (int i = 0; i < ny; i++)
                for (int j = 0; j < nx; j++) {
                    float *dst = o0 + ((size_t)i * W + j) * OC + c0;
                    if (bias)
                        for (int l = 0; l < n; l++) dst[l] = y[i * TILE + j][l] + b[l];
                    else
                        lanes_out(dst, y[i * TILE + j], n);
                }
        }
    }
}

/* U (36, C, OC) = G g G^T of every kernel g = weight[o, :, :, c], weight (OC,3,3,C) */
static void weight_transform(float *restrict U, const float *restrict weight, int C, int OC) {
    lanes g[9], col[ALPHA * 3], u[XI];
    for (int o = 0; o < OC; o++)
        for (int c0 = 0; c0 < C; c0 += LANES) {
            const int n = C - c0 < LANES ? C - c0 : LANES;
            for (int q = 0; q < 9; q++) lanes_in(g[q], weight + ((size_t)o * 9 + q) * C + c0, n);
            for (int j = 0; j < 3; j++) g3(col + j, 3, g + j, 3); /* G g */
            for (int i = 0; i < ALPHA; i++) g3(u + i * ALPHA, 1, col + i * 3, 1); /* . G^T */
            for (int q = 0; q < XI; q++)
                for (int l = 0; l < n; l++) U[((size_t)q * C + c0 + l) * OC + o] = u[q][l];
        }
}

int pynn_winograd_fits(int C, int OC, int k) { return k == 3 && C >= 8 && OC >= 8; }

void pynn_winograd_forward(float *out, const float *inp, const float *weight, const float *bias,
                           int B, int H, int W, int C, int OC) {
    /* out (B,H,W,OC), inp (B,H,W,C), weight (OC,3,3,C), bias (OC,) or NULL */
    const int tH = (H + TILE - 1) / TILE, tW = (W + TILE - 1) / TILE;
    const int64_t T = (int64_t)B * tH * tW, tc = chunk_tiles(C, OC, 65536, 24);
    const int64_t n_chunks = (T + tc - 1) / tc;
    const size_t per = tc * (tile_floats(C) + tile_floats(OC)) + (size_t)XI * C; /* V, M, patch */
    float *U = pynn_work(PYNN_WORK_WINOGRAD_WEIGHTS, (size_t)XI * C * OC);
    float *work = pynn_work(PYNN_WORK_WINOGRAD, (size_t)omp_get_max_threads() * per);
    weight_transform(U, weight, C, OC);
    pynn_gemm_reserve();
#pragma omp parallel if (2.0 * T * XI * C * OC >= PAR_MIN_FLOPS)
    {
        float *V = work + (size_t)omp_get_thread_num() * per;
        float *M = V + tc * tile_floats(C), *patch = M + tc * tile_floats(OC);
#pragma omp for schedule(dynamic)
        for (int64_t ch = 0; ch < n_chunks; ch++) {
            const int64_t t0 = ch * tc;
            const int n = (int)(t0 + tc < T ? tc : T - t0);
            input_transform(V, inp, patch, t0, n, T, H, W, C, tH, tW);
            for (int xi = 0; xi < XI; xi++) /* M[xi] (n, OC) = V[xi] (n, C) . U[xi] (C, OC) */
                pynn_gemm_solo_strided(0, 0, n, OC, C, V + at(0, xi, C), tile_floats(C),
                                       U + (size_t)xi * C * OC, (size_t)OC, M + at(0, xi, OC),
                                       tile_floats(OC), 0);
            output_transform(out, M, bias, t0, n, H, W, OC, tH, tW);
        }
    }
}

/* Yhat (tc, 36, OC) = A dY A^T of tiles t0 .. t0+tc-1 of dout (B,H,W,OC);
 * the outputs past the image have no gradient (0) */
static void gradient_transform(float *restrict Yh, const float *dout, const float *zeros,
                               int64_t t0, int tc, int H, int W, int OC, int tH, int tW) {
    lanes dy[TILE * TILE], col[ALPHA * TILE], yh[XI];
    for (int t = 0; t < tc; t++) {
        const tile_pos p = tile_at(t0 + t, tH, tW);
        const int ny = H - p.y < TILE ? H - p.y : TILE;
        const int nx = W - p.x < TILE ? W - p.x : TILE;
        const float *g0 = dout + (((size_t)p.img * H + p.y) * W + p.x) * OC;
        for (int c0 = 0; c0 < OC; c0 += LANES) {
            const int n = OC - c0 < LANES ? OC - c0 : LANES;
            for (int i = 0; i < TILE; i++)
                for (int j = 0; j < TILE; j++)
                    lanes_in(dy[i * TILE + j],
                             i < ny && j < nx ? g0 + ((size_t)i * W + j) * OC + c0 : zeros, n);
            for (int j = 0; j < TILE; j++) a4(col + j, TILE, dy + j, TILE); /* A dY */
            for (int i = 0; i < ALPHA; i++) a4(yh + i * ALPHA, 1, col + i * TILE, 1); /* . A^T */
            for (int q = 0; q < XI; q++) lanes_out(Yh + at(t, q, OC) + c0, yh[q], n);
        }
    }
}

void pynn_winograd_dweight(float *dweight, const float *dout, const float *inp, int B, int H,
                           int W, int C, int OC) {
    /* dweight (OC,3,3,C) = the gradient of the forward above: G^T dU G with
     * dU[xi] (OC, C) = sum over the tiles of Yhat[xi]^T . V[xi] */
    const int tH = (H + TILE - 1) / TILE, tW = (W + TILE - 1) / TILE;
    const int64_t T = (int64_t)B * tH * tW, tc = chunk_tiles(C, OC, 262144, 8);
    const int64_t n_chunks = (T + tc - 1) / tc, n_slots = n_chunks < DW_SLOTS ? n_chunks : DW_SLOTS;
    const size_t per = tc * (tile_floats(C) + tile_floats(OC)) + (size_t)XI * C + OC;
    const size_t slot = (size_t)XI * OC * C;
    float *dU = pynn_work(PYNN_WORK_WINOGRAD_WEIGHTS, (n_slots ? n_slots : 1) * slot);
    float *work = pynn_work(PYNN_WORK_WINOGRAD, (size_t)omp_get_max_threads() * per);
    pynn_gemm_reserve();
#pragma omp parallel if (2.0 * T * XI * C * OC >= PAR_MIN_FLOPS)
    {
        float *V = work + (size_t)omp_get_thread_num() * per;
        float *Yh = V + tc * tile_floats(C), *patch = Yh + tc * tile_floats(OC);
        float *zeros = patch + (size_t)XI * C; /* a pixel of zero gradient, OC channels */
        for (int o = 0; o < OC; o++) zeros[o] = 0.0f;
#pragma omp for schedule(dynamic)
        for (int64_t sl = 0; sl < n_slots; sl++) { /* chunks [c0, c1), summed in order */
            const int64_t c0 = sl * n_chunks / n_slots, c1 = (sl + 1) * n_chunks / n_slots;
            for (int64_t ch = c0; ch < c1; ch++) {
                const int64_t t0 = ch * tc;
                const int n = (int)(t0 + tc < T ? tc : T - t0);
                input_transform(V, inp, patch, t0, n, T, H, W, C, tH, tW);
                gradient_transform(Yh, dout, zeros, t0, n, H, W, OC, tH, tW);
                for (int xi = 0; xi < XI; xi++) /* dU[xi] (OC, C) += Yhat[xi]^T . V[xi] */
                    pynn_gemm_solo_strided(1, 0, OC, C, n, Yh + at(0, xi, OC), tile_floats(OC),
                                           V + at(0, xi, C), tile_floats(C),
                                           dU + sl * slot + (size_t)xi * OC * C, (size_t)C,
                                           ch > c0 ? PYNN_GEMM_ACCUMULATE : 0);
            }
        }
        /* the slots added into slot 0 in slot order, SUM_BLOCK floats at a
         * time, so that they are read as streams (added where G^T dU G takes
         * each value, the slots' scattered lines kept the loads waiting:
         * perf put a tenth of the weight gradient's time there) */
        const int64_t n_blocks = ((int64_t)slot + SUM_BLOCK - 1) / SUM_BLOCK;
#pragma omp for schedule(static)
        for (int64_t b = 0; b < n_blocks; b++) {
            const size_t i0 = (size_t)b * SUM_BLOCK;
            const size_t i1 = i0 + SUM_BLOCK < slot ? i0 + SUM_BLOCK : slot;
            for (int64_t sl = 1; sl < n_slots; sl++)
                for (size_t i = i0; i < i1; i++) dU[i] += dU[sl * slot + i];
        }
#pragma omp for schedule(static)
        for (int o = 0; o < OC; o++) { /* G^T dU G */
            lanes x[XI], col[3 * ALPHA], w[9];
            for (int c0 = 0; c0 < C; c0 += LANES) {
                const int n = C - c0 < LANES ? C - c0 : LANES;
                for (int q = 0; q < XI; q++) lanes_in(x[q], dU + ((size_t)q * OC + o) * C + c0, n);
                for (int j = 0; j < ALPHA; j++) gt6(col + j, ALPHA, x + j, ALPHA); /* G^T x */
                for (int i = 0; i < 3; i++) gt6(w + i * 3, 1, col + i * ALPHA, 1); /* . G */
                for (int q = 0; q < 9; q++)
                    lanes_out(dweight + ((size_t)o * 9 + q) * C + c0, w[q], n);
            }
        }
    }
}
