/* pynn.h - the C API that Python calls (pynn/ through cffi), one declaration
 * per kernel, with every array's shape. What the C files share only among
 * themselves is in internal.h.
 *
 * Conventions (as in llm.c):
 *  - every array is float32 (or int32 for labels/indices), row-major, contiguous;
 *  - B is the batch size, C the number of input channels (features), OC the
 *    number of output channels, V the number of classes;
 *  - weights are (OC, C), as in torch.nn.Linear: out = inp . weight^T + bias;
 *  - images are stored NHWC, (B,H,W,C): the C channels of a pixel lie next to
 *    each other, pixel after pixel, row after row, image after image. So B*H*W
 *    pixels of C channels are also an (N,C) matrix with N = B*H*W rows, and a
 *    convolution is a dense layer over those rows (conv.c), batch norm the same
 *    kernel after a conv or a dense layer (norm.c). One-channel images are also
 *    (B, H*W) vectors, as the CSV rows hold them. Conv weights are (OC,k,k,C);
 *  - a layer's pair is named <layer>_forward / <layer>_backward; every other
 *    function is pynn_<what it does>;
 *  - backward functions WRITE (not accumulate) parameter gradients;
 *  - no function allocates except through the work buffers (runtime.c) and
 *    the GEMM's packing workspace, both grown the first time a larger problem
 *    comes, never in the steady state.
 *
 * Determinism: no result depends on the thread count (or on the vector
 * width of the build, among builds with FMA: docs/design.md, "Determinism"). Parallel loops split OUTPUT elements among the threads, and
 * where a result is a sum over many rows (a weight gradient, batch norm's
 * statistics), the sum is cut into parts fixed by the problem size - blocks of
 * rows, chunks, images - never by the number of threads; each part is summed
 * in order, and the parts are merged in a fixed order. Any thread may compute
 * any part: the bits come out the same.
 *
 * This file is also read by the cffi builder (pyproject_build/build_kernels.py),
 * which drops the preprocessor lines, so keep every declaration on plain C.
 */
#ifndef PYNN_H
#define PYNN_H

#include <stddef.h>
#include <stdint.h>

/* ---- how the kernels run (runtime.c) -------------------------------------- */
/* Number of threads the kernels use; n <= 0 means "all cores, at most
 * PYNN_MAX_DEFAULT_THREADS" (the command line's --threads 0 leaves out the
 * cores other jobs keep busy: pynn/cpu.py). */
enum { PYNN_MAX_DEFAULT_THREADS = 16 }; /* the course server is shared */
void pynn_set_threads(int n);
int pynn_get_threads(void);
/* 1 when built with OpenMP, else 0 (then everything runs on one thread). */
int pynn_have_openmp(void);
/* The compiler that built the kernels, e.g. "gcc 12.2.0" or "clang 14.0.6" */
const char *pynn_compiler(void);
/* How the GEMM computes a tile in this build, naming its instruction set,
 * e.g. "GNU C vectors (AVX2+FMA), 6x16 tiles" (gemm.c) */
const char *pynn_gemm_kernel(void);

/* ---- CSV parsing (csv.c) ------------------------------------------------ */
/* Error codes of the parser; Python turns them into one-line messages. */
enum {
    PYNN_CSV_OK = 0,
    PYNN_CSV_EMPTY = 1,        /* no data line at all                       */
    PYNN_CSV_BAD_TOKEN = 2,    /* a value that is not a decimal number      */
    PYNN_CSV_COUNT = 3,        /* a line with another number of values      */
    PYNN_CSV_BLANK_LINE = 4,   /* an empty line inside the file             */
    PYNN_CSV_OVERFLOW = 5,     /* a number too large for float32 / int32    */
    PYNN_CSV_NOT_LABEL = 6,    /* a label that is not a non-negative integer*/
    PYNN_CSV_CHANGED = 7,      /* another number of lines than the first pass saw */
    PYNN_CSV_LONG_TOKEN = 8,   /* a token longer than 64 bytes              */
    PYNN_CSV_BAD_CALL = 9      /* negative sizes or a NULL buffer (a bug)   */
};
/* Where the parser stopped and why: line is 1-based, value is the 1-based
 * index of the offending value within its line, found is the count found. */
