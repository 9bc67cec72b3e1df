/* The fixed-point arithmetic of reproducible = any_scale (src/fixed.h): the fused weight
 * gradient against its definition written out as a loop, on every path the CPU has; the
 * scales; the conversions to and from int64. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fixed.h"

/* The definition (src/fixed.h): per micro-shard, per entry, one fmaf per row in row order
 * from 0, then rint(s * scale), stored by the first micro-shard and added by the others. */
static void reference(int64_t *acc, const float *D, size_t ldd, const float *A, size_t lda,
                      size_t rows, size_t u, size_t m, size_t n, double scale)
{
    for (size_t r0 = 0; r0 < rows; r0 += u)
        for (size_t a = 0; a < m; a++)
            for (size_t b = 0; b < n; b++) {
                float s = 0;
                for (size_t r = r0; r < rows && r < r0 + u; r++)
                    s = fmaf(D[r * ldd + a], A[r * lda + b], s);
                int64_t q = (int64_t)rint((double)s * scale);
                acc[a * n + b] = (r0 == 0 ? 0 : acc[a * n + b]) + q;
            }
}

static uint64_t next(uint64_t *x)
{
    *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
    return *x;
}

/* Signed values with exponents over 2^-20 .. 2^20, one in eight zero. */
static void fill(float *v, size_t count, uint64_t *x)
{
    for (size_t i = 0; i < count; i++) {
        uint64_t r = next(x);
        float mant = (float)(r >> 40) * 0x1p-24f; /* [0, 1) */
        int e = (int)((r >> 8) % 41) - 20;
        v[i] = r % 8 == 0 ? 0 : ldexpf((r & 16) ? -mant : mant, e);
    }
}

static double abs_max(const float *v, size_t count, size_t stride)
{
    double m = 0;
    for (size_t i = 0; i < count; i++)
        m = fabs((double)v[i * stride]) > m ? fabs((double)v[i * stride]) : m;
    return m;
}

/* The trainer's scale for these rows: its bound on any micro-shard's entry. */
static double scale_for(const float *D, size_t ldd, const float *A, size_t lda, size_t rows,
                        size_t u, size_t m, size_t n)
{
    double bound = 0, scale;
    for (size_t r0 = 0; r0 < rows; r0 += u) {
        double b = 0;
        for (size_t r = r0; r < rows && r < r0 + u; r++)
            b += abs_max(D + r * ldd, m, 1) * abs_max(A + r * lda, n, 1);
        bound = b > bound ? b : bound;
    }
    assert_int_equal(bp__fixed_scales(&bound, 1, (rows + u - 1) / u, &scale), 0);
    return scale;
}

typedef struct {
    size_t m, n, rows, u;
} shape;

/* Tiles cut at every edge; micro-shards of one row, of odd lengths, with a short last one,
 * longer than the kernel's chunk of rows (split, 300 and 700 rows), one shard only. */
static const shape shapes[] = {
    {1, 1, 1, 1},   {13, 37, 50, 7},    {6, 64, 128, 64},   {25, 129, 64, 64},   {100, 17, 33, 5},
    {7, 200, 9, 1}, {11, 70, 700, 300}, {50, 33, 257, 257}, {97, 150, 130, 128},
};

/* Every path the CPU has, and the dispatch, against the reference: the same int64s. The
 * accumulator starts as garbage (the first micro-shard stores). D and A scaled by 2^-shift:
 * at 60, the scale is no float (2^130 and more) and the kernel scales in double. */
