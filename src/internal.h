/* Helpers shared by libbackprop's source files; not part of the public API. */
#ifndef BACKPROP_INTERNAL_H
#define BACKPROP_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cblas.h>

#include "backprop/backprop.h"
#include "backprop/checkpoint.h"
#include "backprop/config.h"

#ifdef BACKPROP_DOUBLE
#define bp__gemv cblas_dgemv
#define BP__EXP exp
#define BP__LOG log
#define BP__TANH tanh
#define BP__SQRT sqrt
#else
#define bp__gemv cblas_sgemv
#define BP__EXP expf
#define BP__LOG logf
#define BP__TANH tanhf
#define BP__SQRT sqrtf
#endif

/* Element-wise loops compiled for AVX-512, AVX2 and baseline x86-64, picked at load time:
 * the library stays portable and still uses the wide vectors of the machine it runs on.
 * (-std=c11 keeps floating-point contraction off, so all three give identical bits.) */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(BACKPROP_SANITIZE_BUILD)
#define BP__VECTORIZE __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define BP__VECTORIZE
#endif

/* Whether x is NaN or infinite: all its exponent bits set. An integer AND and compare,
 * which vectorise with the loop around them (isfinite may not): the update tests each
 * value it stores this way (src/optim.c), and the data check each row it reads. */
static inline int bp__not_finite(bp_real x)
{
#ifdef BACKPROP_DOUBLE
    uint64_t b, e = 0x7ff0000000000000u;
#else
    uint32_t b, e = 0x7f800000u;
#endif
    memcpy(&b, &x, sizeof(b));
    return (b & e) == e;
}

/* C = alpha op(A) op(B) + beta C, row-major, as cblas_?gemm: the one matrix product of
 * the library. Float builds with oneDNN send the products that are large enough to its
 * JIT sgemm, the rest to OpenBLAS (blas.c says why). */
void bp__gemm(enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, int m, int n, int k, bp_real alpha,
              const bp_real *A, int lda, const bp_real *B, int ldb, bp_real beta, bp_real *C,
              int ldc);

/* bp_backward, telling ready(ctx, from) as soon as grad[from ..] (to the end of the
 * parameters) is final: after each row block of each weight gradient, from the last layer
 * back. The gradient exchange starts on those parts while the rest is computed. */
typedef void (*bp__ready_fn)(void *ctx, size_t from);
void bp__backward_ready(const bp_net *net, bp_workspace *ws, const bp_real *Y, size_t rows,
                        bp_real *grad, int accumulate, bp__ready_fn ready, void *ctx);

/* Rows of layer l's weight gradient per block of bp__backward_ready. */
size_t bp__grad_block_rows(const bp_net *net, int l);

/* bp_sgd_step on the parameters at [from, to) of the buffer only (the same expression per
 * element: a step taken in ranges equals one taken whole). 1 when some parameter it
 * updated is not finite (NaN or infinite: a non-finite gradient leaves one), else 0. */
int bp__sgd_step_range(const bp_sgd *opt, bp_net *net, const bp_real *grad, bp_real *velocity,
                       double m, size_t from, size_t to);

/* Adam (Kingma and Ba), with the L2 term lambda/(2n) sum W^2 either coupled (its
 * gradient lambda/n W added to the batch gradient, as in the seeds' cost, before the
 * moments) or decoupled (AdamW: W decays by learning_rate lambda/n W beside the Adam
 * step). Biases take no L2. */
typedef struct {
    double learning_rate, lambda, n_train;
    double beta1, beta2, epsilon;
    int decoupled;
} bp__adam;

/* One Adam step, the t-th (1-based), on the parameters at [from, to): grad is the sum of
 * the gradients over the m examples of the batch; m1 and m2 (params-shaped) are the first
 * and second moments. Per element the same expression whatever the range, as
 * bp__sgd_step_range, and the same answer: 1 when an updated parameter or moment is not
 * finite (an overflowing second moment leaves its parameter finite, and frozen). */
int bp__adam_step_range(const bp__adam *opt, bp_net *net, const bp_real *grad, bp_real *m1,
                        bp_real *m2, double m, long t, size_t from, size_t to);

