/* dropout.c - inverted dropout (training only): each value is zeroed with
 * probability p and the others are scaled by 1/(1-p), so that nothing
 * changes on average. out and inp are (N,).
 *
 * The plain version it must equal: tests/reference.py dropout_keep.
 */
#include "internal.h"

/* keep value i? Draw i of the seed's stream (pynn_draw: a different,
 * well-mixed 64-bit number for every (seed, i)); its top 32 bits are
 * compared with p * 2^32. No state: any thread, any order. */
static inline int dropout_keep(uint64_t seed, int64_t i, uint32_t threshold) {
    return (uint32_t)(pynn_draw(seed, i) >> 32) >= threshold;
}

void dropout_forward(float *out, const float *inp, float p, uint64_t seed, int64_t N) {
    /* out = inp * mask / (1 - p), mask[i] = 1 with probability 1 - p */
    /* p * 2^32, at most 2^32 - 1 (a p that rounds to 1.0f would overflow the
     * conversion; Python refuses p >= 1 already) */
    const double t = (double)p * 4294967296.0;
    const uint32_t threshold = t < 4294967295.0 ? (uint32_t)t : 4294967295u;
    const float scale = 1.0f / (1.0f - p);
#pragma omp parallel for schedule(static) if (N >= PAR_MIN_AWAKE)
    for (int64_t i = 0; i < N; i++)
        out[i] = dropout_keep(seed, i, threshold) ? inp[i] * scale : 0.0f;
}

void dropout_backward(float *dinp, const float *dout, float p, uint64_t seed, int64_t N) {
    /* dropout is linear: its gradient is the same map, dinp = dout * mask / (1 - p),
     * and the same seed gives the same mask */
    dropout_forward(dinp, dout, p, seed, N);
}
