/* The network: one parameter buffer with per-layer views, the batched forward and
 * backward passes, and the L2 term. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "activation.h"
#include "blas.h"
#include "fixed.h"

int bp_net_validate(int nsizes, const int *sizes, bp_activation hidden, bp_activation output,
                    bp_cost cost, char *why, size_t whylen)
{
    if (nsizes < 2)
        return bp__fail(why, whylen, BP_EINVAL, "need at least an input and an output size");
    for (int i = 0; i < nsizes; i++)
        if (sizes[i] <= 0)
            return bp__fail(why, whylen, BP_EINVAL, "layer size %d is %d, must be positive", i,
                            sizes[i]);
    if (hidden == BP_SOFTMAX)
        return bp__fail(why, whylen, BP_EINVAL, "softmax is an output activation only");
    if (output != BP_SIGMOID && output != BP_SOFTMAX && output != BP_LINEAR)
        return bp__fail(why, whylen, BP_EINVAL, "output must be sigmoid, softmax or linear");
    if (output == BP_LINEAR && cost == BP_CROSS_ENTROPY)
        return bp__fail(why, whylen, BP_EINVAL,
                        "cross_entropy needs a sigmoid or softmax output (its logs are "
                        "undefined on a linear output); use quadratic");
    return 0;
}

size_t bp_net_offset_W(const bp_net *net, int l)
{
    return (size_t)(net->W[l] - net->params);
}

size_t bp_net_offset_b(const bp_net *net, int l)
{
    return (size_t)(net->b[l] - net->params);
}

int bp_net_create(bp_net *net, int nsizes, const int *sizes, bp_activation hidden,
                  bp_activation output, bp_cost cost)
{
    memset(net, 0, sizeof(*net));
    if (bp_net_validate(nsizes, sizes, hidden, output, cost, NULL, 0) < 0)
        return BP_EINVAL;
    size_t total = 0;
    for (int l = 0; l + 1 < nsizes; l++) {
        size_t w = bp__mul((size_t)sizes[l + 1], (size_t)sizes[l]);
        if (w == SIZE_MAX || total > SIZE_MAX / 2 - w - (size_t)sizes[l + 1])
            return BP_EINVAL;
        total += w + (size_t)sizes[l + 1];
    }
    net->nlayers = nsizes - 1;
    net->hidden = hidden;
    net->output = output;
    net->cost = cost;
    net->nparams = total;
    net->sizes = bp__calloc((size_t)nsizes, sizeof(int));
    net->params = bp__calloc(total, sizeof(bp_real));
    net->W = bp__calloc((size_t)net->nlayers, sizeof(bp_real *));
    net->b = bp__calloc((size_t)net->nlayers, sizeof(bp_real *));
    if (!net->sizes || !net->params || !net->W || !net->b) {
        bp_net_free(net);
        return BP_ENOMEM;
    }
    memcpy(net->sizes, sizes, (size_t)nsizes * sizeof(int));
    bp_real *p = net->params;
    for (int l = 0; l < net->nlayers; l++) {
        net->W[l] = p;
        p += (size_t)sizes[l + 1] * (size_t)sizes[l];
        net->b[l] = p;
        p += sizes[l + 1];
    }
    return 0;
}

void bp_net_free(bp_net *net)
{
    bp__free(net->sizes);
    bp__free(net->params);
    bp__free(net->W);
    bp__free(net->b);
    memset(net, 0, sizeof(*net));
}

void bp_net_init(bp_net *net, bp_init init, double epsilon, bp_rng *rng)
{
    for (int l = 0; l < net->nlayers; l++) {
        size_t in = (size_t)net->sizes[l], out = (size_t)net->sizes[l + 1];
        double xavier = sqrt(6.0 / (double)(in + out));
        for (size_t i = 0; i < out * in; i++) {
            double w = 0;
            switch (init) {
            case BP_INIT_GAUSSIAN_SCALED:
                w = bp_rng_gaussian(rng) / sqrt((double)in);
                break;
            case BP_INIT_UNIFORM:
                w = (2 * bp_rng_uniform(rng) - 1) * epsilon;
                break;
            case BP_INIT_XAVIER:
                w = (2 * bp_rng_uniform(rng) - 1) * xavier;
                break;
            case BP_INIT_HE:
                w = bp_rng_gaussian(rng) * sqrt(2.0 / (double)in);
                break;
            }
            net->W[l][i] = (bp_real)w;
        }
        for (size_t j = 0; j < out; j++) {
            double b = 0;
            if (init == BP_INIT_GAUSSIAN_SCALED)
                b = bp_rng_gaussian(rng);
            else if (init == BP_INIT_UNIFORM)
                b = (2 * bp_rng_uniform(rng) - 1) * epsilon;
            net->b[l][j] = (bp_real)b;
        }
    }
}

int bp_workspace_create(bp_workspace *ws, const bp_net *net, size_t max_rows)
{
    memset(ws, 0, sizeof(*ws));
    if (max_rows == 0)
        max_rows = 1;
    size_t L = (size_t)net->nlayers, k = (size_t)net->sizes[L];
    size_t total = 0;
    for (size_t l = 1; l <= L; l++)
        total += bp__mul(max_rows, (size_t)net->sizes[l]); /* A[l]; A[0] points at the input */
    for (size_t l = 0; l < L; l++)
        total += bp__mul(max_rows, (size_t)net->sizes[l + 1]); /* D[l] */
    total += bp__mul(max_rows, k) + max_rows;                  /* Z_out, ones */
    ws->A = bp__calloc(L + 1, sizeof(bp_real *));
    ws->D = bp__calloc(L, sizeof(bp_real *));
    ws->mem = bp__calloc(total, sizeof(bp_real));
    if (!ws->A || !ws->D || !ws->mem) {
        bp_workspace_free(ws);
        return BP_ENOMEM;
    }
    ws->max_rows = max_rows;
    bp_real *p = ws->mem;
    for (size_t l = 1; l <= L; l++) {
        ws->A[l] = p;
        p += max_rows * (size_t)net->sizes[l];
    }
    for (size_t l = 0; l < L; l++) {
        ws->D[l] = p;
        p += max_rows * (size_t)net->sizes[l + 1];
    }
    ws->Z_out = p;
    p += max_rows * k;
    ws->ones = p;
    for (size_t i = 0; i < max_rows; i++)
        ws->ones[i] = 1;
    return 0;
}

