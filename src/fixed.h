/* reproducible = any_scale (docs/reproducibility.md): a batch cut into micro-shards of a
 * fixed number of rows, each micro-shard's products of a shape fixed by the config, and
 * their gradients summed exactly, in int64 fixed point with one exponent per tensor that
 * every rank agrees on. Integer sums do not depend on who holds which micro-shard, nor on
 * the order of the exchange: the result is the same bits at any rank count. */
#ifndef BACKPROP_FIXED_H
#define BACKPROP_FIXED_H

#include <stddef.h>
#include <stdint.h>

#include "backprop/backprop.h"
#include "internal.h"

/* Tensors of a net in fixed point: 2l is W_l, 2l + 1 is b_l. */
#define BP__TENSORS(net) (2 * (size_t)(net)->nlayers)

/* The forward pass over rows in micro-shards of u rows, each its own products. */
void bp__forward_micro(const bp_net *net, bp_workspace *ws, const bp_real *X, size_t rows,
                       size_t u);

/* After bp__forward_micro: the deltas of every layer, micro-shard by micro-shard, and
 * bound[t], for each tensor t, a bound on any entry of any of these micro-shards'
 * gradients of t (infinite when an activation or delta is not finite). */
void bp__deltas_micro(const bp_net *net, bp_workspace *ws, const bp_real *Y, size_t rows, size_t u,
                      double *bound);

/* After bp__deltas_micro (rows > 0): acc (nparams) = the sum of rint(g * scale[t]) over
 * every micro-shard's gradient g, each product one micro-shard's, from the last layer
 * back; ready(ctx, from) once acc[from ..] is final. block: bp__fixed_block_reals(net).
 * Or, with out (the float build, rows <= u: one micro-shard), its gradient g itself to out
 * (nparams floats, neither scaled nor rounded: rint(g * scale[t]) is what acc would hold);
 * acc is not used then. */
void bp__grad_fixed(const bp_net *net, const bp_workspace *ws, size_t rows, size_t u,
                    const double *scale, int64_t *acc, float *out, bp_real *block,
                    bp__ready_fn ready, void *ctx);
size_t bp__fixed_block_reals(const bp_net *net);

/* The data cost of rows [r0, r0 + n) of the last forward pass, summed in row order. */
double bp__cost_part(const bp_net *net, const bp_workspace *ws, const bp_real *Y, size_t r0,
                     size_t n);

/* scale[t] = 2^s[t] from the bounds agreed by every rank, s the largest with
 * micro_shards * bound * 2^s < 2^61 (a factor 4 of margin below int64's 2^63, for the
 * products' own rounding). 0 when every bound is finite, else -1. */
int bp__fixed_scales(const double *bound, size_t tensors, size_t micro_shards, double *scale);

/* acc[i] += rint(g[i] * scale), or = when first. */
void bp__fixed_add(int64_t *acc, const bp_real *g, size_t n, double scale, int first);

/* The weight gradient's row block in one pass, for a rank's rows in micro-shards of u:
 * acc (m x n) (+)= the sum over micro-shards of rint(s * scale), s[a][b] the float sum over
 * the micro-shard's rows r in order, s = fmaf(D[r][a], A[r][b], s) from s = 0; the first
 * micro-shard stores. Every path gives these bits (whatever the BLAS and the CPU); scale
 * keeps |s * scale| < 2^62 (bp__fixed_scales). */
typedef struct {
    const float *D, *A; /* rows x m (row stride ldd), rows x n (lda) */
    size_t ldd, lda, rows, u, m, n;
    double scale;
    int64_t *acc;
    float *carry; /* m x n floats of scratch, used when u > 256 (sums between pieces) */
    int stream;   /* acc is larger than the caches: stored without reading it first */
    float *pack;  /* bp__dw_pack_floats() floats of scratch: the packed panels */
    float *out;   /* or, with rows <= u (one micro-shard), the float sums s themselves to out
                   * (m x n, row stride n), neither scaled nor rounded; acc unused */
} bp__dw_job;
size_t bp__dw_pack_floats(void);
void bp__dw_fixed(const bp__dw_job *job);

/* The paths of bp__dw_fixed, for the tests: whether the CPU has one, and one forced. */
enum { BP__DW_PLAIN, BP__DW_AVX2, BP__DW_AVX512, BP__DW_PATHS };
int bp__dw_fixed_has(int path);
void bp__dw_fixed_on(int path, const bp__dw_job *job);

/* out[lo .. hi) = (v[0] + ... + v[k - 1]) / scale per tensor, the int64 vectors summed
 * exactly and each sum rounded once to bp_real. */
void bp__fixed_to_real(const bp_net *net, const int64_t *const *v, int k, const double *scale,
                       size_t lo, size_t hi, bp_real *out);

/* The float build: the gradients of k micro-shards, one a vector (bp__grad_fixed's out),
 * each entry quantized as bp__fixed_add does and the k summed exactly, for [lo, hi): to sum
 * as int64 where sum is not NULL, else to real as bp__fixed_to_real would convert that sum.
 * The bits of the int64 path, with half its bytes between the ranks of a node. */
void bp__fixed_floats(const bp_net *net, const float *const *v, int k, const double *scale,
                      size_t lo, size_t hi, int64_t *sum, bp_real *real);

#endif