typedef struct {
    int code;
    int64_t line;
    int64_t value;
    int64_t found;
    int64_t token_start; /* byte offset of the offending token in the buffer */
} pynn_csv_error;
/* First pass: count data lines and the number of values on the first one.
 * buf is (n,) bytes; a UTF-8 BOM, CRLF endings, trailing spaces and a missing
 * final newline are accepted. Returns 0 or an error code (filled into err). */
int pynn_csv_shape(const char *buf, int64_t n, int64_t *rows, int64_t *cols,
                   pynn_csv_error *err);
/* Second pass: out is (rows, cols) float32, every line must hold cols values.
 * out == NULL: only check the lines (no output; for files too odd to size it). */
int pynn_csv_parse_floats(const char *buf, int64_t n, float *out, int64_t rows,
                          int64_t cols, pynn_csv_error *err);
/* Labels: one non-negative integer per line, out is (rows,) int32 (or NULL). */
int pynn_csv_parse_labels(const char *buf, int64_t n, int32_t *out, int64_t rows,
                          pynn_csv_error *err);

/* ---- data helpers (data.c) ---------------------------------------------- */
/* mean and (population) variance of all values in the rows idx (n,) of
 * x (N,C) - or of all N rows when idx is NULL - accumulated in double */
void pynn_moments(const float *x, const int32_t *idx, int64_t n, int64_t C, double *mean,
                  double *var);
/* x = x * scale + shift, in place, x is (n,) */
void pynn_scale_shift(float *x, int64_t n, float scale, float shift);
/* Fisher-Yates shuffle of idx (n,) in place, driven by splitmix64 from seed:
 * the same seed gives the same order on every machine. */
void pynn_shuffle(int32_t *idx, int64_t n, uint64_t seed);
/* out[i,:] = inp[idx[i],:]; out is (B,C), inp is (N,C), idx is (B,) in [0,N) */
void pynn_gather_rows(float *out, const float *inp, const int32_t *idx, int B, int C);
/* The augmenting gather of one-channel images, for training: out is (B,H,W),
 * inp is (N,H*W), idx is (B,) in [0,N), shift >= 0. Sample i is image idx[i],
 * mirrored left-right when flip is set and a coin says so, then moved by
 * dy, dx in [-shift, shift]; pixels moved in from outside get fill (the
 * normalized background); then, with probability erase (0: never), a random
 * rectangle of at most H/2 x W/2 pixels is set to fill (random erasing). The
 * coin, the shifts and the rectangle are hashes of (seed, i). */
void pynn_gather_augment(float *out, const float *inp, const int32_t *idx, int B, int H, int W,
                         int shift, int flip, float erase, float fill, uint64_t seed);
/* Test-time flips: out[b,y,x,c] = inp[b,y,W-1-x,c], each image (B,H,W,C)
 * mirrored left-right; out and inp do not overlap */
void pynn_flip_images(float *out, const float *inp, int B, int H, int W, int C);
/* y += a * x, both (n,) (a = 1: a plain sum) */
void pynn_axpy(float *y, float a, const float *x, int64_t n);
/* out[i] = inp[idx[i]]; out, idx are (B,) */
void pynn_gather_labels(int32_t *out, const int32_t *inp, const int32_t *idx, int B);
/* out[b] = argmax_v inp[b,v], first index on ties; inp is (B,V) */
void pynn_argmax(int32_t *out, const float *inp, int B, int V);
/* number of i with a[i] == b[i]; a, b are (n,) */
int64_t pynn_count_equal(const int32_t *a, const int32_t *b, int64_t n);
/* 1 if every x[i] is finite, else 0 */
int pynn_all_finite(const float *x, int64_t n);

/* ---- Linear (dense.c) ------------------------------------------------------ */
/* Linear: out is (B,OC), inp is (B,C), weight is (OC,C), bias is (OC,) or NULL */
void dense_forward(float *out, const float *inp, const float *weight, const float *bias,
                   int B, int C, int OC);
/* dinp is (B,C) or NULL (first layer), dweight is (OC,C), dbias is (OC,) or NULL */
void dense_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                    const float *inp, const float *weight, int B, int C, int OC);
/* Linear followed by ReLU, fused: out = max(inp . weight^T + bias, 0), the
 * ReLU applied in the GEMM's epilogue; shapes as in dense_forward. */
void dense_relu_forward(float *out, const float *inp, const float *weight, const float *bias,
                        int B, int C, int OC);
/* Its backward: dout (B,OC) is first masked IN PLACE by out > 0 (the ReLU's
 * derivative), then dense_backward; out is the forward's (B,OC) output. */