/* bf16 copies of the products' operands ([train] precision = bf16): the weights (converted
 * once per step by bp__bf16_weights), each layer's input and each layer's delta (converted
 * as the passes reach them). */
typedef struct {
    bp_bf16 *W; /* params-shaped: the weights' places are filled, the biases' unused */
    bp_bf16 **A, **D;
    bp_bf16 *mem;
} bf16_ws;

static void free_bf16(bf16_ws *b)
{
    if (!b)
        return;
    bp__free(b->W);
    bp__free(b->A);
    bp__free(b->D);
    bp__free(b->mem);
    bp__free(b);
}

int bp__workspace_bf16(bp_workspace *ws, const bp_net *net)
{
    size_t L = (size_t)net->nlayers, rows = ws->max_rows, total = 0;
    for (size_t l = 0; l < L; l++)
        total += bp__mul(rows, (size_t)net->sizes[l] + (size_t)net->sizes[l + 1]);
    bf16_ws *b = bp__calloc(1, sizeof(*b));
    if (b) {
        b->W = bp__calloc(net->nparams, sizeof(bp_bf16));
        b->A = bp__calloc(L, sizeof(bp_bf16 *));
        b->D = bp__calloc(L, sizeof(bp_bf16 *));
        b->mem = bp__calloc(total, sizeof(bp_bf16));
    }
    if (!b || !b->W || !b->A || !b->D || !b->mem) {
        free_bf16(b);
        return BP_ENOMEM;
    }
    bp_bf16 *p = b->mem;
    for (size_t l = 0; l < L; l++) {
        b->A[l] = p;
        p += rows * (size_t)net->sizes[l];
        b->D[l] = p;
        p += rows * (size_t)net->sizes[l + 1];
    }
    ws->bf16 = b;
    return 0;
}

