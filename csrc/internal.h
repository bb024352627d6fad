/* internal.h - what the kernel files share with each other, and nothing that
 * Python calls (that is pynn.h; cffi never reads this file).
 *
 * Each fact here is written once: the OpenMP stand-ins of a one-thread
 * build, the sizes below which a loop stays on one thread, the SIMD vector
 * the hand-vectorized loops compute in, the hash behind every random draw,
 * the max-pool's tie rule, the named work buffers, and the pieces of the
 * GEMM and of batch norm that other files build on.
 *
 * Names: everything declared here starts with pynn_ (or is a macro in
 * capitals); static helpers inside a file have plain names.
 */
#ifndef PYNN_INTERNAL_H
#define PYNN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "pynn.h"

/* ---- threads: OpenMP, or one thread --------------------------------------- */
/* A build without OpenMP (Apple's clang, PYNN_OPENMP=0) compiles the same
 * code: the "#pragma omp" lines are ignored and these stand in for the
 * runtime's calls. */
#ifdef _OPENMP
#include <omp.h>
#else
static inline int omp_get_thread_num(void) { return 0; }
static inline int omp_get_num_threads(void) { return 1; }
static inline int omp_get_max_threads(void) { return 1; }
#endif

/* Below these sizes a parallel region costs more than it saves: element-wise
 * loops of fewer values, products of fewer flops, stay on one thread. (Only
 * the speed depends on them: by the determinism rule of pynn.h, the results
 * are the same bits either way.) */
#define PAR_MIN 65536           /* values of an element-wise loop */
#define PAR_MIN_AWAKE 8192      /* the same, inside a layer call: the threads are awake */
#define PAR_MIN_FLOPS 50000.0   /* flops of a product */

/* ---- one rounding or two: fused multiply-adds written out ------------------ */
/* -ffp-contract=fast lets the compiler turn a * b + c into one FMA (one
 * rounding) wherever the target has the instruction. In an expression with
 * two products, or in a select, which product it fuses is the compiler's
 * choice, and gcc, clang and gcc's AVX2 and AVX-512 loops have chosen
 * differently. Where that matters these two say it: muladd(a, b, c) is
 * a * b + c rounded once (as the plain expression on a target without FMA);
 * product(a, b) is a * b rounded on its own, never fused with a later sum.
 *
 * gcc: product is fma(a, b, -0.0f), which it keeps as it is (adding -0.0f
 * leaves every product as it is, +0 and -0 included). clang sees through
 * that (it makes a plain product of it, and fuses that), and its
 * -ffp-contract=fast ignores a "#pragma clang fp contract(off)". So a clang
 * build gets -ffp-contract=on (pyproject_build/build_kernels.py), the line
 * below gives every file that includes this one "fast" back, and product
 * turns it off for its one product. (clang's -ffp-contract=fast-honor-pragmas
 * would say the same in one flag, but Debian's clang 14 does not take it.) */
#if defined(__clang__)
#pragma clang fp contract(fast)
#endif
static inline float muladd(float a, float b, float c) {
#if defined(__FMA__) || defined(__aarch64__)
    return __builtin_fmaf(a, b, c);
#else
    return a * b + c;
#endif
}
static inline float product(float a, float b) {
#if defined(__clang__)
#pragma clang fp contract(off)
    return a * b;
#elif defined(__FMA__) || defined(__aarch64__)
    return __builtin_fmaf(a, b, -0.0f);
#else
    return a * b;
#endif
}

/* ---- SIMD vectors ----------------------------------------------------------- */
/* VEC floats fill one SIMD register of the target (PYNN_MARCH): 16 with
 * AVX-512, 8 with AVX or AVX2, 4 otherwise (SSE2, NEON). The hand-vectorized
 * loops (the GEMM's micro-kernel, the one-channel convolution) compute in
 * `vec`s: GNU C vectors where the compiler has them, or a plain-C stand-in
 * with the same operations (PYNN_PLAIN_C builds and tests it). Each lane's
 * arithmetic is the same in both, and the same for every VEC (among targets
 * with FMA; without it a product is rounded before the add: docs/design.md,
 * "Determinism"). */