static void check_shape(const shape *s, uint64_t seed, int shift)
{
    size_t ldd = s->m + 3, lda = s->n + 5, mn = s->m * s->n;
    float *D = calloc(s->rows * ldd, sizeof(float)), *A = calloc(s->rows * lda, sizeof(float));
    float *carry = calloc(mn, sizeof(float)), *pack = malloc(bp__dw_pack_floats() * sizeof(float));
    int64_t *want = calloc(mn, sizeof(int64_t)), *got = calloc(mn, sizeof(int64_t));
    assert_true(D && A && carry && pack && want && got);
    fill(D, s->rows * ldd, &seed);
    fill(A, s->rows * lda, &seed);
    for (size_t i = 0; i < s->rows * ldd; i++)
        D[i] = ldexpf(D[i], -shift);
    for (size_t i = 0; i < s->rows * lda; i++)
        A[i] = ldexpf(A[i], -shift);
    /* the kernel sees columns 2 .. of D and 1 .. of A, strided */
    const float *Dv = D + 2, *Av = A + 1;
    double scale = scale_for(Dv, ldd, Av, lda, s->rows, s->u, s->m, s->n);
    assert_true(shift ? scale > 0x1p127 : scale < 0x1p127);
    reference(want, Dv, ldd, Av, lda, s->rows, s->u, s->m, s->n, scale);
    int64_t big = 0;
    for (size_t i = 0; i < mn; i++)
        big = llabs(want[i]) > big ? llabs(want[i]) : big;
    assert_true(big > ((int64_t)1 << 52)); /* the int64's high half is in play */
    bp__dw_job job = {Dv,   Av,    ldd, lda,   s->rows, s->u, s->m,
                      s->n, scale, got, carry, 0,       pack, NULL};
    for (int path = 0; path <= BP__DW_PATHS; path++) {
        if (path < BP__DW_PATHS && !bp__dw_fixed_has(path))
            continue;
        for (job.stream = 0; job.stream < 2; job.stream++) {
            memset(got, 0x55, mn * sizeof(int64_t));
            if (path == BP__DW_PATHS)
                bp__dw_fixed(&job);
            else
                bp__dw_fixed_on(path, &job);
            for (size_t i = 0; i < mn; i++)
                if (got[i] != want[i])
                    fail_msg("path %d stream %d, %zux%zu rows %zu u %zu: [%zu] %lld, want %lld",
                             path, job.stream, s->m, s->n, s->rows, s->u, i, (long long)got[i],
                             (long long)want[i]);
        }
    }
    /* One micro-shard: the float sums themselves, unscaled, the same bits on every path
     * (rint(s * scale) of them is what was checked above). */
    if (s->rows <= s->u) {
        float *sums = malloc(mn * sizeof(float)), *out = malloc(mn * sizeof(float));
        assert_true(sums && out);
        for (size_t a = 0; a < s->m; a++)
            for (size_t b = 0; b < s->n; b++) {
                float f = 0;
                for (size_t r = 0; r < s->rows; r++)
                    f = fmaf(Dv[r * ldd + a], Av[r * lda + b], f);
                sums[a * s->n + b] = f;
                assert_true((int64_t)rint((double)f * scale) == want[a * s->n + b]);
            }
        bp__dw_job fl = job;
        fl.acc = NULL, fl.out = out;
        for (int path = 0; path <= BP__DW_PATHS; path++) {
            if (path < BP__DW_PATHS && !bp__dw_fixed_has(path))
                continue;
            memset(out, 0xff, mn * sizeof(float)); /* NaNs */
            if (path == BP__DW_PATHS)
                bp__dw_fixed(&fl);
            else
                bp__dw_fixed_on(path, &fl);
            for (size_t i = 0; i < mn; i++)
                if (memcmp(&out[i], &sums[i], sizeof(float)))
                    fail_msg("path %d floats, %zux%zu rows %zu: [%zu] %a, want %a", path, s->m,
                             s->n, s->rows, i, (double)out[i], (double)sums[i]);
        }
        free(sums), free(out);
    }
    free(D), free(A), free(carry), free(pack), free(want), free(got);
}

static void test_dw_fixed_matches_definition(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        check_shape(&shapes[i], 0x9e3779b97f4a7c15ull + i, 0);
        check_shape(&shapes[i], 0x9e3779b97f4a7c15ull + i, 60);
    }
}

/* One entry over three rows where the order and the fused product each change the sum:
 * in order 2^24 + 1 rounds to 2^24 (ties to even) and the sum ends at 0, backwards it ends
 * at 1; and -1 + (1 + 2^-12)^2 is 2^-11 + 2^-24 fused, 2^-11 with the product rounded. */