/* [train] precision = bf16: gives ws bf16 copies of the products' operands, after which
 * bp_forward and bp_backward (accumulate 0) multiply in bf16 with f32 sums. The weights'
 * copy is made by bp__bf16_weights: call it whenever the weights changed (once per step).
 * 0 or BP_ENOMEM. */
int bp__workspace_bf16(bp_workspace *ws, const bp_net *net);
void bp__bf16_weights(const bp_net *net, bp_workspace *ws);

/* The learning rate of the step a run takes at global step `step` (0-based) of `steps` in
 * all, in epoch `epoch` (0-based) of a training set of n examples, under c's schedule:
 *   constant         eta
 *   step             eta * lr_gamma^floor(epoch / lr_step_epochs)
 *   cosine           lr_min + (eta - lr_min) * (1 + cos(pi * step / steps)) / 2
 *   inverse_scaling  eta / (epoch * n + 1)^lr_power: the examples seen before the epoch,
 *                    as scikit-learn's invscaling sets it at each epoch's start
 * A function of the position alone, so every rank and every resumed run agree. */
double bp__learning_rate(const bp_config *c, long epoch, long step, long steps, double n);

/* log(1 + e^x) without overflow: the per-unit cross-entropy's terms from pre-activations. */
double bp__softplus(double x);

/* The index of the largest of k values (the first on ties): a predicted class. */
size_t bp__argmax(const bp_real *a, size_t k);

/* The one checked allocation wrapper: NULL only when size overflowed or memory ran out.
 * Memory is 64-byte aligned and zeroed. Free with bp__free. */
void *bp__calloc(size_t count, size_t size);
void bp__free(void *p);
/* realloc with an overflow check; on NULL the old block is untouched. */
void *bp__realloc(void *p, size_t count, size_t size);

/* a * b, or SIZE_MAX when it would overflow. */
size_t bp__mul(size_t a, size_t b);

/* Bytes the node lets this process allocate: the smaller of /proc/meminfo's MemAvailable
 * and what its memory cgroups (v1 or v2, each level up to the mount) leave; INFINITY when
 * neither says. root prefixes every path read ("" for this machine; tests give a fake
 * tree). */
double bp__memory_available_at(const char *root);

/* Bytes this process's own resource limits leave (ulimit -d, ulimit -v): the soft limit on
 * data less VmData, on address space less VmSize (/proc/self/limits and status, under
 * root); INFINITY when neither is set. Per process, unlike the node's memory. */
double bp__rlimit_room_at(const char *root);

/* The smaller of bp__memory_available_at("") and ceiling, a budget below what the node has
 * ([data] max_memory_mb, which the placement carries); ceiling <= 0: none. */
double bp__memory_available(double ceiling);

/* Refuses, before allocating, what cannot fit: BP_EINVAL with "WHAT need N of memory, but
 * only M is available" when bytes exceed bp__memory_available(ceiling) or
 * bp__rlimit_room_at(""). The data's loads pass the placement's ceiling; the trainer's
 * work buffers and checkpoints, which [data] max_memory_mb does not cover, none. */
int bp__memory_check_under(double bytes, double ceiling, const char *what, char *err,
                           size_t errlen);
/* The same with no ceiling: the node's memory and the process's limits alone. */
int bp__memory_check(double bytes, const char *what, char *err, size_t errlen);

/* "1.5 GiB": bytes for messages, in buf. */
const char *bp__human_bytes(double bytes, char *buf, size_t len);

/* FNV-1a over bytes, continuing from h (start with 1469598103934665603). */
uint64_t bp__hash(const void *data, size_t bytes, uint64_t h);

/* A fast 64-bit hash of bytes (8-byte words in four lanes), seeded: for comparing
 * megabytes of replicas across ranks, not for storing. */
uint64_t bp__hash_words(const void *data, size_t bytes, uint64_t seed);

/* Room for a path and the suffix of its temporary name. */
#define BP__PATH_LEN 4352

/* Seconds on the monotonic clock: for intervals only. */
double bp__now_s(void);

/* Writes a formatted message into buf (if not NULL) and returns code. */
int bp__fail(char *buf, size_t len, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