#if defined(__AVX512F__)
#define VEC 16
#elif defined(__AVX__)
#define VEC 8
#else
#define VEC 4
#endif

#if defined(__GNUC__) && !defined(PYNN_PLAIN_C)
#define GNU_VECTORS 1
typedef float vec __attribute__((vector_size(VEC * sizeof(float))));
typedef int32_t vec_int __attribute__((vector_size(VEC * sizeof(float))));
static inline vec vzero(void) { return (vec){0}; }
static inline vec vadd(vec a, vec b) { return a + b; }
static inline vec vfma(vec acc, float a, vec w) { return acc + a * w; } /* acc + a w */
static inline float vget(vec v, int lane) { return v[lane]; }
#else
#define GNU_VECTORS 0
typedef struct { float f[VEC]; } vec;
static inline vec vzero(void) { vec v = {{0}}; return v; }
static inline vec vadd(vec a, vec b) {
    for (int l = 0; l < VEC; l++) a.f[l] += b.f[l];
    return a;
}
static inline vec vfma(vec acc, float a, vec w) {
    for (int l = 0; l < VEC; l++) acc.f[l] += a * w.f[l];
    return acc;
}
static inline float vget(vec v, int lane) { return v.f[lane]; }
#endif
static inline vec vload(const float *p) { vec v; memcpy(&v, p, sizeof v); return v; }
static inline void vstore(float *p, vec v) { memcpy(p, &v, sizeof v); }

/* The instruction set the compiler was told it may use (PYNN_MARCH), for
 * the build's description */
#if defined(__AVX512F__)
#define PYNN_ISA "AVX-512"
#elif defined(__AVX2__) && defined(__FMA__)
#define PYNN_ISA "AVX2+FMA"
#elif defined(__AVX__)
#define PYNN_ISA "AVX, no FMA"
#elif defined(__SSE2__)
#define PYNN_ISA "SSE2"
#elif defined(__ARM_NEON)
#define PYNN_ISA "NEON"
#else
#define PYNN_ISA "no known SIMD"
#endif

/* ---- random draws: splitmix64 ---------------------------------------------- */
/* splitmix64 (Steele, Lea, Flood 2014): z -> a well-mixed 64-bit number. Every
 * random choice in C is pynn_mix64 of (seed + i * PYNN_GOLDEN): draw i of a
 * stream needs no state, so any thread may make it, in any order. */
#define PYNN_GOLDEN 0x9E3779B97F4A7C15ull /* 2^64 / the golden ratio */
static inline uint64_t pynn_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static inline uint64_t pynn_draw(uint64_t seed, int64_t i) {
    return pynn_mix64(seed + (uint64_t)i * PYNN_GOLDEN);
}

/* ---- the max-pool's tie rule ------------------------------------------------ */
/* The index 0..3 of the first maximum of a 2x2 window read (0,0), (0,1),
 * (1,0), (1,1): that one takes the value forward and the gradient backward,
 * in pool.c and in fused.c alike. Written as selects, not branches, so that
 * a loop over channels vectorizes. */
static inline int pynn_window_argmax(float v0, float v1, float v2, float v3) {
    const int s1 = v1 > v0;
    const float m1 = s1 ? v1 : v0;
    const int s2 = v2 > m1;
    const float m2 = s2 ? v2 : m1;
    return v3 > m2 ? 3 : s2 ? 2 : s1;
}
/* the value of that first maximum, by the same selects without the index
 * (what the forward passes need: with the index, then a pick of its value,
 * clang left their loops scalar, and the fused tails' forward took 4.6-4.9x
 * gcc's time on one thread, scripts/bench.py --only layers) */
