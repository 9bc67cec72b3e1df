/* What [train] reproducible = any_scale costs a rank's computation (issue 27), one thread,
 * the library's own products (src/net.c, src/blas.c), milliseconds per step:
 *   whole   today: one forward and backward pass over the rank's shard (B / ranks rows);
 *   naive   micro-shards of u rows, each a forward and backward pass of its own, and each
 *           micro-shard's whole gradient quantized and added to an int64 accumulator;
 *   fixed   the trainer's any_scale path (src/fixed.h): micro-shard forward and deltas, the
 *           bounds, then per row block of dW every micro-shard's product quantized into the
 *           block's int64 sum while it is in the cache, and the sum converted back.
 * ratio = whole / fixed: the rank's computation's speed against today's.
 * usage: bench-any-scale [SECONDS]; bench-any-scale phases: only the fixed path's phases
 * (W3 and W2 at 2 ranks, the 784-256-10 job at 32 rows), its weight gradient next to the
 * same sums made the BLAS way (a product per micro-shard, then quantized). Not a test. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blas.h"
#include "fixed.h"
#include "internal.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* acc += trunc(g * 2^s), per element: the trainer's own loop; s per tensor there. */
static void quantize_add(int64_t *acc, const bp_real *g, size_t n, double scale)
{
    bp__fixed_add(acc, g, n, scale, 0);
}

typedef struct {
    bp_net net;
    bp_workspace ws;
    bp_real *X, *Y, *grad;
    int64_t *acc;
    bp_real *block;
} rig;

static void fixed_step(rig *r, size_t rows, size_t u)
{
    double bound[64], scale[64];
    size_t T = BP__TENSORS(&r->net);
    bp__forward_micro(&r->net, &r->ws, r->X, rows, u);
    bp__deltas_micro(&r->net, &r->ws, r->Y, rows, u, bound);
    bp__fixed_scales(bound, T, (rows + u - 1) / u, scale);
    bp__grad_fixed(&r->net, &r->ws, rows, u, scale, r->acc, NULL, r->block, NULL, NULL);
    bp__fixed_to_real(&r->net, (const int64_t *const *)&r->acc, 1, scale, 0, r->net.nparams,
                      r->grad);
}

/* The weight gradient as before bp__dw_fixed: each micro-shard's product by the BLAS into
 * block, then quantized into the sum (the bias as in bp__grad_fixed). */
static void grad_blas(rig *r, size_t rows, size_t u, const double *scale)
{
    const bp_net *net = &r->net;
    for (int l = net->nlayers - 1; l >= 0; l--) {
        size_t n_in = (size_t)net->sizes[l], n_out = (size_t)net->sizes[l + 1];
        size_t off = bp_net_offset_W(net, l), step = bp__grad_block_rows(net, l);
        for (size_t r0 = 0; r0 < rows; r0 += u) {
            size_t n = rows - r0 < u ? rows - r0 : u;
            bp__gemv(CblasRowMajor, CblasTrans, (int)n, (int)n_out, 1, r->ws.D[l] + r0 * n_out,
                     (int)n_out, r->ws.ones, 1, 0, r->block, 1);
            bp__fixed_add(r->acc + bp_net_offset_b(net, l), r->block, n_out, scale[2 * l + 1],
                          r0 == 0);
        }
        for (size_t hi = n_out; hi > 0; hi = (hi - 1) / step * step) {
            size_t lo = (hi - 1) / step * step;
            for (size_t r0 = 0; r0 < rows; r0 += u) {
                size_t n = rows - r0 < u ? rows - r0 : u;
                bp__gemm(CblasTrans, CblasNoTrans, (int)(hi - lo), (int)n_in, (int)n, 1,
                         r->ws.D[l] + r0 * n_out + lo, (int)n_out, r->ws.A[l] + r0 * n_in,
                         (int)n_in, 0, r->block, (int)n_in);
                bp__fixed_add(r->acc + off + lo * n_in, r->block, (hi - lo) * n_in, scale[2 * l],
                              r0 == 0);
            }
        }
    }
}

/* One rank's step over `rows` rows in pieces of u rows (u = rows: today's whole shard);
 * quantize: each piece's gradient added to the int64 accumulator. */
/* The fixed path's phases at one shape, milliseconds per step (best of reps). */
static void phases(rig *r, size_t rows, size_t u)
{
    double bound[64], scale[64], best[5] = {1e30, 1e30, 1e30, 1e30, 1e30};
    size_t T = BP__TENSORS(&r->net);
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now();
        bp__forward_micro(&r->net, &r->ws, r->X, rows, u);
        double t1 = now();
        bp__deltas_micro(&r->net, &r->ws, r->Y, rows, u, bound);
        bp__fixed_scales(bound, T, (rows + u - 1) / u, scale);
        double t2 = now();
        bp__grad_fixed(&r->net, &r->ws, rows, u, scale, r->acc, NULL, r->block, NULL, NULL);
        double t3 = now();
        bp__fixed_to_real(&r->net, (const int64_t *const *)&r->acc, 1, scale, 0, r->net.nparams,
                          r->grad);
        double t4 = now();
        grad_blas(r, rows, u, scale);
        double t5 = now(), d[5] = {t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4};
        for (int i = 0; i < 5; i++)
            best[i] = d[i] < best[i] ? d[i] : best[i];
    }
    printf("      phases u=%zu: forward %.2f  deltas+bounds %.2f  dW+bias quantized %.2f  "
           "back to float %.2f ms (dW+bias the BLAS way %.2f)\n",
           u, best[0] * 1e3, best[1] * 1e3, best[2] * 1e3, best[3] * 1e3, best[4] * 1e3);
}