void bp__bf16_weights(const bp_net *net, bp_workspace *ws)
{
    bf16_ws *b = ws->bf16;
    if (!b)
        return;
    for (int l = 0; l < net->nlayers; l++) {
        size_t o = bp_net_offset_W(net, l);
        bp__to_bf16(b->W + o, net->params + o, (size_t)net->sizes[l] * (size_t)net->sizes[l + 1]);
    }
}

/* C = op(A) op(B) in bf16 when there are bf16 operands (b, Ab, Bb) and oneDNN takes the
 * shape, else in bp_real from A and B. */
static void product(const bf16_ws *b, int ta, int tb, int m, int n, int k, const bp_real *A,
                    const bp_bf16 *Ab, int lda, const bp_real *B, const bp_bf16 *Bb, int ldb,
                    bp_real *C, int ldc)
{
#ifndef BACKPROP_DOUBLE /* the double build refuses precision = bf16 */
    if (b && bp__gemm_bf16(ta, tb, m, n, k, Ab, lda, Bb, ldb, C, ldc) == 0)
        return;
#else
    (void)b, (void)Ab, (void)Bb;
#endif
    bp__gemm(ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, 1, A, lda, B,
             ldb, 0, C, ldc);
}

void bp_workspace_free(bp_workspace *ws)
{
    free_bf16(ws->bf16);
    bp__free(ws->A);
    bp__free(ws->D);
    bp__free(ws->mem);
    memset(ws, 0, sizeof(*ws));
}

/* Rows [r0, r0 + rows) of the forward pass, from the inputs at ws->A[0]: each layer,
 * Z = A W^T (one gemm), then bias and activation fused in one pass. The output layer keeps
 * Z for the cost's log terms. */
static void forward_rows(const bp_net *net, bp_workspace *ws, size_t r0, size_t rows)
{
    int L = net->nlayers;
    const bf16_ws *b = ws->bf16;
    for (int l = 0; l < L; l++) {
        size_t n_in = (size_t)net->sizes[l], n_out = (size_t)net->sizes[l + 1];
        int last = l == L - 1;
        const bp_real *in = ws->A[l] + r0 * n_in;
        bp_real *Z = (last ? ws->Z_out : ws->A[l + 1]) + r0 * n_out;
        bp_bf16 *in_b = b ? b->A[l] + r0 * n_in : NULL;
        if (b)
            bp__to_bf16(in_b, in, rows * n_in);
        product(b, 0, 1, (int)rows, (int)n_out, (int)n_in, in, in_b, (int)n_in, net->W[l],
                b ? b->W + bp_net_offset_W(net, l) : NULL, (int)n_in, Z, (int)n_out);
        bp__bias_activate(last ? net->output : net->hidden, Z, net->b[l], ws->A[l + 1] + r0 * n_out,
                          rows, n_out);
    }
}

/* X is (rows, sizes[0]). */
const bp_real *bp_forward(const bp_net *net, bp_workspace *ws, const bp_real *X, size_t rows)
{
    ws->A[0] = (bp_real *)X; /* the backward pass reads the inputs from here; never written */
    forward_rows(net, ws, 0, rows);
    return ws->A[net->nlayers];
}

void bp__forward_micro(const bp_net *net, bp_workspace *ws, const bp_real *X, size_t rows, size_t u)
{
    ws->A[0] = (bp_real *)X;
    for (size_t r0 = 0; r0 < rows; r0 += u)
        forward_rows(net, ws, r0, rows - r0 < u ? rows - r0 : u);
}

double bp_cost_sum(const bp_net *net, const bp_workspace *ws, const bp_real *Y, size_t rows)
{
    int L = net->nlayers;
    return bp__cost_rows(net->output, net->cost, ws->A[L], ws->Z_out, Y, rows,
                         (size_t)net->sizes[L]);
}

size_t bp__argmax(const bp_real *a, size_t k)
{
    size_t best = 0;
    for (size_t j = 1; j < k; j++)
        if (a[j] > a[best])
            best = j;
    return best;
}

size_t bp_count_correct(const bp_net *net, const bp_workspace *ws, const int *labels, size_t rows)
{
    size_t k = (size_t)net->sizes[net->nlayers], correct = 0;
    const bp_real *A = ws->A[net->nlayers];
    for (size_t r = 0; r < rows; r++)
        correct += (int)bp__argmax(A + r * k, k) == labels[r];
    return correct;
}

