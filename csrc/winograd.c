/* winograd.c - 3x3 convolutions ("same" padding, stride 1) by Winograd's
 * minimal filtering F(4x4, 3x3) (Lavin and Gray, "Fast Algorithms for
 * Convolutional Neural Networks", 2015), with F(2, 3) on the edges where
 * 4-pixel tiles do not fit.
 *
 * The output is cut into tiles of 4x4 pixels (but for the edges, below). A
 * tile needs the 6x6 input pixels d around it (one pixel of border each
 * side), and its 16 outputs of one channel pair are, with the paper's
 * matrices,
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
 * The edges. A side of 4q + 1 or 4q + 2 pixels (the 14 of a pooled
 * Fashion-MNIST image) would leave its last 4-pixel tile three quarters or
 * half empty: 16
 * tiles of 36 products for a 14x14 image. Its last 2 pixels are taken by
 * F(2, 3) instead, whose 1-D matrices are (4 inputs, 2 outputs)
 *
 *     B^T = | 1  0 -1  0 |     G = |  1    0    0  |    A^T = | 1  1  1  0 |
 *           | 0  1  1  0 |         | 1/2  1/2  1/2 |          | 0  1 -1 -1 |
 *           | 0 -1  1  0 |         | 1/2 -1/2  1/2 |
 *           | 0  1  0 -1 |         |  0    0    1  |
 *
 * The 2-D transforms are the 1-D ones down the columns and along the rows,
 * so a tile may have F(4, 3) one way and F(2, 3) the other: a 14x14 image is
 * 3x3 tiles of 4x4 outputs (6x6 transforms), 3 + 3 of 4x2 and 2x4 (6x4, 4x6)
 * and one of 2x2 (4x4): 9 x 36 + 6 x 24 + 16 = 484 products instead of 576.
 * The tiles of one kind (their transforms' sides ay x ax) are multiplied
 * together, ay * ax products of their own, with their own U.
 *
 * The weight gradient is the gradient of this same computation: with
 * Yhat = A dY A^T (dY the tile's output gradient, A = (A^T)^T),
 *
 *     dU[xi] (OC, C) = sum over tiles of Yhat[xi]^T . V[xi],   dg = G^T dU G
 *
 * again a product per position xi of each kind, each a sum over that kind's
 * tiles; dg is the sum of the kinds' G^T dU G, in kind order. The input
 * gradient is the forward convolution of dout with the flipped kernel
 * (conv.c), so it comes here as a forward.
 *
 * The tiles are taken in chunks of a size fixed by the layer's shape; each
 * thread transforms and multiplies whole chunks in its own buffers (they stay
 * in L2). The weight gradient's chunks are summed in slots of consecutive
 * chunks of a kind (about two a slot, at most DW_SLOTS slots), each in chunk
 * order, and the slots in slot order: nothing depends on the thread count.
 * Each output element is the same sequence of operations in every build
 * (the transforms are per channel, the GEMM sums each element along K in
 * order).
 *
 * Rounding: the transforms add terms of different sizes (up to 5 and 8
 * times a value, and G's 1/6, 1/12, 1/24), so the result is about three bits
 * less exact than a direct float32 sum: errors of 1e-6 to 6e-6 of the sum of
 * |terms|, where the direct road's are about 2e-7 (tests/test_winograd.py,
 * against the double-precision reference tests/cnn_reference.py
 * conv2d_forward, and conv2d_backward for the weight gradient, and against
 * the im2col road). F(2, 3)'s halves are exact
 * in float. Training does not notice.
 */
/* The transforms are loops of LANES (16) channels that gcc vectorizes. Its
 * tuning for Intel's AVX-512 cores (-march=native on them) prefers 256-bit
 * vectors for such loops, so a 16-channel step took two of each operation;
 * this file's loops use the 512-bit ones the GEMM already uses. The values
 * are the same: each lane is computed alone either way. 28x28x32 -> 32 went
 * 0.92x forward and input gradient, 0.94x weight gradient; the 14x14 layers
 * 0.94-0.97x (scripts/ab_kernels.py, Intel Xeon, 2026-12-04). Not for the
 * whole build: batch norm's loops were slower with 512-bit vectors. */
#if defined(__AVX512F__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("prefer-vector-width=512")
#endif
#include "internal.h"

#define MAX_XI 36    /* positions of the largest transform, 6 x 6 */
#define DW_SLOTS 16  /* partial sums of a weight gradient per kind, at most (as conv.c) */
#define TILE_PAD 16  /* floats after each transformed tile: see at() */
#define SUM_BLOCK 4096 /* floats of the weight gradient's slots summed at a time */
#define PREFETCH_TILES 2 /* the input of the tile this far ahead is fetched early */

/* ---- the 1-D transforms, LANES channels at a time ---------------------------------- */
/* Rounding across compilers. The products by 5, 1/6, 1/12 and 1/24 round,
 * and which of them a compiler fuses with the sum that follows (one FMA,
 * one rounding: -ffp-contract=fast) changes the last bit; gcc and clang
 * chose differently. So these rows say it, with muladd (fused) and product
 * (rounded apart) from internal.h, as gcc 12 had chosen when the golden
 * predictions were computed (read from -fdump-tree-optimized, and checked
 * bit for bit: scripts/ab_kernels.py on the old and new builds). The other
 * products, by 2, 4, 8, 1/2 and 1/4, are exact: fused or not, the sum is
 * the same (barring overflow and subnormals). Two of gcc's choices cross from
 * one transform into the next (g6x4_middle_rows, gt6_rounded's `apart`). */

/* Each transform maps a column or row of vectors of LANES channels to
 * another: out[i * os] = (matrix . in)[i], in[j] = in[j * is], lane by lane.
 * The suffix is the transform's side alpha: 6 for F(4, 3), 4 for F(2, 3).
 * LANES is fixed, not the target's vector width, so every build computes
 * each channel with the same operations in the same order (a loop of LANES
 * iterations the compiler turns into one or two vectors). */
