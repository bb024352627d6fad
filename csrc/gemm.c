/* gemm.c - C = op(A) . op(B) (+ bias), the one matrix product pynn needs.
 *
 * The three layouts of a dense layer all come through here:
 *   forward   out(B,OC)   = inp(B,C) . weight(OC,C)^T   ta=0 tb=1  ("NT")
 *   backward  dinp(B,C)   = dout(B,OC) . weight(OC,C)   ta=0 tb=0  ("NN")
 *             dweight(OC,C) = dout(B,OC)^T . inp(B,C)   ta=1 tb=0  ("TN")
 *
 * The method is the one of BLIS/GotoBLAS, kept small:
 *   for each block of KC rows of op(B)          (pc loop)
 *     pack op(B)[pc:pc+KC, :] into panels NR columns wide   -> Bp (L1-sized panels)
 *     for each block of MC rows of op(A)        (ic loop)
 *       pack op(A)[ic:ic+MC, pc:pc+KC] into panels MR rows tall -> Ap (L2-sized)
 *       for every (NR panel, MR panel) pair: the micro-kernel adds an
 *       MR x NR tile of C, held in registers for the whole KC loop.
 * Packing makes every layout look the same to the micro-kernel, so there is one
 * kernel and no explicit transpose. Panels are zero-padded at the edges; the
 * kernel computes full tiles and stores only the valid part.
 *
 * Threads split the packing and the tiles; K is never split, so every element
 * of C sees the same sequence of operations whatever the thread count.
 */
#include <stdlib.h>
#include <string.h>

#include "pynn.h"

/* VEC floats fill one SIMD register; chosen by what the compiler targets. */
#if defined(__AVX512F__)
#define VEC 16
#elif defined(__AVX__)
#define VEC 8
#else
#define VEC 4
#endif
#define NR (2 * VEC) /* tile width: two registers */
#ifndef MR
#define MR 8 /* tile height: MR x 2 accumulator registers */
#endif
#ifndef KC
#define KC 256 /* a B micro-panel KC x NR stays in L1 */
#endif
#ifndef MC
#define MC 128 /* an A block MC x KC stays in L2 */
#endif
/* below this many flops a parallel region costs more than it saves */
#define PARALLEL_MIN_FLOPS 50000.0

#ifdef _OPENMP
#include <omp.h>
#endif

/* ---- packing ------------------------------------------------------------- */

/* op(A) rows [i0, i0+mc) x cols [p0, p0+kc) -> MR-row panels: dst[panel][p][i] */
static void pack_a_panel(float *dst, const float *A, int ta, int M, int K, int i0,
                         int p0, int kc) {
    for (int p = 0; p < kc; p++) {
        for (int i = 0; i < MR; i++) {
            int row = i0 + i;
            float v = 0.0f;
            if (row < M) v = ta ? A[(size_t)(p0 + p) * M + row] : A[(size_t)row * K + p0 + p];
            dst[p * MR + i] = v;
        }
    }
}

/* op(B) rows [p0, p0+kc) x cols [j0, j0+NR) -> dst[p][j] */
static void pack_b_panel(float *dst, const float *Bm, int tb, int N, int K, int j0,
                         int p0, int kc) {
    for (int p = 0; p < kc; p++) {
        for (int j = 0; j < NR; j++) {
            int col = j0 + j;
            float v = 0.0f;
            if (col < N) v = tb ? Bm[(size_t)col * K + p0 + p] : Bm[(size_t)(p0 + p) * N + col];
            dst[p * NR + j] = v;
        }
    }
}

/* ---- the micro-kernel ---------------------------------------------------- */
/* c(mr,nr) (+)= a(kc,MR)^T . b(kc,NR) (+ bias(nr)); c has row stride ldc.
 * a and b are packed panels; load_c adds the existing C; mr <= MR, nr <= NR. */
#if defined(__GNUC__)
typedef float vfloat __attribute__((vector_size(VEC * sizeof(float))));

