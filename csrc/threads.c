/* threads.c - how many threads the kernels use.
 *
 * Every parallel region in pynn splits OUTPUT elements among the threads (a
 * static `omp for`, or a GEMM's share of the tiles), never a sum: so every
 * result is computed by the same sequence of floating-point operations
 * whatever the thread count. */
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