static void test_dw_fixed_order_and_fma(void **state)
{
    (void)state;
    const float D1[3] = {1, 1, 1}, A1[3] = {0x1p24f, 1, -0x1p24f};
    const float c = 1 + 0x1p-12f, D2[2] = {-1, c}, A2[2] = {1, c};
    float carry[1], *pack = malloc(bp__dw_pack_floats() * sizeof(float));
    assert_non_null(pack);
    for (int path = 0; path < BP__DW_PATHS; path++) {
        if (!bp__dw_fixed_has(path))
            continue;
        int64_t acc = 7;
        bp__dw_job order = {D1, A1, 1, 1, 3, 3, 1, 1, 0x1p30, &acc, carry, 0, pack, NULL};
        bp__dw_fixed_on(path, &order);
        assert_int_equal(acc, 0);
        bp__dw_job fused = {D2, A2, 1, 1, 2, 2, 1, 1, 0x1p30, &acc, carry, 0, pack, NULL};
        bp__dw_fixed_on(path, &fused);
        assert_int_equal(acc, ((int64_t)1 << 19) + 64);
        /* the same rows as three micro-shards of one: each sum alone, then added */
        bp__dw_job apart = {D1, A1, 1, 1, 3, 1, 1, 1, 1, &acc, carry, 0, pack, NULL};
        bp__dw_fixed_on(path, &apart);
        assert_int_equal(acc, 1);
    }
    free(pack);
}

/* 2^s, s the largest with micro_shards * bound * 2^s < 2^61. */
static void test_fixed_scales(void **state)
{
    (void)state;
    double bound[3] = {3, 0, 4}, scale[3];
    assert_int_equal(bp__fixed_scales(bound, 3, 4, scale), 0);
    assert_true(scale[0] == 0x1p57); /* 4 * 3 * 2^57 = 1.5 * 2^60 */
    assert_true(scale[1] == 0x1p59);
    assert_true(scale[2] == 0x1p56); /* 4 * 4 * 2^56 = 2^60; 2^57 would reach 2^61 */
    assert_int_equal(bp__fixed_scales(bound, 3, 5, scale), 0);
    assert_true(scale[0] == 0x1p56);
    bound[1] = INFINITY;
    assert_int_equal(bp__fixed_scales(bound, 3, 4, scale), -1);
    bound[1] = NAN;
    assert_int_equal(bp__fixed_scales(bound, 3, 4, scale), -1);
}

/* Rounding to nearest, ties to even, negatives alike (no bias toward zero); the first call
 * stores; long enough for the vector loops. */
static void test_fixed_add(void **state)
{
    (void)state;
    enum { N = 100 };
    bp_real g[N];
    int64_t acc[N];
    for (int i = 0; i < N; i++)
        g[i] = (bp_real)((i % 2 ? -1 : 1) * (i + 0.75));
    memset(acc, 0x55, sizeof(acc));
    bp__fixed_add(acc, g, N, 2, 1);
    for (int i = 0; i < N; i++) /* rint(+-(2i + 1.5)) = +-(2i + 2), the even one */
        assert_int_equal(acc[i], (i % 2 ? -1 : 1) * (2 * i + 2));
    bp__fixed_add(acc, g, N, 1, 0);
    for (int i = 0; i < N; i++) /* + rint(+-(i + 0.75)) = +-(i + 1) */
        assert_int_equal(acc[i], (i % 2 ? -1 : 1) * (3 * i + 3));
    bp_real ties[4] = {(bp_real)0.5, (bp_real)-0.5, (bp_real)2.5, (bp_real)-0.25};
    int64_t got[4], want[4] = {0, 0, 2, 0};
    bp__fixed_add(got, ties, 4, 1, 1);
    for (int i = 0; i < 4; i++)
        assert_int_equal(got[i], want[i]);
    bp_real most = (bp_real)-0.75;
    int64_t one = 5;
    bp__fixed_add(&one, &most, 1, 1, 1);
    assert_int_equal(one, -1);
}

/* acc / scale per tensor, only [lo, hi) written. */
static void test_fixed_to_real(void **state)
{
    (void)state;
    bp_net net;
    int sizes[2] = {2, 1};
    assert_int_equal(bp_net_create(&net, 2, sizes, BP_SIGMOID, BP_SIGMOID, BP_QUADRATIC), 0);
    assert_int_equal(net.nparams, 3);
    const int64_t acc[3] = {-6, 5, 3};
    const int64_t *v = acc;
    const double scale[2] = {4, 2}; /* W, then b */
    bp_real out[3] = {9, 9, 9};
    bp__fixed_to_real(&net, &v, 1, scale, 1, 3, out);
    assert_true(out[0] == 9 && out[1] == (bp_real)1.25 && out[2] == (bp_real)1.5);
    bp__fixed_to_real(&net, &v, 1, scale, 0, 3, out);
    assert_true(out[0] == (bp_real)-1.5);
    bp_net_free(&net);
}

