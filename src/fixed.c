/* The fixed-point arithmetic of reproducible = any_scale (src/fixed.h). */
#include <math.h>
#include <string.h>

#include "fixed.h"

/* The conversions between double and int64 vectorise with AVX512DQ (VCVTTPD2QQ, VCVTQQ2PD),
 * which BP__VECTORIZE's clones lack (target_clones takes no avx512dq, and its arch= clones
 * match CPU models, not features): without it they ran one at a time, three times slower
 * (bench/any_scale_probe.c). Each loop is compiled twice and chosen by cpuid; every
 * version computes the same bits (exact products, rint in the current rounding mode, one
 * rounding back). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(BACKPROP_SANITIZE_BUILD)
#define FIXED_DQ __attribute__((target("avx512f,avx512dq,avx512vl")))
static int has_dq(void)
{
    static int dq = -1; /* the CPU's answer, the same every time */
    if (dq < 0) {
        __builtin_cpu_init();
        dq = __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    }
    return dq;
}
#else
#define FIXED_DQ
static int has_dq(void)
{
    return 0;
}
#endif

int bp__fixed_scales(const double *bound, size_t tensors, size_t micro_shards, double *scale)
{
    int v = 0; /* ceil(log2(micro_shards)) */
    while (((size_t)1 << v) < micro_shards)
        v++;
    for (size_t t = 0; t < tensors; t++) {
        if (!isfinite(bound[t]))
            return -1;
        int e = 0;
        if (bound[t] > 0)
            frexp(bound[t], &e); /* bound < 2^e */
        int s = 61 - v - e;
        s = s > 1000 ? 1000 : s < -1000 ? -1000 : s; /* 2^s and 2^-s stay doubles */
        scale[t] = ldexp(1, s);
    }
    return 0;
}

/* Exact: g * 2^s is a double product by a power of two. Rounded to the nearest integer
 * (rint, the current mode: to nearest even, as all the arithmetic assumes): the same
 * wherever the micro-shard was computed, and without truncation's bias toward zero. */
#define ADD_BODY                                                                                   \
    for (size_t i = 0; i < n; i++)                                                                 \
        acc[i] += (int64_t)rint((double)g[i] * scale);
#define SET_BODY                                                                                   \
    for (size_t i = 0; i < n; i++)                                                                 \
        acc[i] = (int64_t)rint((double)g[i] * scale);
FIXED_DQ static void add_dq(int64_t *restrict acc, const bp_real *restrict g, size_t n,
                            double scale)
{
    ADD_BODY;
}
static void add_plain(int64_t *restrict acc, const bp_real *restrict g, size_t n, double scale)
{
    ADD_BODY;
}
FIXED_DQ static void set_dq(int64_t *restrict acc, const bp_real *restrict g, size_t n,
                            double scale)
{
    SET_BODY;
}
static void set_plain(int64_t *restrict acc, const bp_real *restrict g, size_t n, double scale)
{
    SET_BODY;
}

void bp__fixed_add(int64_t *acc, const bp_real *g, size_t n, double scale, int first)
{
    if (first)
        (has_dq() ? set_dq : set_plain)(acc, g, n, scale);
    else
        (has_dq() ? add_dq : add_plain)(acc, g, n, scale);
}

/* (bp_real)acc rounds once; the power of two then scales it exactly (bar subnormals, where
 * the product rounds once). The sum of two vectors converted in the same pass: the node's
 * two ranks' buffers, never written out as int64 (they are summed exactly, so no order is
 * lost). With floats and an inverse that is a normal float, the product in float gives the
 * same bits (the exact product, rounded once where it is not a float) in fewer steps. */
#define REAL_BODY(ELEM, T, INV)                                                                    \
    for (size_t i = 0; i < n; i++)                                                                 \
        out[i] = (bp_real)((T)(bp_real)(ELEM) * (INV));
FIXED_DQ static void real_dq(bp_real *restrict out, const int64_t *restrict a, size_t n,
                             double inverse)
{
    REAL_BODY(a[i], double, inverse);
}
static void real_plain(bp_real *restrict out, const int64_t *restrict a, size_t n, double inverse)
{
    REAL_BODY(a[i], double, inverse);
}
FIXED_DQ static void real2_dq(bp_real *restrict out, const int64_t *restrict a,
                              const int64_t *restrict b, size_t n, double inverse)
{
    REAL_BODY(a[i] + b[i], double, inverse);
}
static void real2_plain(bp_real *restrict out, const int64_t *restrict a, const int64_t *restrict b,
                        size_t n, double inverse)
{
    REAL_BODY(a[i] + b[i], double, inverse);
}
#ifndef BACKPROP_DOUBLE
FIXED_DQ static void realf_dq(bp_real *restrict out, const int64_t *restrict a, size_t n,
                              float inverse)
{
    REAL_BODY(a[i], float, inverse);
}
FIXED_DQ static void realf2_dq(bp_real *restrict out, const int64_t *restrict a,
                               const int64_t *restrict b, size_t n, float inverse)
{
    REAL_BODY(a[i] + b[i], float, inverse);
}
#endif