static void step(rig *r, size_t rows, size_t u, int quantize)
{
    if (quantize == 2) {
        fixed_step(r, rows, u);
        return;
    }
    size_t d = (size_t)r->net.sizes[0], k = (size_t)r->net.sizes[r->net.nlayers];
    for (size_t at = 0; at < rows; at += u) {
        size_t n = rows - at < u ? rows - at : u;
        bp_forward(&r->net, &r->ws, r->X + at * d, n);
        bp__backward_ready(&r->net, &r->ws, r->Y + at * k, n, r->grad, 0, NULL, NULL);
        if (quantize)
            quantize_add(r->acc, r->grad, r->net.nparams, 0x1p40);
    }
}

static double time_step(rig *r, size_t rows, size_t u, int quantize, double seconds)
{
    double best = 1e30;
    for (int round = 0; round < 3; round++) {
        long reps = 0;
        double start = now(), t;
        do {
            step(r, rows, u, quantize);
            reps++;
        } while ((t = now() - start) < seconds / 3);
        if (round > 0 && t / (double)reps < best)
            best = t / (double)reps;
    }
    return best * 1e3;
}

/* phases_rows > 0: only the phases at that many rows, for u from 16 up to the rows. */
static void workload(const char *name, const int *sizes, int nsizes, size_t B, double seconds,
                     size_t phases_rows)
{
    rig r = {0};
    bp_rng rng;
    bp_rng_seed(&rng, 1);
    if (bp_net_create(&r.net, nsizes, sizes, BP_RELU, BP_SOFTMAX, BP_CROSS_ENTROPY) < 0 ||
        bp_workspace_create(&r.ws, &r.net, B) < 0)
        exit(1);
    bp_net_init(&r.net, BP_INIT_GAUSSIAN_SCALED, 0, &rng);
    size_t d = (size_t)sizes[0], k = (size_t)sizes[nsizes - 1];
    r.X = calloc(B * d, sizeof(bp_real));
    r.Y = calloc(B * k, sizeof(bp_real));
    r.grad = calloc(r.net.nparams, sizeof(bp_real));
    r.acc = calloc(r.net.nparams, sizeof(int64_t));
    r.block = calloc(bp__fixed_block_reals(&r.net), sizeof(bp_real));
    for (size_t i = 0; i < B * d; i++)
        r.X[i] = (bp_real)bp_rng_uniform(&rng);
    for (size_t i = 0; i < B; i++)
        r.Y[i * k + i % k] = 1;
    for (size_t u = 16; phases_rows && u <= phases_rows; u *= 2) {
        if (u == 16)
            printf("%s, %zu rows:\n", name, phases_rows);
        phases(&r, phases_rows, u);
    }
    for (size_t u = 16; phases_rows && u <= phases_rows; u *= 2) /* the other way round */
        phases(&r, phases_rows, u);
    double q0 = now();
    for (int i = 0; i < 20; i++)
        quantize_add(r.acc, r.grad, r.net.nparams, 0x1p40);
    printf("%s: %zu params, quantize+accumulate pass %.3f ms\n", name, r.net.nparams,
           (now() - q0) / 20 * 1e3);
    for (int ranks = 1; !phases_rows && ranks <= 2; ranks++) {
        size_t rows = B / (size_t)ranks;
        double whole = time_step(&r, rows, rows, 0, seconds);
        printf("  %d rank(s), shard %zu rows: whole %.2f ms\n", ranks, rows, whole);
        for (size_t u = 16; u <= 128 && u < rows; u *= 2) {
            double naive = time_step(&r, rows, u, 1, seconds);
            double fixed = time_step(&r, rows, u, 2, seconds);
            printf("    u=%-3zu naive %7.2f ms  fixed %7.2f ms  ratio %.3f\n", u, naive, fixed,
                   whole / fixed);
            if (ranks == 2)
                phases(&r, rows, u);
            fflush(stdout);
        }
    }
    bp_workspace_free(&r.ws);
    bp_net_free(&r.net);
    free(r.X), free(r.Y), free(r.grad), free(r.acc), free(r.block);
}

int main(int argc, char **argv)
{
    int only = argc > 1 && strcmp(argv[1], "phases") == 0;
    double seconds = argc > 1 && !only ? atof(argv[1]) : 3;
    bp__set_blas_threads(1);
    static const int w1[] = {784, 256, 10}, w2[] = {784, 256, 256, 10},
                     w3[] = {784, 2048, 2048, 10};
    if (only)
        workload("784-256-10", w1, 3, 64, seconds, 32);
    workload("W2 784-256-256-10 batch 128", w2, 4, 128, seconds, only ? 64 : 0);
    workload("W3 784-2048-2048-10 batch 256", w3, 4, 256, seconds, only ? 128 : 0);
    return 0;
}