static inline float pynn_window_max(float v0, float v1, float v2, float v3) {
    const float m1 = v1 > v0 ? v1 : v0;
    const float m2 = v2 > m1 ? v2 : m1;
    return v3 > m2 ? v3 : m2;
}

/* ---- work buffers (runtime.c) ------------------------------------------------ */
/* One growing buffer per role: a kernel asks for what it needs (outside any
 * parallel region) and gets at least that much, 64-byte aligned. A buffer is
 * reallocated only when a larger one is asked for (the first training step,
 * the first prediction batch), never in the steady state. */
enum {
    PYNN_WORK_IM2COL,          /* conv.c: each thread's chunk of im2col rows */
    PYNN_WORK_PADDED_IMAGES,   /* conv.c: each thread's zero-bordered one-channel image
                                * (and the scratch its pynn_direct_dweight caller asks for) */
    PYNN_WORK_TAP_WEIGHTS,     /* conv.c: a one-channel conv's weights, taps first */
    PYNN_WORK_FLIPPED_WEIGHTS, /* conv.c: the kernel turned by 180 degrees, for dinp */
    PYNN_WORK_PARTIAL_DWEIGHT, /* conv.c: partial sums of a weight gradient, one per slot */
    PYNN_WORK_BLOCK_SUMS,      /* norm.c, fused.c: per-block column sums */
    PYNN_WORK_MOMENTS,         /* norm.c: per-channel mean and variance, in double */
    PYNN_WORK_COEFFICIENTS,    /* norm.c, fused.c: per-channel scale, shift, ... */
    PYNN_WORK_WINOGRAD,        /* winograd.c: each thread's transformed tiles */
    PYNN_WORK_WINOGRAD_WEIGHTS,/* winograd.c: the transformed kernel (or its gradient) */
    PYNN_WORK_RECOMPUTED,      /* norm.c, fused.c: each thread's recomputed conv outputs */
    PYNN_WORK_BUFFERS
};
float *pynn_work(int role, size_t n);
void pynn_work_release(void);

/* ---- GEMM pieces (gemm.c) ----------------------------------------------------- */
/* pynn_gemm's product (pynn.h), computed by a team: every thread of an
 * enclosing parallel region calls it with the same arguments and computes
 * its own share of C, without waiting for the others (a caller that reads C
 * next needs a barrier first). Outside a parallel region it computes all of C. */
void pynn_gemm_team(int ta, int tb, int M, int N, int K, const float *A, const float *Bm,
                    const float *bias, float *Cm, int flags);
/* The same product, all of it on the calling thread. */
void pynn_gemm_solo(int ta, int tb, int M, int N, int K, const float *A, const float *Bm,
                    const float *bias, float *Cm, int flags);
/* pynn_gemm_solo on operands whose stored rows lie lda, ldb, ldc floats
 * apart (a matrix inside a larger one; the plain call's are ta ? M : K,
 * tb ? K : N and N), without bias: the same sums in the same order, so the
 * same bits as the product of dense copies. */
void pynn_gemm_solo_strided(int ta, int tb, int M, int N, int K, const float *A, size_t lda,
                            const float *Bm, size_t ldb, float *Cm, size_t ldc, int flags);
/* The packing workspace of every thread, grown if needed: the opener of a
 * parallel region that calls pynn_gemm_team or _solo calls it first. */
void pynn_gemm_reserve(void);
void pynn_gemm_release(void);

/* ---- batch-norm pieces (norm.c), shared with fused.c ---------------------------- */
/* The batch (training) or running (evaluation) statistics of inp (N,C) as
 * batchnorm_forward computes them: mean, invstd (C,) written, running ones
 * updated while training. */
void pynn_bn_statistics(float *mean, float *invstd, float *running_mean, float *running_var,
                        const float *inp, int64_t N, int C, float momentum, float eps,
                        int training);
