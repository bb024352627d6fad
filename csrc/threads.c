/* threads.c - how many threads the kernels use, and the kernels' scratch buffers.
 *
 * Every parallel region in pynn splits OUTPUT elements among the threads (a
 * static `omp for`, or a GEMM's share of the tiles), never a sum: so every
 * result is computed by the same sequence of floating-point operations
 * whatever the thread count. */
#include <stdio.h>
#include <stdlib.h>

#include "pynn.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#define PYNN_MAX_DEFAULT_THREADS 16 /* the course server is shared */

void pynn_set_threads(int n) {
#ifdef _OPENMP
    if (n <= 0) {
        n = omp_get_num_procs();
        if (n > PYNN_MAX_DEFAULT_THREADS) n = PYNN_MAX_DEFAULT_THREADS;
    }
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

int pynn_get_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int pynn_have_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

const char *pynn_compiler(void) {
#if defined(__clang__)
    return "clang " __clang_version__;
#elif defined(__GNUC__)
    return "gcc " __VERSION__;
#else
    return "an unknown C compiler";
#endif
}

/* ---- scratch buffers -------------------------------------------------------- */
/* One growing buffer per slot: a kernel asks for what it needs (outside any
 * parallel region) and gets a buffer at least that large, 64-byte aligned.
 * It is reallocated only when a larger one is asked for: the first training
 * step, or the first prediction batch, and never in the steady state. */
static float *scratch[PYNN_SCRATCH_SLOTS];
static size_t scratch_size[PYNN_SCRATCH_SLOTS];

float *pynn_scratch(int slot, size_t n) {
    if (n <= scratch_size[slot]) return scratch[slot];
    free(scratch[slot]);
    scratch[slot] = NULL;
    scratch_size[slot] = 0;
    void *p = NULL;
    if (posix_memalign(&p, 64, (n ? n : 1) * sizeof(float)) != 0) {
        fprintf(stderr, "error: out of memory for a %zu MB work buffer\n",
                n * sizeof(float) >> 20);
        abort();
    }
    scratch[slot] = p;
    scratch_size[slot] = n;
    return scratch[slot];
}

void pynn_scratch_release(void) {
    for (int s = 0; s < PYNN_SCRATCH_SLOTS; s++) {
        free(scratch[s]);
        scratch[s] = NULL;
        scratch_size[s] = 0;
    }
}
