/* gemm.c - C = op(A) . op(B) (+ bias), the one matrix product pynn needs.
 *
 * The three layouts of a dense layer all come through here:
 *   forward   out(B,OC)   = inp(B,C) . weight(OC,C)^T   ta=0 tb=1  ("NT")
 *   backward  dinp(B,C)   = dout(B,OC) . weight(OC,C)   ta=0 tb=0  ("NN")
 *             dweight(OC,C) = dout(B,OC)^T . inp(B,C)   ta=1 tb=0  ("TN")
 *
 * The method is the one of BLIS/GotoBLAS, kept small. C is cut into tiles of
 * MR x NR; a micro-kernel keeps one tile in registers (MR x 2 vectors) while
 * it runs along K, each step one vector pair of op(B) times MR broadcast
 * values of op(A):
 *   for each block of KC values of K                          (pc loop)
 *     for each tile of this thread, column panel by column panel:
 *       pack op(B)[pc:pc+KC, panel] into NR-wide rows (once per panel) -> Bp
 *       micro-kernel: C tile (+)= op(A)[tile rows, pc:pc+KC] . Bp
 * op(B) is packed because the kernel wants NR consecutive values of a row of
 * op(B): a transpose (8x8 blocks) when B is (N,K). When B is (K,N) its rows
 * already hold them, and a full panel is mostly read in place (see in_place).
 * op(A) is read where it lies (a broadcast takes one value from any address);
 * only a partial panel at the bottom edge is packed, zero-padded. The kernel
 * computes full tiles and stores only the valid part. A forward product with
 * fewer rows than columns (batch < outputs) is computed as C^T = B . A^T and
 * stored transposed (see swap): then the batch, not the weight, is transposed.
 *
 * Threads take equal shares of the tiles, each with its own packing slots, so
 * they never wait for each other inside a product. K is never split, so every
 * element of C sees the same sequence of operations whatever the thread count.
 * pynn_gemm_team is one thread's share, for a caller that runs several
 * products in one parallel region (dense.c); pynn_gemm_solo is all of a
 * product on the calling thread, for a caller whose threads each take their
 * own products (conv.c); pynn_gemm opens a region for one.
 *
 * The plain version it must equal: tests/reference.py matmul, the three
 * loops of the definition (tests/test_kernels.py, on odd shapes, every
 * layout, several thread counts).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* The micro-kernel is written with GNU C vectors (internal.h: vec, VEC floats
 * a register), or in plain C where those are missing or PYNN_PLAIN_C is
 * defined (a build option, so that the fallback is tested too). */
#define NR (2 * VEC) /* tile width: two registers */
#ifndef MR /* tile height: MR x 2 accumulator registers, 2 of op(B), 1 broadcast */
#if defined(__AVX__) && !defined(__AVX512F__)
#define MR 6 /* AVX has 16 vector registers: 6 x 2 + 3 fit, 8 x 2 + 3 spill */
#else
#define MR 8 /* AVX-512 has 32 */
#endif
#endif
#ifndef KC
#define KC 1024 /* a packed B panel, KC x NR floats (128 KB with AVX-512's NR = 32,
                 * 64 KB with AVX2's 16), stays in L2 */
#endif

/* ---- packing ------------------------------------------------------------- */
/* Two of the four packings are plain copies (op(A) stored (K,M), op(B) stored
 * (K,N): the panel rows are already contiguous). The other two transpose, and
 * done one float at a time they cost as much as the multiplication itself; so
 * full 8x8 blocks go through an in-register transpose where AVX is there. */