/* The same statistics of a tensor that is not stored: its rows come in blocks
 * of PYNN_BN_BLOCK (the last one shorter) from rows_of(ctx, r0, r1, scratch),
 * which returns rows [r0, r1) (r1-r0, C), computed into scratch (`scratch`
 * floats of this thread's own) if need be. The same bits as the stored
 * tensor's: the blocks, and the order of every sum, are the same. */
#define PYNN_BN_BLOCK 256
typedef const float *(*pynn_row_block)(void *ctx, int64_t r0, int64_t r1, float *scratch);
void pynn_bn_statistics_of(float *mean, float *invstd, float *running_mean, float *running_var,
                           pynn_row_block rows_of, void *ctx, size_t scratch, int64_t N, int C,
                           float momentum, float eps, int training);
/* scale = gamma * invstd, shift = beta - mean * scale: out = scale * inp + shift */
void pynn_bn_coefficients(float *scale, float *shift, const float *mean, const float *invstd,
                          const float *gamma, const float *beta, int C);
/* From per-block sums part (nb,2,C) of dy and dy * (inp - mean): dgamma,
 * dbeta, and the coefficients of dinp = d * dy + a * inp + b. */
void pynn_bn_backward_coefficients(float *a, float *b, float *d, float *dgamma, float *dbeta,
                                   const float *part, int64_t nb, const float *mean,
                                   const float *invstd, const float *gamma, int64_t N, int C);

/* ---- the one-channel convolution's pieces (conv.c), shared with fused.c ------- */
/* The first layer's direct loops (conv.c says how), which fused.c calls to
 * recompute that layer's output instead of storing it. An image is first
 * copied into a zero-bordered pad of pynn_direct_pad_floats floats;
 * pynn_direct_weights lays weight (OC,k,k) out taps first, OCP channels a
 * tap (a work buffer, valid until the next call); pynn_direct_pixels computes
 * output pixels p0 .. p1-1 (row by row) of the padded image, (p1-p0, OC) at
 * out; and pynn_direct_dweight_image one image's weight gradient (k,k,OCP)
 * from its pad and its output gradient (H,W,OC). */
size_t pynn_direct_pad_floats(int H, int W, int k);
void pynn_direct_pad(float *pad, const float *img, int H, int W, int k);
const float *pynn_direct_weights(const float *weight, int OC, int k, int *OCP);
void pynn_direct_pixels(float *out, const float *pad, const float *wt, const float *bias, int p0,
                        int p1, int W, int OC, int OCP, int k);
void pynn_direct_dweight_image(float *dw, const float *pad, const float *dout, int H, int W,
                               int OC, int OCP, int k);
/* The output gradient (H,W,OC) of image b, given its pad: a slice of the
 * batch's (conv.c), or computed on the spot into scratch, this thread's
 * `scratch` floats (fused.c). */
typedef const float *(*pynn_image_grad)(void *ctx, int b, const float *pad, float *scratch);
/* dweight (OC,k,k) = the sum over images b of pynn_direct_dweight_image's,
 * in a fixed order (conv.c); inp (B,H,W) */
void pynn_direct_dweight(float *dweight, pynn_image_grad grad_of, void *ctx, size_t scratch,
                         const float *inp, int B, int H, int W, int OC, int k);

/* ---- Winograd F(4x4, 3x3) convolutions, F(2, 3) edges (winograd.c), used by conv.c */
/* whether a 3x3 layer of C -> OC channels takes this road by default */
int pynn_winograd_fits(int C, int OC, int k);
/* conv2d_forward of a 3x3 kernel: out (B,H,W,OC), inp (B,H,W,C), weight (OC,3,3,C) */
void pynn_winograd_forward(float *out, const float *inp, const float *weight, const float *bias,
                           int B, int H, int W, int C, int OC);
/* conv2d_backward's dweight (OC,3,3,C) of a 3x3 kernel; dout (B,H,W,OC) */
void pynn_winograd_dweight(float *dweight, const float *dout, const float *inp, int B, int H,
                           int W, int C, int OC);

#endif /* PYNN_INTERNAL_H */