/* Row blocks of a weight gradient: dW_l is computed in blocks of whole rows of at most this
 * many reals, so that an exchange can start on the first block while the next is computed.
 * Fixed, not tied to [comm] bucket_mb or the rank count: the blocks decide which products
 * run, so a constant keeps every configuration of one net on the same arithmetic. */
#define BP_GRAD_BLOCK ((size_t)1 << 18)

size_t bp__grad_block_rows(const bp_net *net, int l)
{
    size_t n_in = (size_t)net->sizes[l], n_out = (size_t)net->sizes[l + 1];
    size_t blocks = (n_in * n_out + BP_GRAD_BLOCK - 1) / BP_GRAD_BLOCK;
    return (n_out + blocks - 1) / blocks;
}

/* From the output back: db_l (+)= D_l^T 1 (gemv), dW_l (+)= D_l^T A_l (gemm, in row blocks
 * from the last), D_{l-1} = (D_l W_l) * f'(A_l) (gemm, then one element-wise pass). After
 * each block, ready(ctx, from) says that grad[from ..] is final. */
void bp__backward_ready(const bp_net *net, bp_workspace *ws, const bp_real *Y, size_t rows,
                        bp_real *grad, int accumulate, bp__ready_fn ready, void *ctx)
{
    int L = net->nlayers;
    bp_real beta = accumulate ? 1 : 0; /* 0: no separate pass to zero the gradient */
    /* bf16 products write their result: accumulating takes the bp_real ones. */
    const bf16_ws *b = accumulate ? NULL : ws->bf16;
    bp__output_delta(net->output, net->cost, ws->A[L], Y, ws->D[L - 1], rows,
                     (size_t)net->sizes[L]);
    for (int l = L - 1; l >= 0; l--) {
        int n_in = net->sizes[l], n_out = net->sizes[l + 1];
        size_t off = bp_net_offset_W(net, l), block = bp__grad_block_rows(net, l);
        bp__gemv(CblasRowMajor, CblasTrans, (int)rows, n_out, 1, ws->D[l], n_out, ws->ones, 1, beta,
                 grad + bp_net_offset_b(net, l), 1);
        if (b)
            bp__to_bf16(b->D[l], ws->D[l], rows * (size_t)n_out);
        for (size_t hi = (size_t)n_out; hi > 0;) {
            size_t lo = (hi - 1) / block * block;
            if (b)
                product(b, 1, 0, (int)(hi - lo), n_in, (int)rows, ws->D[l] + lo, b->D[l] + lo,
                        n_out, ws->A[l], b->A[l], n_in, grad + off + lo * (size_t)n_in, n_in);
            else
                bp__gemm(CblasTrans, CblasNoTrans, (int)(hi - lo), n_in, (int)rows, 1,
                         ws->D[l] + lo, n_out, ws->A[l], n_in, beta, grad + off + lo * (size_t)n_in,
                         n_in);
            if (ready)
                ready(ctx, off + lo * (size_t)n_in);
            hi = lo;
        }
        if (l == 0)
            break;
        product(b, 0, 0, (int)rows, n_in, n_out, ws->D[l], b ? b->D[l] : NULL, n_out, net->W[l],
                b ? b->W + off : NULL, n_in, ws->D[l - 1], n_in);
        bp__mul_derivative(net->hidden, ws->A[l], ws->D[l - 1], rows * (size_t)n_in);
    }
}

void bp_backward(const bp_net *net, bp_workspace *ws, const bp_real *Y, size_t rows, bp_real *grad,
                 int accumulate)
{
    bp__backward_ready(net, ws, Y, rows, grad, accumulate, NULL, NULL);
}

double bp_l2_term(const bp_net *net, double lambda, double n)
{
    if (lambda == 0)
        return 0;
    double sum = 0;
    for (int l = 0; l < net->nlayers; l++) {
        size_t count = (size_t)net->sizes[l] * (size_t)net->sizes[l + 1];
        for (size_t i = 0; i < count; i++)
            sum += (double)net->W[l][i] * (double)net->W[l][i];
    }
    return lambda / (2.0 * n) * sum;
}

/* ---- reproducible = any_scale: micro-shards (src/fixed.h) ---- */