void dense_relu_backward(float *dinp, float *dweight, float *dbias, float *dout,
                         const float *out, const float *inp, const float *weight, int B, int C,
                         int OC);

/* ---- activations (activation.c), element by element, all (N,) ------------- */
/* ReLU: out = max(inp, 0) */
void relu_forward(float *out, const float *inp, int64_t N);
void relu_backward(float *dinp, const float *dout, const float *inp, int64_t N);
/* Leaky ReLU: out = inp > 0 ? inp : slope * inp */
void leaky_relu_forward(float *out, const float *inp, float slope, int64_t N);
void leaky_relu_backward(float *dinp, const float *dout, const float *inp, float slope,
                         int64_t N);
/* tanh: out = tanh(inp); backward uses out: dinp = dout * (1 - out^2) */
void tanh_forward(float *out, const float *inp, int64_t N);
void tanh_backward(float *dinp, const float *dout, const float *out, int64_t N);
/* Logistic sigmoid with steepness lambda (the lecture's sigma, its lambda):
 * out = 1 / (1 + e^(-steepness inp)), computed so that e^(...) never overflows;
 * backward uses out: dinp = dout * steepness * out * (1 - out). */
void sigmoid_forward(float *out, const float *inp, float steepness, int64_t N);
void sigmoid_backward(float *dinp, const float *dout, const float *out, float steepness,
                      int64_t N);

/* ---- the skip connection of a residual block (residual.c), all (N,) ------- */
/* out = relu(inp + fx), fx the block's body's output F(inp); backward, after
 * dsum = relu_backward(dout, out) and the body's backward of dsum to dbody:
 * dinp = dout * [out > 0] + dbody (dsum again, from dout and out) */
void residual_forward(float *out, const float *inp, const float *fx, int64_t N);
void residual_backward(float *dinp, const float *dout, const float *out, const float *dbody,
                       int64_t N);

/* ---- dropout (dropout.c) ---------------------------------------------------- */
/* Dropout (inverted), for training only: value i is kept when a hash of
 * (seed, i) falls at or above p, and then scaled by 1/(1-p); 0 <= p < 1. The
 * backward pass recomputes the same mask from the same seed. All (N,). */
void dropout_forward(float *out, const float *inp, float p, uint64_t seed, int64_t N);
void dropout_backward(float *dinp, const float *dout, float p, uint64_t seed, int64_t N);

/* ---- losses (loss.c) ---------------------------------------------------------- */
/* Softmax + cross-entropy, fused and stable (max subtracted, log-sum-exp),
 * with label smoothing eps (0 <= smoothing < 1; 0: none): the target
 * distribution is q = (1 - eps) onehot(target) + eps / V.
 * logits, probs are (B,V); targets (B,) in [0,V); losses (B,) or NULL.
 * Returns the summed loss; *correct gets the number of rows whose argmax is
 * the target (ties go to the lowest index). A target outside [0,V) makes it
 * return NaN with *correct = -1 (checked in C: a label never indexes memory). */
double crossentropy_softmax_forward(float *probs, float *losses, int32_t *correct,
                                    const float *logits, const int32_t *targets,
                                    float smoothing, int B, int V);
/* dlogits = (probs - q) / B: the gradient of the MEAN loss */
void crossentropy_softmax_backward(float *dlogits, const float *probs,
                                   const int32_t *targets, float smoothing, int B, int V);

/* Mean squared error as the lecture defines it, E = 1/p sum_k E_k with
 * E_k = 1/2 sum_j (y_kj - d_kj)^2: y (outputs, compared as they are) and d
 * (targets) are (B,V). Returns the SUM of E_k over the batch (double). */
double mse_forward(const float *y, const float *d, int B, int V);
/* dy = (y - d) / B: the gradient of the MEAN error; dy, y, d are (B,V) */
void mse_backward(float *dy, const float *y, const float *d, int B, int V);
/* Targets of a classification for MSE: d[b,:] = (1 - eps) onehot(labels[b])
 * + eps / V (eps = smoothing, 0: plain one-hot); d is (B,V), labels (B,).
 * Returns 0, or -1 (d untouched past that row) for a label outside [0,V). */
int pynn_one_hot(float *d, const int32_t *labels, float smoothing, int B, int V);

