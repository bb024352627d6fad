/* pool.c - 2x2 max-pooling, stride 2, and global average pooling, on images
 * stored NHWC (see pynn.h).
 *
 *     out[b,y,x,c] = max of inp[b, 2y+dy, 2x+dx, c] over dy, dx in {0,1}
 *     dinp[window's first maximum] = dout[b,y,x,c], 0 elsewhere
 *
 * Ties go to the first maximum in the window's reading order
 * (pynn_window_argmax, internal.h: the one rule of pool.c and fused.c). The
 * plain versions they must equal: tests/cnn_reference.py maxpool2x2_forward /
 * maxpool2x2_backward, and avgpool_global_forward / avgpool_global_backward.
 */
#include "internal.h"

void maxpool2x2_forward(float *restrict out, const float *restrict inp, int B, int H, int W,
                        int C) {
    /* out is (B,H/2,W/2,C), inp is (B,H,W,C): out[b,y,x,c] = the max of
     * inp[b, 2y+dy, 2x+dx, c] over dy, dx in {0,1}; an odd last row or column
     * of inp is left out (H/2 and W/2 round down, as in PyTorch) */
    const int OH = H / 2, OW = W / 2;
#pragma omp parallel for schedule(static) if ((int64_t)B * H * W * C >= PAR_MIN)
    for (int64_t q = 0; q < (int64_t)B * OH; q++) { /* one output row a turn */
        const int64_t b = q / OH, y = q % OH;
        const float *r0 = inp + ((size_t)b * H + 2 * y) * W * C, *r1 = r0 + (size_t)W * C;
        float *o = out + (size_t)q * OW * C;
        for (int x = 0; x < OW; x++) {
            const float *a0 = r0 + (size_t)2 * x * C, *a1 = r1 + (size_t)2 * x * C;
            for (int c = 0; c < C; c++) {
                const float v0 = a0[c], v1 = a0[C + c], v2 = a1[c], v3 = a1[C + c];
                o[(size_t)x * C + c] = pynn_window_max(v0, v1, v2, v3);
            }
        }
    }
}

void maxpool2x2_backward(float *restrict dinp, const float *restrict dout,
                         const float *restrict inp, int B, int H, int W, int C) {
    /* dinp is (B,H,W,C), written whole; dout is (B,H/2,W/2,C): each window
     * passes its gradient to its first maximum, the other three get 0 (and so
     * does an odd last row or column, which no window covers) */
    const int OH = H / 2, OW = W / 2;
    const size_t row = (size_t)W * C;
    if (OH == 0) /* a one-row image: no window, no gradient */
        for (size_t t = 0; t < (size_t)B * H * row; t++) dinp[t] = 0.0f;
#pragma omp parallel for schedule(static) if ((int64_t)B * H * W * C >= PAR_MIN)
    for (int64_t q = 0; q < (int64_t)B * OH; q++) { /* one output row a turn */
        const int64_t b = q / OH, y = q % OH;
        const size_t top = ((size_t)b * H + 2 * y) * row;
        const float *r0 = inp + top, *r1 = r0 + row, *g = dout + (size_t)q * OW * C;
        float *d0 = dinp + top, *d1 = d0 + row;
        for (int x = 0; x < OW; x++) {
            const size_t at = (size_t)2 * x * C;
            for (int c = 0; c < C; c++) {
                const int a = pynn_window_argmax(r0[at + c], r0[at + C + c], r1[at + c],
                                                 r1[at + C + c]);
                const float gv = g[(size_t)x * C + c];
                d0[at + c] = a == 0 ? gv : 0.0f;
                d0[at + C + c] = a == 1 ? gv : 0.0f;
                d1[at + c] = a == 2 ? gv : 0.0f;
                d1[at + C + c] = a == 3 ? gv : 0.0f;
            }
        }
        for (size_t t = (size_t)2 * OW * C; t < row; t++) d0[t] = d1[t] = 0.0f; /* odd column */
        if (H % 2 && y == OH - 1) /* the odd last row of this image */
            for (size_t t = 0; t < row; t++) d1[row + t] = 0.0f;
    }
}

/* ---- global average pooling -------------------------------------------------------- */

void avgpool_global_forward(float *restrict out, const float *restrict inp, int B, int HW,
                            int C) {
    /* out is (B,C), inp is (B,HW,C): out[b,c] = 1/HW sum_p inp[b,p,c], the pixels
     * summed in order */
    const float scale = HW > 0 ? 1.0f / (float)HW : 0.0f;
#pragma omp parallel for schedule(static) if ((int64_t)B * HW * C >= PAR_MIN)
    for (int b = 0; b < B; b++) {
        float *o = out + (size_t)b * C;
        for (int c = 0; c < C; c++) o[c] = 0.0f;
        for (int p = 0; p < HW; p++) {
            const float *x = inp + ((size_t)b * HW + p) * C;
            for (int c = 0; c < C; c++) o[c] += x[c];
        }
        for (int c = 0; c < C; c++) o[c] *= scale;
    }
}

void avgpool_global_backward(float *restrict dinp, const float *restrict dout, int B, int HW,
                             int C) {
    /* dinp (B,HW,C) = dout[b,c] / HW at every pixel; dout is (B,C) */
    const float scale = HW > 0 ? 1.0f / (float)HW : 0.0f;
#pragma omp parallel for schedule(static) if ((int64_t)B * HW * C >= PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int p = 0; p < HW; p++) {
            float *d = dinp + ((size_t)b * HW + p) * C;
            const float *g = dout + (size_t)b * C;
            for (int c = 0; c < C; c++) d[c] = g[c] * scale;
        }
}