double bp__cost_part(const bp_net *net, const bp_workspace *ws, const bp_real *Y, size_t r0,
                     size_t n)
{
    int L = net->nlayers;
    size_t k = (size_t)net->sizes[L];
    return bp__cost_rows(net->output, net->cost, ws->A[L] + r0 * k, ws->Z_out + r0 * k, Y + r0 * k,
                         n, k);
}

/* max |x[i]| over n entries; *bad set when one is not finite. On the bits: for values
 * without their sign the integer order is the float order, and NaN and infinity are the
 * largest (an integer max the compiler vectorises; a float one it may not). */
#ifdef BACKPROP_DOUBLE
typedef uint64_t real_bits;
#define REAL_ABS ((real_bits)0x7fffffffffffffff)
#define REAL_INF ((real_bits)0x7ff0000000000000)
#else
typedef uint32_t real_bits;
#define REAL_ABS ((real_bits)0x7fffffff)
#define REAL_INF ((real_bits)0x7f800000)
#endif
BP__VECTORIZE static real_bits abs_max_bits(const bp_real *restrict x, size_t n)
{
    real_bits m = 0;
    for (size_t i = 0; i < n; i++) {
        real_bits b;
        memcpy(&b, &x[i], sizeof(b));
        b &= REAL_ABS;
        m = b > m ? b : m;
    }
    return m;
}

static double abs_max(const bp_real *x, size_t n, int *bad)
{
    real_bits m = abs_max_bits(x, n);
    if (m >= REAL_INF) {
        *bad = 1;
        return 0;
    }
    bp_real v;
    memcpy(&v, &m, sizeof(v));
    return (double)v;
}

/* Bounds on layer l's micro-shard gradients: |dW_ab| <= sum_r max|D_r| max|A_r| and
 * |db_a| <= sum_r max|D_r| over a micro-shard's rows r; the largest over the micro-shards. */
static void layer_bounds(const bp_net *net, const bp_workspace *ws, int l, size_t rows, size_t u,
                         double *bW, double *bb)
{
    size_t n_in = (size_t)net->sizes[l], n_out = (size_t)net->sizes[l + 1];
    int bad = 0;
    *bW = *bb = 0;
    for (size_t r0 = 0; r0 < rows; r0 += u) {
        double w = 0, b = 0;
        for (size_t r = r0; r < rows && r < r0 + u; r++) {
            double d = abs_max(ws->D[l] + r * n_out, n_out, &bad);
            w += d * abs_max(ws->A[l] + r * n_in, n_in, &bad);
            b += d;
        }
        *bW = w > *bW ? w : *bW;
        *bb = b > *bb ? b : *bb;
    }
#ifndef BACKPROP_DOUBLE
    /* A bound past half of float's range: a micro-shard's float sum may overflow to inf,
     * which each path would quantize to its own integer, and two such to a wrapped sum.
     * The step diverged, on every rank alike. */
    bad |= *bW >= 0x1p127 || *bb >= 0x1p127;
#endif
    if (bad)
        *bW = *bb = INFINITY;
}

void bp__deltas_micro(const bp_net *net, bp_workspace *ws, const bp_real *Y, size_t rows, size_t u,
                      double *bound)
{
    int L = net->nlayers;
    size_t k = (size_t)net->sizes[L];
    for (size_t r0 = 0; r0 < rows; r0 += u) {
        size_t n = rows - r0 < u ? rows - r0 : u;
        bp__output_delta(net->output, net->cost, ws->A[L] + r0 * k, Y + r0 * k,
                         ws->D[L - 1] + r0 * k, n, k);
        for (int l = L - 1; l > 0; l--) {
            size_t n_in = (size_t)net->sizes[l], n_out = (size_t)net->sizes[l + 1];
            bp_real *prev = ws->D[l - 1] + r0 * n_in;
            bp__gemm(CblasNoTrans, CblasNoTrans, (int)n, (int)n_in, (int)n_out, 1,
                     ws->D[l] + r0 * n_out, (int)n_out, net->W[l], (int)n_in, 0, prev, (int)n_in);
            bp__mul_derivative(net->hidden, ws->A[l] + r0 * n_in, prev, n * n_in);
        }
    }
    for (int l = 0; l < L; l++)
        layer_bounds(net, ws, l, rows, u, &bound[2 * l], &bound[2 * l + 1]);
}