/* ---- convolution (conv.c), images NHWC ---------------------------------------- */
/* 2-D convolution, "same" zero padding, stride 1, odd k >= 1:
 * out is (B,H,W,OC), inp is (B,H,W,C), weight is (OC,k,k,C), bias (OC,) or NULL
 *   out[b,y,x,o] = bias[o] + sum_{i,j,c} inp[b, y+i-k/2, x+j-k/2, c] * weight[o,i,j,c] */
void conv2d_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int B, int H, int W, int C, int OC, int k);
/* dinp (B,H,W,C) or NULL (first layer), dweight (OC,k,k,C), dbias (OC,) or NULL;
 * dout is (B,H,W,OC) */
void conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, int B, int H, int W, int C, int OC,
                     int k);

/* ---- max-pool (pool.c) --------------------------------------------------------- */
/* 2x2 max-pool, stride 2: out is (B,H/2,W/2,C), inp is (B,H,W,C) (an odd last
 * row or column is dropped). Ties: the first maximum of the window in the
 * order (0,0), (0,1), (1,0), (1,1) takes the value and, backward, the gradient. */
void maxpool2x2_forward(float *out, const float *inp, int B, int H, int W, int C);
/* dinp (B,H,W,C) is written whole; dout (B,H/2,W/2,C); inp as in the forward */
void maxpool2x2_backward(float *dinp, const float *dout, const float *inp, int B, int H, int W,
                         int C);

/* Global average pooling (pool.c): out (B,C) = the mean of inp (B,HW,C) over
 * its HW pixels; backward, each pixel gets dout / HW. */
void avgpool_global_forward(float *out, const float *inp, int B, int HW, int C);
void avgpool_global_backward(float *dinp, const float *dout, int B, int HW, int C);

/* ---- batch norm (norm.c), over the rows of (N,C) ------------------------- */
/* out, inp (N,C): a dense output (N = B) or conv output (N = B*H*W rows);
 * mean, invstd, running_mean, running_var, gamma, beta are (C,).
 * training = 1: batch statistics (biased variance), written to mean and invstd
 *   for the backward pass; running = (1-momentum) running + momentum stat
 *   (the variance unbiased there, as PyTorch). training = 0: the running
 *   statistics are used (and written to mean, invstd).
 * out = gamma * (inp - mean) * invstd + beta, then max(., 0) when relu != 0. */
void batchnorm_forward(float *out, float *mean, float *invstd, float *running_mean,
                       float *running_var, const float *inp, const float *gamma,
                       const float *beta, int64_t N, int C, float momentum, float eps,
                       int training, int relu);
/* The training-mode backward, through the batch statistics too: dinp (N,C),
 * dgamma, dbeta (C,) are written; inp, mean, invstd as the forward saw and
 * wrote them, gamma and beta as it used them (relu != 0: the ReLU's mask is
 * recomputed from them, where the forward's output was > 0). */
void batchnorm_backward(float *dinp, float *dgamma, float *dbeta, const float *dout,
                        const float *inp, const float *mean, const float *invstd,
                        const float *gamma, const float *beta, int64_t N, int C, int relu);

/* ---- batch norm + ReLU + max-pool, fused (fused.c) ----------------------------- */
/* Batch norm, then ReLU, then 2x2 max-pool, fused: the tail of a conv block,
 * reading its largest tensor twice (statistics, then the rest) where the
 * three layers touch it six times (fused.c says which). inp is the conv's
 * output (B,H,W,C), out the pooled (B,H/2,W/2,C); the other arguments are
 * batchnorm_forward's. The same numbers as the three layers
 * one after another: out = maxpool(max(batchnorm(inp), 0)).
 * way, zway (B,H/2,W/2,C), written in training (both NULL: not kept): each
 * window's route for the backward, as PyTorch's max-pool keeps its indices:
 * way = the index (0 to 3, reading order) of the window's first maximum
 * when it is > 0, where the gradient gets through the ReLU, else -1 (a
 * float); zway = that input's value. */
void batchnorm_relu_maxpool_forward(float *out, float *way, float *zway, float *mean,
                                    float *invstd, float *running_mean, float *running_var,
                                    const float *inp, const float *gamma, const float *beta,
                                    int B, int H, int W, int C, float momentum, float eps,
                                    int training);
/* Its backward (training mode): dinp (B,H,W,C), dgamma, dbeta (C,) written;
 * dout (B,H/2,W/2,C). inp, way, zway (not NULL), mean and invstd must be
 * those of a forward in training. */