/* Several vectors: their exact int64 sum converted, once, as the definition says ((bp_real)
 * of the sum, times the inverse of its scale, rounded once); one vector, two (the fused
 * pass) and more (summed in blocks), across the blocks' edges; at scales whose inverses
 * are floats, and at ones whose are not (results below float's normal range, and above
 * its largest). Each vector's reals added would lose the small part: 2^60 + i is no
 * bp_real. */
static void test_fixed_to_real_sums(void **state)
{
    (void)state;
    bp_net net;
    int sizes[2] = {40, 30}; /* 1230 parameters: more than one block of sums */
    assert_int_equal(bp_net_create(&net, 2, sizes, BP_SIGMOID, BP_SIGMOID, BP_QUADRATIC), 0);
    size_t n = net.nparams, nW = 40 * 30;
    int64_t *part[3], *sum = calloc(n, sizeof(int64_t));
    for (int j = 0; j < 3; j++)
        part[j] = calloc(n, sizeof(int64_t));
    bp_real *want = calloc(n, sizeof(bp_real)), *got = calloc(n, sizeof(bp_real));
    assert_non_null(sum && part[0] && part[1] && part[2] && want && got);
    for (size_t i = 0; i < n; i++) {
        part[0][i] = ((int64_t)1 << 60) + (int64_t)i;
        part[1][i] = -((int64_t)1 << 60) + 3 * (int64_t)i - 7;
        part[2][i] = (int64_t)(i % 5) - 2 + (i % 7 == 0 ? ((int64_t)1 << 61) : 0);
    }
    const double scales[3][2] = {{0x1p20, 0x1p-3}, {0x1p200, 0x1p-140}, {0x1p126, 0x1p-127}};
    for (int sc = 0; sc < 3; sc++)
        for (int k = 1; k <= 3; k++) {
            for (size_t i = 0; i < n; i++) {
                sum[i] = part[0][i] + (k > 1 ? part[1][i] : 0) + (k > 2 ? part[2][i] : 0);
                double inverse = 1 / scales[sc][i < nW ? 0 : 1];
                want[i] = (bp_real)((double)(bp_real)sum[i] * inverse);
            }
            memset(got, 0, n * sizeof(bp_real));
            bp__fixed_to_real(&net, (const int64_t *const *)part, k, scales[sc], 3, n - 5, got);
            for (size_t i = 0; i < n; i++)
                if (i < 3 || i >= n - 5 ? got[i] != 0 : memcmp(&got[i], &want[i], sizeof(bp_real)))
                    fail_msg("scales %d, %d vectors: [%zu] %a, want %a", sc, k, i, (double)got[i],
                             (double)want[i]);
        }
    assert_true(want[1000] == (bp_real)((double)(4000 - 7 - 2) * 0x1p-126)); /* at sc 2, k 3 */
    for (int j = 0; j < 3; j++)
        free(part[j]);
    free(sum), free(want), free(got);
    bp_net_free(&net);
}

#ifndef BACKPROP_DOUBLE
/* Micro-shards' float gradients, quantized and summed exactly: the int64s bp__fixed_add
 * would sum (rint(g * scale), ties to even: 3.5 -> 4, 0.5 -> 0), and the reals
 * bp__fixed_to_real would make of them; one, two (one pass) and three vectors, scales whose
 * inverses are floats (up to the edges of float's normal range) and ones whose are not (the
 * gradients scaled to fit them), only [lo, hi) written. */