#if defined(__AVX__) && GNU_VECTORS
#include <immintrin.h>
/* dst[q*ldd + r] = src[r*lds + q] for r, q < 8 */
static inline void transpose8x8(const float *src, size_t lds, float *dst, size_t ldd) {
    __m256 r0 = _mm256_loadu_ps(src + 0 * lds), r1 = _mm256_loadu_ps(src + 1 * lds);
    __m256 r2 = _mm256_loadu_ps(src + 2 * lds), r3 = _mm256_loadu_ps(src + 3 * lds);
    __m256 r4 = _mm256_loadu_ps(src + 4 * lds), r5 = _mm256_loadu_ps(src + 5 * lds);
    __m256 r6 = _mm256_loadu_ps(src + 6 * lds), r7 = _mm256_loadu_ps(src + 7 * lds);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(dst + 0 * ldd, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(dst + 1 * ldd, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(dst + 2 * ldd, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(dst + 3 * ldd, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(dst + 4 * ldd, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(dst + 5 * ldd, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(dst + 6 * ldd, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(dst + 7 * ldd, _mm256_permute2f128_ps(u3, u7, 0x31));
}
#define HAVE_TRANSPOSE8 1
#endif

/* dst[p*w + r] = src[(r0 + r)*lds + p0 + p] for r < w, p < kc, zero for rows r0+r >= rows:
 * a transposing copy of w rows (w = MR or NR) of a matrix stored row-major */
static void pack_transposed(float *dst, const float *src, size_t lds, int rows, int r0,
                            int p0, int kc, int w) {
    /* rows past the matrix are zeros: the whole panel zeroed at once (a zero
     * loop after each row became a call to memset per row: 4 % of a step) */
    if (rows - r0 < w) memset(dst, 0, sizeof(float) * (size_t)kc * w);
    int r = 0;
#if HAVE_TRANSPOSE8
    for (; r + 8 <= w && r0 + r + 8 <= rows; r += 8) {
        int p = 0;
        for (; p + 8 <= kc; p += 8)
            transpose8x8(src + (size_t)(r0 + r) * lds + p0 + p, lds, dst + (size_t)p * w + r, w);
        for (; p < kc; p++)
            for (int q = 0; q < 8; q++)
                dst[(size_t)p * w + r + q] = src[(size_t)(r0 + r + q) * lds + p0 + p];
    }
#endif
    for (; r < w && r0 + r < rows; r++) /* the rest of the rows, one float at a time */
        for (int p = 0; p < kc; p++) dst[(size_t)p * w + r] = src[(size_t)(r0 + r) * lds + p0 + p];
}

/* dst[p*w + c] = src[(p0 + p)*lds + c0 + c] for c < w, zero for columns c0+c >= cols */
static void pack_copy(float *dst, const float *src, size_t lds, int cols, int c0, int p0,
                      int kc, int w) {
    const int valid = cols - c0 < w ? cols - c0 : w;
    if (valid < w) memset(dst, 0, sizeof(float) * (size_t)kc * w); /* as pack_transposed */
    for (int p = 0; p < kc; p++) {
        const float *row = src + (size_t)(p0 + p) * lds + c0;
        float *out = dst + (size_t)p * w;
        for (int c = 0; c < valid; c++) out[c] = row[c];
    }
}

/* op(A) rows [i0, i0+MR) x cols [p0, p0+kc) -> one MR-row panel: dst[p][i] */
static void pack_a_panel(float *dst, const float *A, int ta, int M, size_t lda, int i0,
                         int p0, int kc) {
    if (ta) pack_copy(dst, A, lda, M, i0, p0, kc, MR);        /* A is (K,M) */
    else pack_transposed(dst, A, lda, M, i0, p0, kc, MR);     /* A is (M,K) */
}

/* op(B) rows [p0, p0+kc) x cols [j0, j0+NR) -> one NR-column panel: dst[p][j] */
static void pack_b_panel(float *dst, const float *Bm, int tb, int N, size_t ldb, int j0,
                         int p0, int kc) {
    if (tb) pack_transposed(dst, Bm, ldb, N, j0, p0, kc, NR); /* B is (N,K) */
    else pack_copy(dst, Bm, ldb, N, j0, p0, kc, NR);          /* B is (K,N) */
}

/* ---- what every path stores ---------------------------------------------- */
/* an element of C: the sum, plus the bias, plus the old value of C when
 * accumulating (*c is read only then), then the ReLU when asked */
static inline float finish(float sum, float bias, const float *c, int load_c, int relu) {
    float r = sum + bias;
    r = load_c ? *c + r : r;
    return relu && !(r > 0.0f) ? 0.0f : r;
}

/* ---- the micro-kernel ---------------------------------------------------- */
/* c(mr,nr) (+)= a(MR,kc) . b(kc,NR) (+ bias(nr)); c has row stride ldc.
 * a[i][p] is at a[i * ars + p * aks]: straight from op(A)'s storage, or from
 * a packed edge panel (ars = 1, aks = MR); b[p][j] is at b[p * bks + j]: a
 * packed panel (bks = NR) or, when op(B) is stored (K,N), a full panel where
 * it lies (bks = its row stride). load_c adds the existing
 * C; mr <= MR, nr <= NR. */
#if GNU_VECTORS
static void micro_kernel(int kc, const float *restrict a, size_t ars, size_t aks,
                         const float *restrict b, size_t bks, float *restrict c, int ldc,
                         int mr, int nr,
                         int load_c, const float *restrict bias, int relu) {
    vec acc[MR][2];
#pragma GCC unroll 32
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = (vec){0};
    for (int p = 0; p < kc; p++) {
        vec b0 = vload(b + p * bks), b1 = vload(b + p * bks + VEC);
#pragma GCC unroll 32
        for (int i = 0; i < MR; i++) {
            /* broadcast; written x - 0, not 0 + x: x - 0 == x for every float
             * (0 + -0 is +0), so the compiler can load the scalar straight into
             * all lanes (vbroadcastss from memory: a load, not a shuffle that
             * competes with the FMAs; 5-10 % faster here) */
            vec ai = a[i * ars + p * aks] - (vec){0};
            acc[i][0] += ai * b0;
            acc[i][1] += ai * b1;
        }
    }
    if (mr == MR && nr == NR) { /* full tile: vector stores */
        vec bias0 = {0}, bias1 = {0};
        if (bias) bias0 = vload(bias), bias1 = vload(bias + VEC);
#pragma GCC unroll 32
        for (int i = 0; i < MR; i++) {
            float *cr = c + (size_t)i * ldc;
            vec r0 = acc[i][0] + bias0, r1 = acc[i][1] + bias1;
            if (load_c) r0 += vload(cr), r1 += vload(cr + VEC);
            if (relu) { /* (r > 0) is all-ones or zero per lane: a branch-free max */
                r0 = (vec)((vec_int)(r0 > 0) & (vec_int)r0);
                r1 = (vec)((vec_int)(r1 > 0) & (vec_int)r1);
            }
            vstore(cr, r0);
            vstore(cr + VEC, r1);
        }
        return;
    }
    float tile[MR][NR]; /* edge tile: spill, then store the valid part */
    memcpy(tile, acc, sizeof tile);
    for (int i = 0; i < mr; i++) {
        float *cr = c + (size_t)i * ldc;
        for (int j = 0; j < nr; j++)
            cr[j] = finish(tile[i][j], bias ? bias[j] : 0.0f, cr + j, load_c, relu);
    }
}
#else /* portable plain C: the same arithmetic, left to the auto-vectorizer */
static void micro_kernel(int kc, const float *restrict a, size_t ars, size_t aks,
                         const float *restrict b, size_t bks, float *restrict c, int ldc,
                         int mr, int nr,
                         int load_c, const float *restrict bias, int relu) {
    float acc[MR][NR] = {{0}};
    for (int p = 0; p < kc; p++)
        for (int i = 0; i < MR; i++)
            for (int j = 0; j < NR; j++) acc[i][j] += a[i * ars + p * aks] * b[p * bks + j];
    for (int i = 0; i < mr; i++) {
        float *cr = c + (size_t)i * ldc;
        for (int j = 0; j < nr; j++)
            cr[j] = finish(acc[i][j], bias ? bias[j] : 0.0f, cr + j, load_c, relu);
    }
}
#endif

/* ---- a tile of C^T ------------------------------------------------------- */
/* c[j * ldc + i] (+)= tile[i][j] (+ bias[i]) for i < mr, j < nr: a tile of the
 * transposed product C^T = op(B) . op(A)^T goes back into C (see pynn_gemm);
 * tile is MR x NR, and the bias runs along its rows. */
static void store_transposed(const float *tile, float *c, int ldc, int mr, int nr, int load_c,
                             const float *bias, int relu) {
    float t[NR][MR]; /* tile^T: row j holds the MR values bound for row j of c */
    int j0 = 0;
#if HAVE_TRANSPOSE8 && MR == 8
    for (; j0 + 8 <= NR; j0 += 8) transpose8x8(tile + j0, NR, &t[j0][0], MR);
#endif
    for (; j0 < NR; j0++)
        for (int i = 0; i < MR; i++) t[j0][i] = tile[i * NR + j0];
    for (int j = 0; j < nr; j++) {
        float *cr = c + (size_t)j * ldc;
        for (int i = 0; i < mr; i++)
            cr[i] = finish(t[j][i], bias ? bias[i] : 0.0f, cr + i, load_c, relu);
    }
}

/* ---- the packing workspace ----------------------------------------------- */
/* One slot per thread, for a KC-deep panel of B and a KC-deep partial panel
 * of A: threads never wait for each other. Grown when the thread count grows,
 * then kept: no GEMM allocates after the first. Not thread-safe across
 * concurrent callers (pynn calls it from one Python thread). */
#define B_SLOT ((size_t)NR * KC)
#define A_SLOT ((size_t)MR * KC)
static float *work = NULL;
static int work_threads = 0;

void pynn_gemm_reserve(void) {
    const int n = omp_get_max_threads();
    if (n <= work_threads) return;
    free(work);
    work = NULL;
    work_threads = 0;
    void *p = NULL;
    if (posix_memalign(&p, 64, (B_SLOT + A_SLOT) * (size_t)n * sizeof(float)) != 0)
        abort(); /* out of memory for a few hundred KB: nothing sensible left */
    work = p;
    work_threads = n;
}

const char *pynn_gemm_kernel(void) {
    static char text[80];
    snprintf(text, sizeof text, "%s (%s), %dx%d tiles", GNU_VECTORS ? "GNU C vectors" : "plain C",
             PYNN_ISA, MR, NR);
    return text;
}

void pynn_gemm_release(void) {
    free(work);
    work = NULL;
    work_threads = 0;
}

/* ---- the driver ---------------------------------------------------------- */

/* [lo, hi): thread t's contiguous share of n items among nth threads */
static void share(int n, int t, int nth, int *lo, int *hi) {
    *lo = (int)((int64_t)n * t / nth);
    *hi = (int)((int64_t)n * (t + 1) / nth);
}

/* share tid of the product cut in nth shares, packed in the slots of thread slot;
 * the stored rows of A, B and C lie lda, ldb and ldc floats apart */
static void gemm_share(int ta, int tb, int M, int N, int K, const float *A, size_t lda,
                       const float *Bm, size_t ldb, const float *bias, float *Cm, size_t ldc,
                       int flags, int tid, int nth, int slot) {
    const int accumulate = flags & PYNN_GEMM_ACCUMULATE, relu = flags & PYNN_GEMM_RELU;
    if (M <= 0 || N <= 0) return;
    if (K <= 0) { /* empty sum: C = bias (or C += bias), this thread's rows */
        int lo, hi;
        share(M, tid, nth, &lo, &hi);
        for (int i = lo; i < hi; i++)
            for (int j = 0; j < N; j++) {
                float *c = Cm + (size_t)i * ldc + j;
                *c = finish(0.0f, bias ? bias[j] : 0.0f, c, accumulate, relu);
            }
        return;
    }
    /* NT with fewer rows than columns (a forward pass: the weight B is larger
     * than the batch A): compute C^T = B . A^T instead. The operand transposed
     * while packing is then the smaller one, at the price of writing each tile
     * back transposed; the sums, and so the results, are the same bits. */
    const int swap = !ta && tb && M < N;
    if (swap) {
        const float *t = A;
        A = Bm, Bm = t;
        const int m = M;
        M = N, N = m;
        const size_t ld = lda;
        lda = ldb, ldb = ld;
    }
    const int n_panels = (N + NR - 1) / NR, m_panels = (M + MR - 1) / MR;
    float *const Bp = work + (size_t)slot * (B_SLOT + A_SLOT), *const Ap = Bp + B_SLOT;
    /* a full MR-row panel of op(A) is read where it lies: element (i, p) of
     * the panel starting at row i0, in the K block from pc, is
     * A[(i0 + i) * lda + pc + p], or A[(pc + p) * lda + i0 + i] when ta */
    const size_t ars = ta ? 1 : lda, aks = ta ? lda : 1;
    /* an equal share of the MR x NR tiles, column panel by column panel,
     * so each B panel is packed once by each thread that needs it */
    int t_lo, t_hi;
    share(n_panels * m_panels, tid, nth, &t_lo, &t_hi);
    for (int pc = 0; pc < K; pc += KC) {
        const int kc = K - pc < KC ? K - pc : KC;
        /* A full panel of a B stored (K,N) is already rows of NR floats and
         * can be read where it lies, saving the copy: worth it when the panel
         * serves few tiles (small M), and not when the row stride is a
         * multiple of 4 KB (the rows then share a few cache sets and evict
         * each other). A grid over N = 128..2048, K = 64..1024, M = 64 and
         * 256 (2026-11-26) had set the rule; it then also read panels of
         * kc <= 256 in place for any M. On the Intel Xeon of
         * docs/performance.md, packing those was faster: M = 256, K = 64..256
         * 0.69-1.03x the time, the dense layer's backward products
         * (128x3136x256 NN, 256x3136x128 TN) 0.86-0.92x (AVX2 build
         * 0.86-0.96x). */
        const int in_place = !tb && ldb % 1024 != 0 && m_panels <= 8;
        int panel = -1;
        const float *b = Bp;
        size_t bks = NR;
        for (int t = t_lo; t < t_hi; t++) {
            const int jp = t / m_panels, ip = t % m_panels;
            const int i0 = ip * MR, j0 = jp * NR;
            const int mr = M - i0 < MR ? M - i0 : MR;
            const int nr = N - j0 < NR ? N - j0 : NR;
            if (jp != panel) {
                panel = jp;
                if (in_place && nr == NR) {
                    b = Bm + (size_t)pc * ldb + j0, bks = ldb;
                } else { /* transpose, copy, or zero-pad the last partial panel */
                    pack_b_panel(Bp, Bm, tb, N, ldb, j0, pc, kc);
                    b = Bp, bks = NR;
                }
            }
            const float *a = A + (ta ? (size_t)pc * lda + i0 : (size_t)i0 * lda + pc);
            size_t rs = ars, ks = aks;
            if (mr < MR) { /* rows past M do not exist: pack, zero-padded */
                pack_a_panel(Ap, A, ta, M, lda, i0, pc, kc);
                a = Ap, rs = 1, ks = MR;
            }
            const int load_c = accumulate || pc > 0, last = pc + kc == K;
            if (swap) { /* C^T tile (i, j) is C (j, i); the bias runs along i */
                float tile[MR * NR];
                micro_kernel(kc, a, rs, ks, b, bks, tile, NR, MR, NR, 0, NULL, 0);
                store_transposed(tile, Cm + (size_t)j0 * ldc + i0, ldc, mr, nr, load_c,
                                 (pc == 0 && bias) ? bias + i0 : NULL, relu && last);
            } else {
                micro_kernel(kc, a, rs, ks, b, bks, Cm + (size_t)i0 * ldc + j0, ldc, mr, nr,
                             load_c, (pc == 0 && bias) ? bias + j0 : NULL, relu && last);
            }
        }
    }
}

/* the row strides of densely stored operands */
#define LDA ((size_t)(ta ? M : K))
#define LDB ((size_t)(tb ? K : N))

void pynn_gemm_team(int ta, int tb, int M, int N, int K, const float *A, const float *Bm,
                    const float *bias, float *Cm, int flags) {
    const int tid = omp_get_thread_num();
    gemm_share(ta, tb, M, N, K, A, LDA, Bm, LDB, bias, Cm, (size_t)N, flags, tid,
               omp_get_num_threads(), tid);
}

void pynn_gemm_solo(int ta, int tb, int M, int N, int K, const float *A, const float *Bm,
                    const float *bias, float *Cm, int flags) {
    gemm_share(ta, tb, M, N, K, A, LDA, Bm, LDB, bias, Cm, (size_t)N, flags, 0, 1,
               omp_get_thread_num());
}

void pynn_gemm_solo_strided(int ta, int tb, int M, int N, int K, const float *A, size_t lda,
                            const float *Bm, size_t ldb, float *Cm, size_t ldc, int flags) {
    gemm_share(ta, tb, M, N, K, A, lda, Bm, ldb, NULL, Cm, ldc, flags, 0, 1,
               omp_get_thread_num());
}

void pynn_gemm(int ta, int tb, int M, int N, int K, const float *A, const float *Bm,
               const float *bias, float *Cm, int flags) {
    pynn_gemm_reserve();
#pragma omp parallel if (2.0 * M * N * K >= PAR_MIN_FLOPS)
    pynn_gemm_team(ta, tb, M, N, K, A, Bm, bias, Cm, flags);
}