#define LANES 16
typedef float lanes[LANES];

/* B^T d (6 -> 6) */
static inline void bt6(lanes *restrict out, int os, const lanes *restrict in, int is) {
    for (int l = 0; l < LANES; l++) {
        const float d0 = in[0][l], d1 = in[is][l], d2 = in[2 * is][l], d3 = in[3 * is][l];
        const float d4 = in[4 * is][l], d5 = in[5 * is][l];
        /* rows 0 and 5 round 5 d2 apart but fuse 5 d3: gcc's choice, not a numerical one */
        out[0][l] = 4.0f * d0 - product(5.0f, d2) + d4;            /* 4 d0 - 5 d2 + d4 */
        out[os][l] = -4.0f * d1 - 4.0f * d2 + d3 + d4;
        out[2 * os][l] = 4.0f * d1 - 4.0f * d2 - d3 + d4;
        out[3 * os][l] = -2.0f * d1 - d2 + 2.0f * d3 + d4;
        out[4 * os][l] = 2.0f * d1 - d2 - 2.0f * d3 + d4;
        out[5 * os][l] = muladd(-5.0f, d3, 4.0f * d1) + d5;        /* 4 d1 - 5 d3 + d5 */
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
static inline void g6(lanes *restrict out, int os, const lanes *restrict in, int is) {
    for (int l = 0; l < LANES; l++) {
        const float g0 = in[0][l], g1 = in[is][l], g2 = in[2 * is][l];
        /* (rows 1 and 2 sum as g6x4_middle_rows does: keep the two alike) */
        const float g1_12 = product(g1, 1.0f / 12.0f);
        out[0][l] = g0 * (1.0f / 4.0f);
        out[os][l] = product(g0 + g1 + g2, -1.0f / 6.0f);
        out[2 * os][l] = product(g0 - g1 + g2, -1.0f / 6.0f);
        /* g0/24 + g1/12 + g2/6 and g0/24 - g1/12 + g2/6 */
        out[3 * os][l] = muladd(g2, 1.0f / 6.0f, muladd(g0, 1.0f / 24.0f, g1_12));
        out[4 * os][l] = muladd(g2, 1.0f / 6.0f, muladd(g0, 1.0f / 24.0f, -g1_12));
        out[5 * os][l] = g2;
    }
}

/* A y (4 -> 6): the output gradient's transform */
static inline void a6(lanes *restrict out, int os, const lanes *restrict in, int is) {
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

/* G^T x (6 -> 3): the weight gradient's transform. `apart`: the last row's
 * s / 6 is rounded before x5 is added instead of fused with that sum (where
 * gcc did that: kernel_gradient_sized) */
static inline void gt6_rounded(lanes *restrict out, int os, const lanes *restrict in, int is,
                               int apart) {
    for (int l = 0; l < LANES; l++) {
        const float x0 = in[0][l], x1 = in[is][l], x2 = in[2 * is][l], x3 = in[3 * is][l];
        const float x4 = in[4 * is][l], x5 = in[5 * is][l], s = x3 + x4 - x1 - x2;
        const float x12_6 = product(x1 + x2, 1.0f / 6.0f);
        /* x0/4 - (x1 + x2)/6 + (x3 + x4)/24 */
        out[0][l] = muladd(x3 + x4, 1.0f / 24.0f, x0 * (1.0f / 4.0f) - x12_6);
        /* (x2 - x1)/6 + (x3 - x4)/12 */
        out[os][l] = muladd(x2 - x1, 1.0f / 6.0f, product(x3 - x4, 1.0f / 12.0f));
        /* (x3 + x4 - x1 - x2)/6 + x5 */
        out[2 * os][l] = apart ? product(s, 1.0f / 6.0f) + x5 : muladd(s, 1.0f / 6.0f, x5);
    }
}
static inline void gt6(lanes *restrict out, int os, const lanes *restrict in, int is) {
    gt6_rounded(out, os, in, is, 0);
}

/* F(2, 3): B^T d (4 -> 4) */
static inline void bt4(lanes *restrict out, int os, const lanes *restrict in, int is) {
    for (int l = 0; l < LANES; l++) {
        const float d0 = in[0][l], d1 = in[is][l], d2 = in[2 * is][l], d3 = in[3 * is][l];
        out[0][l] = d0 - d2;
        out[os][l] = d1 + d2;
        out[2 * os][l] = d2 - d1;
        out[3 * os][l] = d1 - d3;
    }
}

/* A^T m (4 -> 2) */
static inline void at4(lanes *restrict out, int os, const lanes *restrict in, int is) {
    for (int l = 0; l < LANES; l++) {
        const float m0 = in[0][l], m1 = in[is][l], m2 = in[2 * is][l], m3 = in[3 * is][l];
        out[0][l] = m0 + m1 + m2;
        out[os][l] = m1 - m2 - m3;
    }
}

/* G g (3 -> 4) */
static inline void g4(lanes *restrict out, int os, const lanes *restrict in, int is) {
    for (int l = 0; l < LANES; l++) {
        const float g0 = in[0][l], g1 = in[is][l], g2 = in[2 * is][l];
        out[0][l] = g0;
        out[os][l] = (g0 + g1 + g2) * 0.5f;
        out[2 * os][l] = (g0 - g1 + g2) * 0.5f;
        out[3 * os][l] = g2;
    }
}

/* Rows 1 and 2 of the 6x4 kind's U = (G g) G^T, as gcc 12 computed them
 * (the golden predictions were): (G g)'s rows 1 and 2 are products
 * s * (-1/6), and where G^T (g4) adds the middle one of a row to its
 * neighbours, gcc fused that product into the sum instead of rounding it.
 * u: the kind's 6 x 4 values (columns 1 and 2 of rows 1 and 2 overwritten),
 * col: G g (6 x 3), gg: the kernel (3 x 3; gg[1], gg[4], gg[7] its column 1,
 * summed as g6 sums it: (g0 +- g1) + g2) */
static inline void g6x4_middle_rows(lanes *restrict u, const lanes *restrict col,
                                    const lanes *restrict gg) {
    for (int i = 1; i <= 2; i++)
        for (int l = 0; l < LANES; l++) {
            const float s = gg[1][l] + (i == 1 ? gg[4][l] : -gg[4][l]) + gg[7][l];
            const float g0 = col[i * 3][l], g2 = col[i * 3 + 2][l];
            u[i * 4 + 1][l] = (muladd(s, -1.0f / 6.0f, g0) + g2) * 0.5f;
            u[i * 4 + 2][l] = (muladd(-s, -1.0f / 6.0f, g0) + g2) * 0.5f;
        }
}

/* A y (2 -> 4) */
static inline void a4(lanes *restrict out, int os, const lanes *restrict in, int is) {
    for (int l = 0; l < LANES; l++) {
        const float y0 = in[0][l], y1 = in[is][l];
        out[0][l] = y0;
        out[os][l] = y0 + y1;
        out[2 * os][l] = y0 - y1;
        out[3 * os][l] = -y1;
    }
}

/* G^T x (4 -> 3) */
static inline void gt4(lanes *restrict out, int os, const lanes *restrict in, int is) {
    for (int l = 0; l < LANES; l++) {
        const float x0 = in[0][l], x1 = in[is][l], x2 = in[2 * is][l], x3 = in[3 * is][l];
        out[0][l] = x0 + (x1 + x2) * 0.5f;
        out[os][l] = (x1 - x2) * 0.5f;
        out[2 * os][l] = (x1 + x2) * 0.5f + x3;
    }
}

/* transform_bt, _at, _g, _a, _gt (a, out, os, in, is): the transform of
 * side a, 6 (F(4, 3)) or 4 (F(2, 3)) */
#define OF_SIDE(name)                                                                           \
    static inline void transform_##name(int a, lanes *restrict out, int os,                    \
                                        const lanes *restrict in, int is) {                    \
        if (a == 6) name##6(out, os, in, is); else name##4(out, os, in, is);                   \
    }
OF_SIDE(bt)
OF_SIDE(at)
OF_SIDE(g)
OF_SIDE(a)
OF_SIDE(gt)

/* dst[0:LANES] = src[0:LANES], or zeros when src is NULL, a target vector
 * (VEC floats) at a time. gcc 12 moves a 64-byte memcpy in 16-byte pieces
 * on AVX2 targets (x86-64-v3, znver3) and in 32-byte ones on Intel's AVX-512
 * ones: twice the instructions, and the transforms' copies are such moves
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

/* ---- tiles and their kinds ---------------------------------------------------------- */
/* A kind is the tiles of one transform size: ay x ax (6 or 4 each way) for
 * my x mx outputs (4 or 2), `rows` x `cols` of them in each image, the first
 * one's outputs starting at pixel (y0, x0). */
typedef struct {
    int ay, ax, my, mx, npos; /* npos = ay * ax: the positions xi, and products */
    int rows, cols, y0, x0;
    int64_t T;              /* tiles of this kind: B * rows * cols */
} kind;

/* The tile transforms are written once for any ay x ax and compiled for
 * each of the four sizes: SIZED inlines a function into its callers, and
 * BY_SIZE calls it with the kind's sizes as constants, so that every loop
 * over a transform has a fixed trip count the compiler unrolls into
 * registers (with the sizes read from k, the kernels were 1.26-1.43x
 * slower: scripts/ab_kernels.py) */
#define SIZED static inline __attribute__((always_inline))
#define BY_SIZE(k, f, ...)                                                                     \
    do {                                                                                       \
        if ((k)->ay == 6 && (k)->ax == 6) f(__VA_ARGS__, 6, 6);                                \
        else if ((k)->ay == 6) f(__VA_ARGS__, 6, 4);                                           \
        else if ((k)->ax == 6) f(__VA_ARGS__, 4, 6);                                           \
        else f(__VA_ARGS__, 4, 4);                                                             \
    } while (0)

/* a side of n pixels: `quads` 4-pixel tiles, then `pairs` (0 or 1) 2-pixel
 * ones. A 4q + 3 side ends in a 4-pixel tile with one output to spare
 * (6 transform values against 4 + 4 for two 2-pixel tiles). */
static void split_side(int n, int *quads, int *pairs) {
    *pairs = n % 4 == 1 || n % 4 == 2;
    *quads = *pairs ? n / 4 : (n + 3) / 4;
}

/* the kinds of a (B,H,W) layer, those that have tiles, in the order their
 * weight gradients are added: 4x4 outputs, 4x2 (the right edge), 2x4 (the
 * bottom edge), 2x2 (the corner); returns how many */
static int tile_kinds(kind *ks, int B, int H, int W) {
    int qy, py, qx, px, n = 0;
    split_side(H, &qy, &py);
    split_side(W, &qx, &px);
    const int rows[2] = {qy, py}, cols[2] = {qx, px};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            if (!rows[i] || !cols[j] || !B) continue;
            kind k = {.ay = i ? 4 : 6, .ax = j ? 4 : 6, .rows = rows[i], .cols = cols[j],
                      .y0 = i ? 4 * qy : 0, .x0 = j ? 4 * qx : 0};
            k.my = k.ay - 2;
            k.mx = k.ax - 2;
            k.npos = k.ay * k.ax;
            k.T = (int64_t)B * k.rows * k.cols;
            ks[n++] = k;
        }
    return n;
}

/* the kind that item j belongs to, when the items (chunks, slots, blocks)
 * of all kinds are numbered together and kind i's run from first[i] to
 * first[i + 1] - 1 */
static inline int kind_of(int64_t j, const int64_t *first) {
    int i = 0;
    while (j >= first[i + 1]) i++;
    return i;
}

/* Transformed tiles are stored tile by tile: V (tc, npos, C), value xi of
 * channel c of tile t at t * (npos * C + TILE_PAD) + xi * C + c, so that a
 * transform reads or writes one contiguous block. Matrix xi of the chunk,
 * V[xi] (tc, C), is then a matrix whose rows lie npos * C + TILE_PAD floats
 * apart, which the GEMM reads where it lies (pynn_gemm_solo_strided).
 * (Stored matrix by matrix instead, the npos scattered rows of each tile kept
 * the transforms waiting for the cache: a quarter of the forward's time,
 * measured.) The pad, one cache line, is there for the GEMM: rows npos * C
 * floats apart (36 * C: 9 KB for C = 64) all fall into 4 of the L1's 64 sets and
 * evict each other; one line more spreads them over all 64 (the weight
 * gradient 5-7 % faster on AVX2, scripts/ab_kernels.py; no bit moves: the
 * GEMM's sums do not depend on where their operands lie). */
static inline size_t tile_floats(const kind *k, int C) { return (size_t)k->npos * C + TILE_PAD; }
static inline size_t at(const kind *k, int64_t t, int xi, int C) {
    return (size_t)t * tile_floats(k, C) + (size_t)xi * C;
}

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
static int64_t chunk_tiles(const kind *k, int C, int OC, int64_t floats, int unit) {
    int64_t t = floats / ((int64_t)k->npos * (C + OC)) / unit * unit;
    return t < unit ? unit : t;
}

/* dst[0:n] = src[0:n], or zeros when src is NULL: in lanes-sized moves the
 * compiler inlines (a call to memcpy per pixel row cost more than the copy) */
static inline void copy_floats(float *restrict dst, const float *restrict src, int n) {
    int i = 0;
    for (; i + LANES <= n; i += LANES) move_lanes(dst + i, src ? src + i : NULL);
    for (; i < n; i++) dst[i] = src ? src[i] : 0.0f;
}

/* where tile t of kind k (of B*rows*cols, image by image, row by row) lies:
 * its image and the top-left pixel of its outputs; its input patch starts
 * one pixel up and left of that */
typedef struct { int64_t img; int y, x; } tile_pos;
static inline tile_pos tile_at(const kind *k, int64_t t) {
    const tile_pos p = {t / ((int64_t)k->rows * k->cols),
                        k->y0 + k->my * (int)(t / k->cols % k->rows),
                        k->x0 + k->mx * (int)(t % k->cols)};
    return p;
}

/* patch (ay, ax, C) = the input pixels under tile t, zeros outside the
 * image: copied row by row, so that the reads stream (read where they lie,
 * the ay * ax pixels of a tile kept the memory system waiting: 70 % of the
 * transform's time) */
SIZED void tile_patch(float *restrict patch, const float *inp, const kind *k, int64_t t, int H,
                      int W, int C, int ay, int ax) {
    const tile_pos p = tile_at(k, t);
    const int x0 = p.x - 1, s0 = x0 < 0 ? -x0 : 0;
    const int s1 = W - x0 < ax ? W - x0 : ax; /* columns [s0, s1) are inside */
    const int row = ax * C;
    for (int r = 0; r < ay; r++) {
        const int y = p.y - 1 + r;
        float *dst = patch + (size_t)r * row;
        if (y < 0 || y >= H || s1 <= s0) {
            copy_floats(dst, NULL, row);
            continue;
        }
        copy_floats(dst, NULL, s0 * C);
        copy_floats(dst + (size_t)s0 * C, inp + (((size_t)p.img * H + y) * W + x0 + s0) * C,
                    (s1 - s0) * C);
        copy_floats(dst + (size_t)s1 * C, NULL, (ax - s1) * C);
    }
}

/* ask the memory for the pixels of rows y0 .. y0+ny-1, columns x0 ..
 * x0+nx-1 of image img of a (B,H,W,C) array ahead of their use, a cache
 * line at a time, those inside the image: the input patch of a tile, or
 * its output gradient. The copies waited on them otherwise (perf annotate:
 * half of input_transform's time on the loads of tile_patch, and a sixth of
 * the weight gradient's on those of dout). */
SIZED void prefetch_pixels(const float *a, int64_t img, int y0, int x0, int ny, int nx, int H,
                           int W, int C) {
    const int x1 = x0 + nx < W ? x0 + nx : W;
    x0 = x0 < 0 ? 0 : x0;
    for (int r = 0; r < ny; r++) {
        const int y = y0 + r;
        if (y < 0 || y >= H) continue;
        const char *row = (const char *)(a + (((size_t)img * H + y) * W + x0) * C);
        const size_t bytes = (size_t)(x1 - x0) * C * sizeof(float);
        for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch(row + o);
    }
}

/* ---- one tile's transforms -------------------------------------------------------- */
/* Each takes the channels LANES at a time: the tile's values are copied into
 * lanes vectors (d, m, dy), transformed down the columns, then along the
 * rows, and the results copied out. That is the plain version. For the
 * presets' widths, cs = C / LANES = 1, 2 or 4 lanes a pixel, the branches
 * marked "in place" skip copies: bt_tile reads the patch and writes V where
 * they lie (a pixel's or a value's lanes cs lanes apart), at_tile reads M
 * and, for a whole tile without bias, writes the image where they lie, and
 * a_tile writes Yhat where it lies (dy is still copied in: it has the
 * zeros). The same transforms of the same values give the same bits
 * (tests/test_winograd.py compares the two roads): per value, 2 stores
 * instead of 4 in bt_tile, 2 instead of 3 in at_tile and 3 instead of 4 in
 * a_tile. On the Zen 4 of docs/performance.md (2026-12-08) the Winograd
 * kernels took 0.80-0.86x the time (AVX2 build 0.88-0.93x), a training step
 * 0.88-0.92x. cs must be a literal where the function is compiled
 * (BY_LANES): with the strides read at run time gcc's loops took 1.2-1.6x
 * as long as the copies, with literals 0.6x. Other widths (48, 128, ...)
 * take the copies. */

/* C / LANES when C is 16, 32 or 64 (the presets' layers), else 0 */
static inline int whole_lanes(int C) {
    return C == LANES || C == 2 * LANES || C == 4 * LANES ? C / LANES : 0;
}

/* f(..., cs) with cs = whole_lanes(C) as a literal: f (SIZED) is compiled for each */
#define BY_LANES(C, f, ...)                                                                    \
    do {                                                                                       \
        switch (whole_lanes(C)) {                                                              \
        case 1: f(__VA_ARGS__, 1); break;                                                      \
        case 2: f(__VA_ARGS__, 2); break;                                                      \
        case 4: f(__VA_ARGS__, 4); break;                                                      \
        default: f(__VA_ARGS__, 0);                                                            \
        }                                                                                      \
    } while (0)

/* Vt (xi, C) = B^T d B of one tile, d its patch (ay, ax, C) */
SIZED void bt_tile(float *restrict Vt, const float *restrict patch, int C, int ay, int ax,
                   int cs) {
    lanes d[MAX_XI], col[MAX_XI], v[MAX_XI];
    for (int c0 = 0; c0 < C; c0 += LANES) {
        if (cs) { /* in place */
            const lanes *dc = (const lanes *)(patch + c0);
            lanes *vc = (lanes *)(Vt + c0);
            for (int s = 0; s < ax; s++) transform_bt(ay, col + s, ax, dc + s * cs, ax * cs);
            for (int i = 0; i < ay; i++) transform_bt(ax, vc + i * ax * cs, cs, col + i * ax, 1);
            continue;
        }
        const int n = C - c0 < LANES ? C - c0 : LANES;
        for (int q = 0; q < ay * ax; q++) lanes_in(d[q], patch + (size_t)q * C + c0, n);
        for (int s = 0; s < ax; s++) transform_bt(ay, col + s, ax, d + s, ax); /* B^T d */
        for (int i = 0; i < ay; i++) transform_bt(ax, v + i * ax, 1, col + i * ax, 1); /* . B */
        for (int q = 0; q < ay * ax; q++) lanes_out(Vt + (size_t)q * C + c0, v[q], n);
    }
}

/* the outputs of one tile (+ bias), A^T m A of its Mt (xi, OC): o0 is its
 * top-left output pixel, its rows `row` floats apart, ny x nx of its pixels
 * inside the image (those past it are not stored) */
SIZED void at_tile(float *o0, size_t row, const float *restrict Mt, const float *bias, int ny,
                   int nx, int OC, int ay, int ax, int cs) {
    const int my = ay - 2, mx = ax - 2;
    const int in_place = cs && !bias && ny == my && nx == mx; /* a whole tile, no bias */
    lanes m[MAX_XI], col[MAX_XI], y[16], b;
    for (int c0 = 0; c0 < OC; c0 += LANES) {
        if (in_place) {
            const lanes *mc = (const lanes *)(Mt + c0);
            for (int j = 0; j < ax; j++) transform_at(ay, col + j, ax, mc + j * cs, ax * cs);
            for (int i = 0; i < my; i++)
                transform_at(ax, (lanes *)(o0 + (size_t)i * row + c0), cs, col + i * ax, 1);
            continue;
        }
        const int n = OC - c0 < LANES ? OC - c0 : LANES;
        for (int q = 0; q < ay * ax; q++) lanes_in(m[q], Mt + (size_t)q * OC + c0, n);
        for (int j = 0; j < ax; j++) transform_at(ay, col + j, ax, m + j, ax); /* A^T m */
        for (int i = 0; i < my; i++) transform_at(ax, y + i * mx, 1, col + i * ax, 1); /* . A */
        if (bias) lanes_in(b, bias + c0, n);
        for (int i = 0; i < ny; i++)
            for (int j = 0; j < nx; j++) {
                float *dst = o0 + (size_t)i * row + (size_t)j * OC + c0;
                if (bias)
                    for (int l = 0; l < n; l++) dst[l] = y[i * mx + j][l] + b[l];
                else
                    lanes_out(dst, y[i * mx + j], n);
            }
    }
}

/* Yt (xi, OC) = A dY A^T of one tile, dY its output gradient (my x mx
 * pixels from g0, rows `row` floats apart, ny x nx of them inside the image;
 * the rest have no gradient: zeros). dY is always copied in (the zeros). */
SIZED void a_tile(float *restrict Yt, const float *g0, const float *zeros, size_t row, int ny,
                  int nx, int OC, int ay, int ax, int cs) {
    const int my = ay - 2, mx = ax - 2;
    lanes dy[16], col[MAX_XI], yh[MAX_XI];
    for (int c0 = 0; c0 < OC; c0 += LANES) {
        const int n = OC - c0 < LANES ? OC - c0 : LANES;
        for (int i = 0; i < my; i++)
            for (int j = 0; j < mx; j++)
                lanes_in(dy[i * mx + j],
                         i < ny && j < nx ? g0 + (size_t)i * row + (size_t)j * OC + c0 : zeros, n);
        for (int j = 0; j < mx; j++) transform_a(ay, col + j, mx, dy + j, mx); /* A dY */
        if (cs) { /* in place */
            lanes *yc = (lanes *)(Yt + c0);
            for (int i = 0; i < ay; i++) transform_a(ax, yc + i * ax * cs, cs, col + i * mx, 1);
            continue;
        }
        for (int i = 0; i < ay; i++) transform_a(ax, yh + i * ax, 1, col + i * mx, 1); /* . A^T */
        for (int q = 0; q < ay * ax; q++) lanes_out(Yt + (size_t)q * OC + c0, yh[q], n);
    }
}

/* V (tc, xi, C): V[t][xi][c] = (B^T d B)[xi] of tiles t0 .. t0+tc-1 of kind
 * k, whose transforms are ay x ax; patch is room for one tile's input pixels */
SIZED void input_transform_sized(float *restrict V, const float *inp, float *restrict patch,
                                 const kind *k, int64_t t0, int tc, int H, int W, int C, int ay,
                                 int ax) {
    for (int t = 0; t < tc; t++) {
        if (t0 + t + PREFETCH_TILES < k->T) {
            const tile_pos p = tile_at(k, t0 + t + PREFETCH_TILES);
            prefetch_pixels(inp, p.img, p.y - 1, p.x - 1, ay, ax, H, W, C);
        }
        tile_patch(patch, inp, k, t0 + t, H, W, C, ay, ax);
        BY_LANES(C, bt_tile, V + at(k, t, 0, C), patch, C, ay, ax);
    }
}
static void input_transform(float *restrict V, const float *inp, float *restrict patch,
                            const kind *k, int64_t t0, int tc, int H, int W, int C) {
    BY_SIZE(k, input_transform_sized, V, inp, patch, k, t0, tc, H, W, C);
}

/* out (B,H,W,OC) of tiles t0 .. t0+tc-1 of kind k from M (tc, xi, OC):
 * A^T M A (+ bias); the outputs of a tile that fall past the image are not
 * stored */
SIZED void output_transform_sized(float *out, const float *restrict M, const float *bias,
                                  const kind *k, int64_t t0, int tc, int H, int W, int OC, int ay,
                                  int ax) {
    const int my = ay - 2, mx = ax - 2;
    for (int t = 0; t < tc; t++) {
        const tile_pos p = tile_at(k, t0 + t);
        const int ny = H - p.y < my ? H - p.y : my;
        const int nx = W - p.x < mx ? W - p.x : mx;
        float *o0 = out + (((size_t)p.img * H + p.y) * W + p.x) * OC;
        BY_LANES(OC, at_tile, o0, (size_t)W * OC, M + at(k, t, 0, OC), bias, ny, nx, OC, ay, ax);
    }
}

static void output_transform(float *out, const float *restrict M, const float *bias,
                             const kind *k, int64_t t0, int tc, int H, int W, int OC) {
    BY_SIZE(k, output_transform_sized, out, M, bias, k, t0, tc, H, W, OC);
}

/* U (xi, C, OC) = G g G^T of every kernel g = weight[o, :, :, c] for
 * transforms of ay x ax, weight (OC,3,3,C): the columns o0 .. o0+LANES-1 of
 * U (one block of output channels; the threads share the blocks). The
 * kernels of LANES output channels are transformed into u first, so that U
 * is written a row of LANES channels o at a time (written value by value,
 * OC floats apart, U cost as much as the whole input transform of a 14x14
 * layer: perf) */
SIZED void weight_transform_sized(float *restrict U, const float *restrict weight, int o0, int C,
                                  int OC, int ay, int ax) {
    lanes gg[9], col[MAX_XI], u[LANES][MAX_XI];
    const int no = OC - o0 < LANES ? OC - o0 : LANES;
    for (int c0 = 0; c0 < C; c0 += LANES) {
        const int n = C - c0 < LANES ? C - c0 : LANES;
        for (int oo = 0; oo < no; oo++) {
            const float *wo = weight + (size_t)(o0 + oo) * 9 * C + c0;
            for (int q = 0; q < 9; q++) lanes_in(gg[q], wo + (size_t)q * C, n);
            for (int j = 0; j < 3; j++) transform_g(ay, col + j, 3, gg + j, 3); /* G g */
            for (int i = 0; i < ay; i++)
                transform_g(ax, u[oo] + i * ax, 1, col + i * 3, 1); /* . G^T */
            if (ay == 6 && ax == 4) g6x4_middle_rows(u[oo], col, gg);
        }
        for (int q = 0; q < ay * ax; q++)
            for (int l = 0; l < n; l++) {
                float *dst = U + ((size_t)q * C + c0 + l) * OC + o0;
                for (int oo = 0; oo < no; oo++) dst[oo] = u[oo][q][l];
            }
    }
}
static void weight_transform(float *restrict U, const float *restrict weight, const kind *k,
                             int o0, int C, int OC) {
    BY_SIZE(k, weight_transform_sized, U, weight, o0, C, OC);
}

/* 3x3 kernels with at least 8 channels each way: with fewer, the transforms'
 * cost is not repaid by the cheaper products (a GEMM with K or N under 8 is
 * mostly edge). Measured (docs/performance.md, "the new cnn-large's network
 * against PyTorch"): from 16 channels in, the forward and input gradient win
 * (1.15-1.94x im2col's speed) and the weight gradient about ties
 * (0.96-1.25x); at 8-12 the forward and input gradient tie (0.83-1.09x) and
 * the weight gradient takes 1.6x as long. No preset has such a layer; a
 * finer rule would move the bits of the networks that do. */
int pynn_winograd_fits(int C, int OC, int k) { return k == 3 && C >= 8 && OC >= 8; }

void pynn_winograd_forward(float *out, const float *inp, const float *weight, const float *bias,
                           int B, int H, int W, int C, int OC) {
    /* out (B,H,W,OC), inp (B,H,W,C), weight (OC,3,3,C), bias (OC,) or NULL */
    kind ks[4];
    const int nk = tile_kinds(ks, B, H, W);
    int64_t tc[4], first[5] = {0}; /* kind i's chunks are first[i] .. first[i+1]-1 */
    size_t per = 0, u_at[4], u_floats = 0;
    double flops = 0;
    for (int i = 0; i < nk; i++) {
        tc[i] = chunk_tiles(&ks[i], C, OC, 65536, 24);
        first[i + 1] = first[i] + (ks[i].T + tc[i] - 1) / tc[i];
        const size_t mine = tc[i] * (tile_floats(&ks[i], C) + tile_floats(&ks[i], OC));
        per = mine > per ? mine : per;
        u_at[i] = u_floats;
        u_floats += (size_t)ks[i].npos * C * OC;
        flops += 2.0 * ks[i].T * ks[i].npos * C * OC;
    }
    per += (size_t)MAX_XI * C; /* V, M, patch */
    float *U = pynn_work(PYNN_WORK_WINOGRAD_WEIGHTS, u_floats ? u_floats : 1);
    float *work = pynn_work(PYNN_WORK_WINOGRAD, (size_t)omp_get_max_threads() * per);
    const int blocks = (OC + LANES - 1) / LANES; /* of U's columns, per kind */
    pynn_gemm_reserve();
    (void)flops; /* read only by the clause below, which a build without OpenMP ignores */
#pragma omp parallel if (flops >= PAR_MIN_FLOPS)
    {
        float *V = work + (size_t)omp_get_thread_num() * per;
#pragma omp for schedule(static) /* U first, all of it (the loop's end waits for it) */
        for (int j = 0; j < nk * blocks; j++)
            weight_transform(U + u_at[j / blocks], weight, &ks[j / blocks],
                             (j % blocks) * LANES, C, OC);
#pragma omp for schedule(dynamic)
        for (int64_t ch = 0; ch < first[nk]; ch++) {
            const int i = kind_of(ch, first);
            const kind *k = &ks[i];
            float *M = V + tc[i] * tile_floats(k, C), *patch = M + tc[i] * tile_floats(k, OC);
            const int64_t t0 = (ch - first[i]) * tc[i];
            const int n = (int)(t0 + tc[i] < k->T ? tc[i] : k->T - t0);
            input_transform(V, inp, patch, k, t0, n, H, W, C);
            for (int xi = 0; xi < k->npos; xi++) /* M[xi] (n, OC) = V[xi] (n, C) . U[xi] (C, OC) */
                pynn_gemm_solo_strided(0, 0, n, OC, C, V + at(k, 0, xi, C), tile_floats(k, C),
                                       U + u_at[i] + (size_t)xi * C * OC, (size_t)OC,
                                       M + at(k, 0, xi, OC), tile_floats(k, OC), 0);
            output_transform(out, M, bias, k, t0, n, H, W, OC);
        }
    }
}

/* Yhat (tc, xi, OC) = A dY A^T of tiles t0 .. t0+tc-1 of kind k of dout
 * (B,H,W,OC); the outputs past the image have no gradient (0) */
SIZED void gradient_transform_sized(float *restrict Yh, const float *dout, const float *zeros,
                                    const kind *k, int64_t t0, int tc, int H, int W, int OC,
                                    int ay, int ax) {
    const int my = ay - 2, mx = ax - 2;
    for (int t = 0; t < tc; t++) {
        if (t0 + t + PREFETCH_TILES < k->T) {
            const tile_pos f = tile_at(k, t0 + t + PREFETCH_TILES);
            prefetch_pixels(dout, f.img, f.y, f.x, my, mx, H, W, OC);
        }
        const tile_pos p = tile_at(k, t0 + t);
        const int ny = H - p.y < my ? H - p.y : my;
        const int nx = W - p.x < mx ? W - p.x : mx;
        const float *g0 = dout + (((size_t)p.img * H + p.y) * W + p.x) * OC;
        BY_LANES(OC, a_tile, Yh + at(k, t, 0, OC), g0, zeros, (size_t)W * OC, ny, nx, OC, ay, ax);
    }
}
static void gradient_transform(float *restrict Yh, const float *dout, const float *zeros,
                               const kind *k, int64_t t0, int tc, int H, int W, int OC) {
    BY_SIZE(k, gradient_transform_sized, Yh, dout, zeros, k, t0, tc, H, W, OC);
}

/* w (3, 3) = G^T x G for the LANES channels c0.. of output channel o, x
 * the gradient dU (xi, OC, C) of transforms of ay x ax */
SIZED void kernel_gradient_sized(lanes *restrict w, const float *restrict dU, int o, int c0, int n,
                                 int C, int OC, int ay, int ax) {
    lanes x[MAX_XI], col[MAX_XI];
    for (int q = 0; q < ay * ax; q++) lanes_in(x[q], dU + ((size_t)q * OC + o) * C + c0, n);
    for (int j = 0; j < ax; j++) transform_gt(ay, col + j, ax, x + j, ax); /* G^T x */
    for (int r = 0; r < 3; r++) { /* . G */
        /* in the 4x6 kind, row 1 of G^T x is F(2, 3)'s (x1 - x2) / 2, a
         * product that gcc fused into gt6's last sum, rounding s / 6 apart */
        if (ay == 4 && ax == 6 && r == 1) gt6_rounded(w + r * 3, 1, col + r * ax, 1, 1);
        else transform_gt(ax, w + r * 3, 1, col + r * ax, 1);
    }
}

void pynn_winograd_dweight(float *dweight, const float *dout, const float *inp, int B, int H,
                           int W, int C, int OC) {
    /* dweight (OC,3,3,C) = the gradient of the forward above: the sum over
     * the kinds of G^T dU G, with dU[xi] (OC, C) = the sum over the kind's
     * tiles of Yhat[xi]^T . V[xi]. dout (B,H,W,OC), inp (B,H,W,C). Three steps:
     *   1. each chunk of tiles: transform inp to V and dout to Yhat, and add
     *      Yhat[xi]^T . V[xi] into its slot (the GEMM, accumulating);
     *   2. add each kind's slots, in slot order, into its first;
     *   3. dweight = the kinds' G^T dU G, in kind order. */
    kind ks[4];
    const int nk = tile_kinds(ks, B, H, W);
    /* kind i: chunks of tc[i] tiles, n_chunks[i] of them, summed in
     * n_slots[i] slots of slot[i] floats from dU + base[i]; the slots of all
     * kinds are numbered together, kind i's from first[i]. dU is at most
     * DW_SLOTS x (36 + 24 + 24 + 16) x OC x C floats, when all four kinds
     * have many tiles (26 MB for 64 -> 64 channels) */
    int64_t tc[4], n_chunks[4], n_slots[4], first[5] = {0};
    size_t slot[4], base[4], du_floats = 0, per = 0;
    double flops = 0;
    for (int i = 0; i < nk; i++) {
        tc[i] = chunk_tiles(&ks[i], C, OC, 262144, 8);
        n_chunks[i] = (ks[i].T + tc[i] - 1) / tc[i];
        /* about two chunks a slot: a slot's second chunk is added while
         * the slot is in cache, where summing the slots afterwards reads
         * them from memory (14x14 layers' weight gradients 6-11 % faster
         * than with a slot per chunk, ab_kernels) */
        n_slots[i] = (n_chunks[i] + 1) / 2 < DW_SLOTS ? (n_chunks[i] + 1) / 2 : DW_SLOTS;
        first[i + 1] = first[i] + n_slots[i];
        slot[i] = (size_t)ks[i].npos * OC * C;
        base[i] = du_floats;
        du_floats += n_slots[i] * slot[i];
        const size_t mine = tc[i] * (tile_floats(&ks[i], C) + tile_floats(&ks[i], OC));
        per = mine > per ? mine : per;
        flops += 2.0 * ks[i].T * ks[i].npos * C * OC;
    }
    per += (size_t)MAX_XI * C + OC; /* V, Yhat, patch, zeros */
    float *dU = pynn_work(PYNN_WORK_WINOGRAD_WEIGHTS, du_floats ? du_floats : 1);
    float *work = pynn_work(PYNN_WORK_WINOGRAD, (size_t)omp_get_max_threads() * per);
    pynn_gemm_reserve();
    (void)flops; /* read only by the clause below, which a build without OpenMP ignores */
#pragma omp parallel if (flops >= PAR_MIN_FLOPS)
    {
        float *V = work + (size_t)omp_get_thread_num() * per;
        float *zeros = V + per - OC; /* a pixel of zero gradient, OC channels */
        for (int o = 0; o < OC; o++) zeros[o] = 0.0f;
#pragma omp for schedule(dynamic)
        for (int64_t s = 0; s < first[nk]; s++) {
            const int i = kind_of(s, first);
            const kind *k = &ks[i];
            float *Yh = V + tc[i] * tile_floats(k, C), *patch = Yh + tc[i] * tile_floats(k, OC);
            float *dUs = dU + base[i] + (s - first[i]) * slot[i];
            const int64_t sl = s - first[i]; /* the slot sums chunks [c0, c1), in order */
            const int64_t c0 = sl * n_chunks[i] / n_slots[i];
            const int64_t c1 = (sl + 1) * n_chunks[i] / n_slots[i];
            for (int64_t ch = c0; ch < c1; ch++) {
                const int64_t t0 = ch * tc[i];
                const int n = (int)(t0 + tc[i] < k->T ? tc[i] : k->T - t0);
                input_transform(V, inp, patch, k, t0, n, H, W, C);
                gradient_transform(Yh, dout, zeros, k, t0, n, H, W, OC);
                for (int xi = 0; xi < k->npos; xi++) /* dU[xi] (OC, C) += Yhat[xi]^T . V[xi] */
                    pynn_gemm_solo_strided(1, 0, OC, C, n, Yh + at(k, 0, xi, OC),
                                           tile_floats(k, OC), V + at(k, 0, xi, C),
                                           tile_floats(k, C), dUs + (size_t)xi * OC * C,
                                           (size_t)C, ch > c0 ? PYNN_GEMM_ACCUMULATE : 0);
            }
        }
        /* each kind's slots added into its first in slot order, SUM_BLOCK
         * floats at a time, so that they are read as streams (added where
         * G^T dU G takes each value, the slots' scattered lines kept the
         * loads waiting: perf put a tenth of the weight gradient's time
         * there). The blocks of all kinds are numbered together. */
        int64_t blocks[5] = {0};
        for (int i = 0; i < nk; i++)
            blocks[i + 1] = blocks[i] + ((int64_t)slot[i] + SUM_BLOCK - 1) / SUM_BLOCK;
#pragma omp for schedule(static)
        for (int64_t b = 0; b < blocks[nk]; b++) {
            const int i = kind_of(b, blocks);
            float *d0 = dU + base[i];
            const size_t i0 = (size_t)(b - blocks[i]) * SUM_BLOCK;
            const size_t i1 = i0 + SUM_BLOCK < slot[i] ? i0 + SUM_BLOCK : slot[i];
            for (int64_t sl = 1; sl < n_slots[i]; sl++)
                for (size_t e = i0; e < i1; e++) d0[e] += d0[sl * slot[i] + e];
        }
#pragma omp for schedule(static)
        for (int o = 0; o < OC; o++) { /* the sum over the kinds of G^T dU G */
            lanes w[9], sum[9];
            for (int c0 = 0; c0 < C; c0 += LANES) {
                const int n = C - c0 < LANES ? C - c0 : LANES;
                for (int i = 0; i < nk; i++) {
                    BY_SIZE(&ks[i], kernel_gradient_sized, w, dU + base[i], o, c0, n, C, OC);
                    for (int q = 0; q < 9; q++)
                        for (int l = 0; l < LANES; l++)
                            sum[q][l] = i ? sum[q][l] + w[q][l] : w[q][l];
                }
                for (int q = 0; q < 9; q++) {
                    if (nk == 0) move_lanes(sum[q], NULL); /* no tiles (B = 0): no gradient */
                    lanes_out(dweight + ((size_t)o * 9 + q) * C + c0, sum[q], n);
                }
            }
        }
    }
}