/* One vector or two (b not NULL), converted at inverse. */
static void real_one(bp_real *out, const int64_t *a, const int64_t *b, size_t n, double inverse)
{
    int dq = has_dq();
#ifndef BACKPROP_DOUBLE
    if (dq && inverse >= 0x1p-126 && inverse <= 0x1p127) {
        if (b)
            realf2_dq(out, a, b, n, (float)inverse);
        else
            realf_dq(out, a, n, (float)inverse);
        return;
    }
#endif
    if (b)
        (dq ? real2_dq : real2_plain)(out, a, b, n, inverse);
    else
        (dq ? real_dq : real_plain)(out, a, n, inverse);
}

/* out[0 .. n) = the sum of v[0 .. k) from off, converted at 1 / inverse. */
static void to_real(bp_real *out, const int64_t *const *v, int k, size_t off, size_t n,
                    double inverse)
{
    if (k <= 2) {
        real_one(out, v[0] + off, k == 2 ? v[1] + off : NULL, n, inverse);
        return;
    }
    enum { BLOCK = 512 }; /* 4 KB of sums, in L1 while the rest are added */
    int64_t sum[BLOCK];
    for (size_t i = 0; i < n; i += BLOCK) {
        size_t len = n - i < BLOCK ? n - i : BLOCK;
        memcpy(sum, v[0] + off + i, len * sizeof(int64_t));
        for (int j = 1; j < k; j++) {
            const int64_t *x = v[j] + off + i;
            for (size_t e = 0; e < len; e++)
                sum[e] += x[e];
        }
        real_one(out + i, sum, NULL, len, inverse);
    }
}

/* Tensor t (2l: W_l, 2l + 1: b_l) of the net within [lo, hi): [*a, *e), empty outside. */
static void tensor_part(const bp_net *net, size_t t, size_t lo, size_t hi, size_t *a, size_t *e)
{
    int l = (int)(t / 2);
    size_t from = t % 2 ? bp_net_offset_b(net, l) : bp_net_offset_W(net, l);
    size_t to = t % 2 ? from + (size_t)net->sizes[l + 1] : bp_net_offset_b(net, l);
    *a = from > lo ? from : lo, *e = to < hi ? to : hi;
}

void bp__fixed_to_real(const bp_net *net, const int64_t *const *v, int k, const double *scale,
                       size_t lo, size_t hi, bp_real *out)
{
    for (size_t t = 0; t < BP__TENSORS(net); t++) {
        size_t a, e;
        tensor_part(net, t, lo, hi, &a, &e);
        if (a < e)
            to_real(out + a, v, k, a, e - a, 1 / scale[t]);
    }
}

#ifndef BACKPROP_DOUBLE
/* Two vectors to reals in one pass (a node of two ranks), each entry quantized and
 * converted back as above; in float where the scale and its inverse are normal floats
 * (the exact products, the same integers and the same rounding). */
#define FLOATS2_BODY(T, RINT, SC)                                                                  \
    for (size_t i = 0; i < n; i++) {                                                               \
        int64_t q = (int64_t)RINT((T)a[i] * (SC)) + (int64_t)RINT((T)b[i] * (SC));                 \
        out[i] = (bp_real)((T)(bp_real)q * (1 / (SC)));                                            \
    }
FIXED_DQ static void floats2_dq(bp_real *restrict out, const float *restrict a,
                                const float *restrict b, size_t n, double scale)
{
    FLOATS2_BODY(double, rint, scale);
}
FIXED_DQ static void floats2f_dq(bp_real *restrict out, const float *restrict a,
                                 const float *restrict b, size_t n, float scale)
{
    FLOATS2_BODY(float, rintf, scale);
}
static void floats2_plain(bp_real *restrict out, const float *restrict a, const float *restrict b,
                          size_t n, double scale)
{
    FLOATS2_BODY(double, rint, scale);
}

/* [a, e) of one tensor: in blocks whose int64 sums stay in L1 while each vector adds its
 * entries quantized. */
static void floats_tensor(const float *const *v, int k, double scale, size_t a, size_t e,
                          int64_t *sum, bp_real *real)
{
    if (k == 2 && !sum) {
        if (has_dq() && scale >= 0x1p-126 && scale <= 0x1p126)
            floats2f_dq(real + a, v[0] + a, v[1] + a, e - a, (float)scale);
        else
            (has_dq() ? floats2_dq : floats2_plain)(real + a, v[0] + a, v[1] + a, e - a, scale);
        return;
    }
    enum { BLOCK = 512 };
    int64_t q[BLOCK];
    for (size_t i = a; i < e; i += BLOCK) {
        size_t len = e - i < BLOCK ? e - i : BLOCK;
        for (int j = 0; j < k; j++)
            bp__fixed_add(q, v[j] + i, len, scale, j == 0);
        if (sum)
            memcpy(sum + i, q, len * sizeof(int64_t));
        else
            real_one(real + i, q, NULL, len, 1 / scale);
    }
}

void bp__fixed_floats(const bp_net *net, const float *const *v, int k, const double *scale,
                      size_t lo, size_t hi, int64_t *sum, bp_real *real)
{
    for (size_t t = 0; t < BP__TENSORS(net); t++) {
        size_t a, e;
        tensor_part(net, t, lo, hi, &a, &e);
        if (a < e)
            floats_tensor(v, k, scale[t], a, e, sum, real);
    }
}
#endif