static void test_fixed_floats(void **state)
{
    (void)state;
    bp_net net;
    int sizes[2] = {40, 30};
    assert_int_equal(bp_net_create(&net, 2, sizes, BP_SIGMOID, BP_SIGMOID, BP_QUADRATIC), 0);
    size_t n = net.nparams, nW = 40 * 30;
    float *base[3], *g[3];
    int64_t *want_q = calloc(n, sizeof(int64_t)), *got_q = calloc(n, sizeof(int64_t));
    bp_real *want = calloc(n, sizeof(bp_real)), *got = calloc(n, sizeof(bp_real));
    uint64_t seed = 42;
    for (int j = 0; j < 3; j++) {
        base[j] = calloc(n, sizeof(float)), g[j] = calloc(n, sizeof(float));
        assert_true(base[j] && g[j]);
        fill(base[j], n, &seed); /* below 2^20 */
    }
    assert_true(want_q && got_q && want && got);
    base[0][7] = 3.5f * 0x1p-20f, base[1][7] = 0.5f * 0x1p-20f; /* at 2^20: 4 and 0 */
    /* W's scale and b's, and the powers of two the gradients are scaled by: below 2^61 */
    const struct {
        double scale[2];
        int shift[2];
    } cases[3] = {{{0x1p20, 0x1p30}, {0, 0}},
                  {{0x1p140, 0x1p127}, {-100, -87}},
                  {{0x1p126, 0x1p-126}, {-86, 106}}};
    for (int sc = 0; sc < 3; sc++)
        for (int k = 1; k <= 3; k++) {
            for (size_t i = 0; i < n; i++) {
                int t = i < nW ? 0 : 1;
                double scale = cases[sc].scale[t];
                want_q[i] = 0;
                for (int j = 0; j < k; j++) {
                    g[j][i] = ldexpf(base[j][i], cases[sc].shift[t]);
                    want_q[i] += (int64_t)rint((double)g[j][i] * scale);
                }
                want[i] = (bp_real)((double)(bp_real)want_q[i] / scale);
            }
            if (sc == 0 && k <= 2)
                assert_int_equal(want_q[7], 4);
            memset(got, 0, n * sizeof(bp_real));
            memset(got_q, 0, n * sizeof(int64_t));
            bp__fixed_floats(&net, (const float *const *)g, k, cases[sc].scale, 3, n - 5, NULL,
                             got);
            bp__fixed_floats(&net, (const float *const *)g, k, cases[sc].scale, 3, n - 5, got_q,
                             NULL);
            size_t nonzero = 0;
            for (size_t i = 0; i < n; i++) {
                int out = i < 3 || i >= n - 5;
                if (out ? got[i] != 0 : memcmp(&got[i], &want[i], sizeof(bp_real)))
                    fail_msg("case %d, %d vectors: [%zu] %a, want %a", sc, k, i, (double)got[i],
                             (double)want[i]);
                if (got_q[i] != (out ? 0 : want_q[i]))
                    fail_msg("case %d, %d vectors: [%zu] %lld, want %lld", sc, k, i,
                             (long long)got_q[i], (long long)want_q[i]);
                nonzero += got_q[i] != 0;
            }
            if (nonzero < n / 2) /* the scales leave them something to round */
                fail_msg("case %d, %d vectors: %zu of %zu not zero", sc, k, nonzero, n);
        }
    for (int j = 0; j < 3; j++)
        free(base[j]), free(g[j]);
    free(want_q), free(got_q), free(want), free(got);
    bp_net_free(&net);
}
#endif

/* The bounds of bp__deltas_micro on a 1-1 linear net (dW = (a - y) a with a = x, b = 1,
 * so the bound is x^2 here): finite while a float sum cannot overflow, infinite (the step
 * diverged) from there on in the float build, where an entry past float's range would
 * otherwise reach the sum as whatever integer its path makes of inf. */
static void test_bounds_past_float(void **state)
{
    (void)state;
    bp_net net;
    bp_workspace ws;
    int sizes[2] = {1, 1};
    assert_int_equal(bp_net_create(&net, 2, sizes, BP_LINEAR, BP_LINEAR, BP_QUADRATIC), 0);
    assert_int_equal(bp_workspace_create(&ws, &net, 1), 0);
    net.W[0][0] = 1, net.b[0][0] = 0;
    const bp_real y = 0;
    const double xs[2] = {0x1p60, 0x1p64}; /* dW 2^120; 2^128, past float's largest */
    for (int i = 0; i < 2; i++) {
        bp_real x = (bp_real)xs[i];
        double bound[2];
        bp__forward_micro(&net, &ws, &x, 1, 1);
        bp__deltas_micro(&net, &ws, &y, 1, 1, bound);
#ifdef BACKPROP_DOUBLE
        assert_true(bound[0] == xs[i] * xs[i]);
#else
        assert_true(i == 0 ? bound[0] == 0x1p120 : bound[0] == INFINITY);
        assert_true(i == 0 ? bound[1] == 0x1p60 : bound[1] == INFINITY);
#endif
    }
    bp_workspace_free(&ws);
    bp_net_free(&net);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dw_fixed_matches_definition),
        cmocka_unit_test(test_dw_fixed_order_and_fma),
        cmocka_unit_test(test_fixed_scales),
        cmocka_unit_test(test_fixed_add),
        cmocka_unit_test(test_fixed_to_real),
        cmocka_unit_test(test_fixed_to_real_sums),
        cmocka_unit_test(test_bounds_past_float),
#ifndef BACKPROP_DOUBLE
        cmocka_unit_test(test_fixed_floats),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