void batchnorm_relu_maxpool_backward(float *dinp, float *dgamma, float *dbeta,
                                     const float *dout, const float *way, const float *zway,
                                     const float *inp, const float *mean, const float *invstd,
                                     const float *gamma, int B, int H, int W, int C);

/* The first conv block fused: a one-channel Conv2d (no bias), then the three
 * above, with the conv's output never stored (fused.c says why and how).
 * inp is (B,H,W,1), weight (C,k,k,1), out (B,H/2,W/2,C): C is the conv's
 * output channels, batch norm's; the rest as batchnorm_relu_maxpool_forward's.
 * The same bits as conv2d_forward, then batchnorm_relu_maxpool_forward. */
void conv_batchnorm_relu_maxpool_forward(float *out, float *way, float *zway, float *mean,
                                         float *invstd, float *running_mean, float *running_var,
                                         const float *inp, const float *weight,
                                         const float *gamma, const float *beta, int B, int H,
                                         int W, int C, int k, float momentum, float eps,
                                         int training);
/* Its backward (training mode; no dinp, as for a first layer): dweight
 * (C,k,k,1), dgamma, dbeta (C,) written; dout (B,H/2,W/2,C). The conv's output
 * is recomputed from inp and weight, so both must be the forward's (as way,
 * zway, mean and invstd). The same bits as batchnorm_relu_maxpool_backward,
 * then conv2d_backward. */
void conv_batchnorm_relu_maxpool_backward(float *dweight, float *dgamma, float *dbeta,
                                          const float *dout, const float *way, const float *zway,
                                          const float *inp, const float *weight,
                                          const float *mean, const float *invstd,
                                          const float *gamma, int B, int H, int W, int C, int k);

/* ---- optimizers (optim.c) ------------------------------------------------ */
/* Both update n parameters, all arrays (n,); weight decay applies to the
 * first n_decay of them (the weights; the biases follow, without).
 * SGD with momentum (PyTorch's form) and L2 weight decay:
 *   g = grad + wd * param;  v = momentum * v + g;  param -= lr * v */
void sgd_update(float *param, const float *grad, float *velocity, int64_t n, int64_t n_decay,
                float lr, float momentum, float weight_decay);
/* Adam with decoupled weight decay (AdamW); t is the 1-based step count:
 *   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
 *   mhat = m / (1 - b1^t);  vhat = v / (1 - b2^t)
 *   param -= lr * (mhat / (sqrt(vhat) + eps) + wd * param) */
void adam_update(float *param, const float *grad, float *m, float *v, int64_t n,
                 int64_t n_decay, float lr, float beta1, float beta2, float eps,
                 float weight_decay, int t);

/* The exponential moving average of the weights (--ema): ema, x are (n,):
 *   ema = decay * ema + (1 - decay) * x */
void pynn_ema_update(float *ema, const float *x, int64_t n, float decay);

/* ---- test hooks: for the tests, not for pynn/ --------------------------------- */
/* flags of pynn_gemm */
enum {
    PYNN_GEMM_ACCUMULATE = 1, /* C += product, instead of C = product */
    PYNN_GEMM_RELU = 2        /* C = max(C, 0) at the end (fused activation) */
};
/* C = op(A) . op(B) (+ bias[j] on every row when bias != NULL), the product
 * every layer is made of (gemm.c):
 *   op(A) is (M,K): A is (M,K) when ta == 0, (K,M) when ta == 1
 *   op(B) is (K,N): B is (K,N) when tb == 0, (N,K) when tb == 1
 *   C is (M,N); all matrices contiguous (leading dimension = row length);
 *   flags: PYNN_GEMM_ACCUMULATE, PYNN_GEMM_RELU (or 0).
 * The result does not depend on the thread count (K is never split). */
void pynn_gemm(int ta, int tb, int M, int N, int K, const float *A, const float *Bm,
               const float *bias, float *Cm, int flags);
/* The road of a convolution with more than one input channel, for tests and
 * benchmarks: by the layer's shape (the default: Winograd for 3x3 kernels
 * with enough channels, else im2col), or forced. */
enum { PYNN_CONV_BY_SHAPE = 0, PYNN_CONV_IM2COL = 1, PYNN_CONV_WINOGRAD = 2 };
void pynn_set_conv_path(int path);
/* Frees every work buffer and the GEMM's packing workspace (they grow back
 * when needed): for leak checks and for tests of the regrowth. */
void pynn_release_workspaces(void);

#endif /* PYNN_H */
