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
FIXED_DQ static void add_dq(int64_t *restrict acc, const bp_real *restrict g, size_t n,
                            double scale)
{
    ADD_BODY
}
static void add_plain(int64_t *restrict acc, const bp_real *restrict g, size_t n,
                      double scale){ADD_BODY}

#define SET_BODY                                                                                   \
    for (size_t i = 0; i < n; i++)                                                                 \
        acc[i] = (int64_t)rint((double)g[i] * scale);
FIXED_DQ
    static void set_dq(int64_t *restrict acc, const bp_real *restrict g, size_t n, double scale)
{
    SET_BODY
}
static void set_plain(int64_t *restrict acc, const bp_real *restrict g, size_t n, double scale)
{
    SET_BODY
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
#define REAL_BODY(ELEM, MUL, INV)                                                                  \
    for (size_t i = 0; i < n; i++)                                                                 \
        out[i] = (bp_real)((MUL)(bp_real)(ELEM) * (INV));
#define REAL_FNS(NAME, ATTR, MUL, INV_T)                                                           \
    ATTR static void NAME(bp_real *restrict out, const int64_t *restrict a, size_t n,              \
                          INV_T inverse){                                                          \
        REAL_BODY(a[i], MUL, inverse)} ATTR static void NAME##2(bp_real *restrict out,             \
                                                                const int64_t *restrict a,         \
                                                                const int64_t *restrict b,         \
                                                                size_t n, INV_T inverse)           \
    {                                                                                              \
        REAL_BODY(a[i] + b[i], MUL, inverse)                                                       \
    }
REAL_FNS(real_dq, FIXED_DQ, double, double)
REAL_FNS(real_plain, , double, double)
#ifndef BACKPROP_DOUBLE
REAL_FNS(realf_dq, FIXED_DQ, float, float)
#endif

/* One vector or two, converted at inverse. */
static void real_one(bp_real *out, const int64_t *a, const int64_t *b, size_t n, double inverse)
{
    int dq = has_dq();
#ifndef BACKPROP_DOUBLE
    if (dq && inverse >= 0x1p-126 && inverse <= 0x1p127) {
        if (b)
            realf_dq2(out, a, b, n, (float)inverse);
        else
            realf_dq(out, a, n, (float)inverse);
        return;
    }
#endif
    if (b)
        (dq ? real_dq2 : real_plain2)(out, a, b, n, inverse);
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

/* [lo, hi) of tensor [a, b) at scale */
static void convert(const int64_t *const *v, int k, double scale, size_t a, size_t b, size_t lo,
                    size_t hi, bp_real *out)
{
    a = a > lo ? a : lo, b = b < hi ? b : hi;
    if (a < b)
        to_real(out + a, v, k, a, b - a, 1 / scale);
}

void bp__fixed_to_real(const bp_net *net, const int64_t *const *v, int k, const double *scale,
                       size_t lo, size_t hi, bp_real *out)
{
    for (int l = 0; l < net->nlayers; l++) {
        size_t w = bp_net_offset_W(net, l), b = bp_net_offset_b(net, l);
        convert(v, k, scale[2 * l], w, b, lo, hi, out);
        convert(v, k, scale[2 * l + 1], b, b + (size_t)net->sizes[l + 1], lo, hi, out);
    }
}

#ifndef BACKPROP_DOUBLE
/* Two vectors to reals in one pass (a node of two ranks), each entry quantized and
 * converted back as above; in float where the scale and its inverse are normal floats
 * (the exact products, the same integers and the same rounding). */
#define FLOATS2_BODY(T, RINT, SC, INV)                                                             \
    for (size_t i = 0; i < n; i++) {                                                               \
        int64_t q = (int64_t)RINT((T)a[i] * (SC)) + (int64_t)RINT((T)b[i] * (SC));                 \
        out[i] = (bp_real)((T)(bp_real)q * (INV));                                                 \
    }
FIXED_DQ static void floats2_dq(bp_real *restrict out, const float *restrict a,
                                const float *restrict b, size_t n,
                                double scale){FLOATS2_BODY(double, rint, scale, 1 / scale)} FIXED_DQ
    static void floats2f_dq(bp_real *restrict out, const float *restrict a, const float *restrict b,
                            size_t n, float scale)
{
    FLOATS2_BODY(float, rintf, scale, 1 / scale)
}
static void floats2_plain(bp_real *restrict out, const float *restrict a, const float *restrict b,
                          size_t n, double scale)
{
    FLOATS2_BODY(double, rint, scale, 1 / scale)
}

/* [a, b) of one tensor: in blocks whose int64 sums stay in L1 while each vector adds its
 * entries quantized. */
static void floats_tensor(const float *const *v, int k, double scale, size_t a, size_t b,
                          int64_t *sum, bp_real *real)
{
    if (k == 2 && !sum) {
        if (has_dq() && scale >= 0x1p-126 && scale <= 0x1p126)
            floats2f_dq(real + a, v[0] + a, v[1] + a, b - a, (float)scale);
        else
            (has_dq() ? floats2_dq : floats2_plain)(real + a, v[0] + a, v[1] + a, b - a, scale);
        return;
    }
    enum { BLOCK = 512 };
    int64_t q[BLOCK];
    for (size_t i = a; i < b; i += BLOCK) {
        size_t len = b - i < BLOCK ? b - i : BLOCK;
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
    for (int l = 0; l < net->nlayers; l++) {
        size_t w = bp_net_offset_W(net, l), b = bp_net_offset_b(net, l);
        size_t ends[3] = {w, b, b + (size_t)net->sizes[l + 1]};
        for (int t = 0; t < 2; t++) {
            size_t a = ends[t] > lo ? ends[t] : lo, e = ends[t + 1] < hi ? ends[t + 1] : hi;
            if (a < e)
                floats_tensor(v, k, scale[2 * l + t], a, e, sum, real);
        }
    }
}
#endif
