/* runtime.c - how the kernels run: the thread count, the work buffers, and
 * what built them. */
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

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

int pynn_get_threads(void) { return omp_get_max_threads(); }

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

/* ---- work buffers ----------------------------------------------------------- */
static float *work[PYNN_WORK_BUFFERS];
static size_t work_size[PYNN_WORK_BUFFERS];

float *pynn_work(int role, size_t n) {
    if (n <= work_size[role]) return work[role];
    free(work[role]);
    work[role] = NULL;
    work_size[role] = 0;
    void *p = NULL;
    if (posix_memalign(&p, 64, (n ? n : 1) * sizeof(float)) != 0) {
        fprintf(stderr, "error: out of memory for a %zu MB work buffer\n",
                n * sizeof(float) >> 20);
        abort();
    }
    work[role] = p;
    work_size[role] = n;
    return work[role];
}

void pynn_work_release(void) {
    for (int r = 0; r < PYNN_WORK_BUFFERS; r++) {
        free(work[r]);
        work[r] = NULL;
        work_size[r] = 0;
    }
}

void pynn_release_workspaces(void) {
    pynn_work_release();
    pynn_gemm_release();
}