static inline vfloat loadu(const float *p) {
    vfloat v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void storeu(float *p, vfloat v) { memcpy(p, &v, sizeof v); }

static void micro_kernel(int kc, const float *restrict a, const float *restrict b,
                         float *restrict c, int ldc, int mr, int nr, int load_c,
                         const float *restrict bias) {
    vfloat acc[MR][2];
#pragma GCC unroll 32
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = (vfloat){0};
    for (int p = 0; p < kc; p++) {
        vfloat b0 = loadu(b + p * NR), b1 = loadu(b + p * NR + VEC);
#pragma GCC unroll 32
        for (int i = 0; i < MR; i++) {
            vfloat ai = (vfloat){0} + a[p * MR + i]; /* broadcast */
            acc[i][0] += ai * b0;
            acc[i][1] += ai * b1;
        }
    }
    if (mr == MR && nr == NR) { /* full tile: vector stores */
        vfloat bias0 = {0}, bias1 = {0};
        if (bias) bias0 = loadu(bias), bias1 = loadu(bias + VEC);
#pragma GCC unroll 32
        for (int i = 0; i < MR; i++) {
            float *cr = c + (size_t)i * ldc;
            vfloat r0 = acc[i][0] + bias0, r1 = acc[i][1] + bias1;
            if (load_c) r0 += loadu(cr), r1 += loadu(cr + VEC);
            storeu(cr, r0);
            storeu(cr + VEC, r1);
        }
        return;
    }
    float tile[MR][NR]; /* edge tile: spill, then store the valid part */
    memcpy(tile, acc, sizeof tile);
    for (int i = 0; i < mr; i++) {
        float *cr = c + (size_t)i * ldc;
        for (int j = 0; j < nr; j++) {
            float r = tile[i][j] + (bias ? bias[j] : 0.0f);
            cr[j] = load_c ? cr[j] + r : r;
        }
    }
}
#else /* portable plain C: the same arithmetic, left to the auto-vectorizer */
static void micro_kernel(int kc, const float *restrict a, const float *restrict b,
                         float *restrict c, int ldc, int mr, int nr, int load_c,
                         const float *restrict bias) {
    float acc[MR][NR] = {{0}};
    for (int p = 0; p < kc; p++)
        for (int i = 0; i < MR; i++)
            for (int j = 0; j < NR; j++) acc[i][j] += a[p * MR + i] * b[p * NR + j];
    for (int i = 0; i < mr; i++) {
        float *cr = c + (size_t)i * ldc;
        for (int j = 0; j < nr; j++) {
            float r = acc[i][j] + (bias ? bias[j] : 0.0f);
            cr[j] = load_c ? cr[j] + r : r;
        }
    }
}
#endif

/* ---- the packing workspace ----------------------------------------------- */
/* Grown on demand and kept: after the first step of a given shape, no GEMM
 * allocates. Not thread-safe across concurrent callers (pynn calls it from one
 * Python thread; the kernel's own threads share one workspace). */
static float *work_a = NULL, *work_b = NULL;
static size_t work_a_size = 0, work_b_size = 0;

static int ensure(float **buf, size_t *size, size_t need) {
    if (need <= *size) return 1;
    free(*buf);
    *buf = NULL;
    *size = 0;
    void *p = NULL;
    if (posix_memalign(&p, 64, need * sizeof(float)) != 0) return 0;
    *buf = p;
    *size = need;
    return 1;
}

void pynn_gemm_release(void) {
    free(work_a);
    free(work_b);
    work_a = work_b = NULL;
    work_a_size = work_b_size = 0;
}

/* ---- the driver ---------------------------------------------------------- */

void pynn_gemm(int ta, int tb, int M, int N, int K, const float *A, const float *Bm,
               const float *bias, float *Cm, int accumulate) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) { /* empty sum: C = bias (or C += bias) */
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                float r = bias ? bias[j] : 0.0f;
                Cm[(size_t)i * N + j] = accumulate ? Cm[(size_t)i * N + j] + r : r;
            }
        return;
    }
    const int n_panels = (N + NR - 1) / NR;
    const int kc_max = K < KC ? K : KC;
    const int mc_max = M < MC ? ((M + MR - 1) / MR) * MR : MC;
    if (!ensure(&work_b, &work_b_size, (size_t)n_panels * NR * kc_max) ||
        !ensure(&work_a, &work_a_size, (size_t)mc_max * kc_max)) {
        abort(); /* out of memory for a few hundred KB: nothing sensible left */
    }
    float *Bp = work_b, *Ap = work_a;
    const int parallel = 2.0 * M * N * K >= PARALLEL_MIN_FLOPS;
    (void)parallel;

#pragma omp parallel if (parallel)
    for (int pc = 0; pc < K; pc += KC) {
        const int kc = K - pc < KC ? K - pc : KC;
#pragma omp for schedule(static)
        for (int jp = 0; jp < n_panels; jp++)
            pack_b_panel(Bp + (size_t)jp * NR * kc, Bm, tb, N, K, jp * NR, pc, kc);
        for (int ic = 0; ic < M; ic += MC) {
            const int mc = M - ic < MC ? M - ic : MC;
            const int m_panels = (mc + MR - 1) / MR;
#pragma omp for schedule(static)
            for (int ip = 0; ip < m_panels; ip++)
                pack_a_panel(Ap + (size_t)ip * MR * kc, A, ta, M, K, ic + ip * MR, pc, kc);
            /* tiles, panel-major: a thread's contiguous share reuses B panels */
#pragma omp for schedule(static)
            for (int t = 0; t < n_panels * m_panels; t++) {
                const int jp = t / m_panels, ip = t % m_panels;
                const int i0 = ic + ip * MR, j0 = jp * NR;
                const int mr = M - i0 < MR ? M - i0 : MR;
                const int nr = N - j0 < NR ? N - j0 : NR;
                micro_kernel(kc, Ap + (size_t)ip * MR * kc, Bp + (size_t)jp * NR * kc,
                             Cm + (size_t)i0 * N + j0, N, mr, nr, accumulate || pc > 0,
                             (pc == 0 && bias) ? bias + j0 : NULL);
            }
        }
    }
}