/* The largest row block of a weight gradient, or bias. */
static size_t block_reals(const bp_net *net)
{
    size_t most = 1;
    for (int l = 0; l < net->nlayers; l++) {
        size_t n_in = (size_t)net->sizes[l], n_out = (size_t)net->sizes[l + 1];
        size_t w = bp__grad_block_rows(net, l) * n_in;
        most = w > most ? w : most;
        most = n_out > most ? n_out : most;
    }
    return most;
}

size_t bp__fixed_block_reals(const bp_net *net)
{
#ifdef BACKPROP_DOUBLE
    return block_reals(net);
#else
    return block_reals(net) + bp__dw_pack_floats(); /* then bp__dw_fixed's panels */
#endif
}

/* An int64 sum larger than this is streamed to memory by bp__dw_fixed: left in the cache
 * it is converted back faster (W2's 2 MB: 0.09 ms against 0.22 streamed), but stored
 * without reading its lines first it is written faster (W3's 46 MB: dW 14 ms against 22),
 * bench/any_scale_probe.c. */
#define BP__FIXED_CACHED ((size_t)8 << 20)

/* Row blocks outside, micro-shards inside: a block's int64 sum stays in the cache while
 * every micro-shard adds its product to it. The float build sums each product in a fixed
 * order of its own (bp__dw_fixed), whatever the BLAS; the double build keeps the BLAS's. */
void bp__grad_fixed(const bp_net *net, const bp_workspace *ws, size_t rows, size_t u,
                    const double *scale, int64_t *acc, float *out, bp_real *block,
                    bp__ready_fn ready, void *ctx)
{
#ifndef BACKPROP_DOUBLE
    int stream = net->nparams * sizeof(int64_t) > BP__FIXED_CACHED;
#endif
    for (int l = net->nlayers - 1; l >= 0; l--) {
        size_t n_in = (size_t)net->sizes[l], n_out = (size_t)net->sizes[l + 1];
        size_t off = bp_net_offset_W(net, l), step = bp__grad_block_rows(net, l);
        for (size_t r0 = 0; r0 < rows; r0 += u) {
            size_t n = rows - r0 < u ? rows - r0 : u;
            bp__gemv(CblasRowMajor, CblasTrans, (int)n, (int)n_out, 1, ws->D[l] + r0 * n_out,
                     (int)n_out, ws->ones, 1, 0, block, 1);
#ifndef BACKPROP_DOUBLE
            if (out) {
                memcpy(out + bp_net_offset_b(net, l), block, n_out * sizeof(float));
                continue;
            }
#endif
            bp__fixed_add(acc + bp_net_offset_b(net, l), block, n_out, scale[2 * l + 1], r0 == 0);
        }
        for (size_t hi = n_out; hi > 0;) {
            size_t lo = (hi - 1) / step * step;
#ifdef BACKPROP_DOUBLE
            for (size_t r0 = 0; r0 < rows; r0 += u) {
                size_t n = rows - r0 < u ? rows - r0 : u;
                bp__gemm(CblasTrans, CblasNoTrans, (int)(hi - lo), (int)n_in, (int)n, 1,
                         ws->D[l] + r0 * n_out + lo, (int)n_out, ws->A[l] + r0 * n_in, (int)n_in, 0,
                         block, (int)n_in);
                bp__fixed_add(acc + off + lo * n_in, block, (hi - lo) * n_in, scale[2 * l],
                              r0 == 0);
            }
#else
            bp__dw_job job = {.D = ws->D[l] + lo,
                              .A = ws->A[l],
                              .ldd = n_out,
                              .lda = n_in,
                              .rows = rows,
                              .u = u,
                              .m = hi - lo,
                              .n = n_in,
                              .scale = scale[2 * l],
                              .acc = out ? NULL : acc + off + lo * n_in,
                              .out = out ? out + off + lo * n_in : NULL,
                              .carry = block,
                              .stream = stream,
                              .pack = block + block_reals(net)};
            bp__dw_fixed(&job);
#endif
            if (ready)
                ready(ctx, off + lo * n_in);
            hi = lo;
        }
    }
}
