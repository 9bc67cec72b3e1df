/* The weight gradient of reproducible = any_scale in one pass (src/fixed.h): each
 * micro-shard's float product summed in registers in row order, converted there to int64
 * fixed point and added to the sum, never written out as floats. The order of every sum is
 * fixed (one fmaf per row, first row first), so the path taken (AVX-512, AVX2, plain C)
 * and the BLAS library do not change a bit.
 *
 * Blocking: rows in chunks of whole micro-shards (at most CHUNK rows, a micro-shard longer
 * than that in pieces), W's rows in blocks of MC (W3's blocks of 128 rows in one); per chunk
 * and block, D's columns and then A's, one panel of NR columns at a time, copied next to
 * each other (a panel of A read at its row stride would fall in one set of the L1 cache),
 * zero padded to whole tiles; both copies live on the stack (about 210 KB). A tile of
 * MR x NR sums stays in registers over a micro-shard's rows; the tile's int64 sum stays in
 * L1 while every micro-shard of the chunk adds to it, then goes to acc in one pass. */
#include <math.h>
#include <string.h>

#include "fixed.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(BACKPROP_SANITIZE_BUILD)
#define DW_SIMD 1
#include <immintrin.h>
#define AVX512 __attribute__((target("avx512f,avx512dq")))
#define AVX2 __attribute__((target("avx2,fma")))
#else
#define DW_SIMD 0
#endif

#define MR 6         /* rows of W per tile (broadcast from D) */
#define NR_MAX 64    /* columns per tile, at most */
#define CHUNK 256    /* rows of the batch per chunk */
#define MC (25 * MR) /* rows of W per packed block of D */

/* One tile's work: k rows of packed D (k x MR) and A (k x nr_pad) from a start of zero or
 * of the floats carried in `in`; at the end the floats go to `out` when the micro-shard
 * goes on in the next chunk, else rint(s * scale) is stored (first) or added to acc: the
 * tile's own sum (MR x NR_MAX), in L1 while every micro-shard of the chunk adds to it, or,
 * where one micro-shard is all the chunk holds, the weight gradient itself (acc_ld = n). */
typedef struct {
    const float *in;
    float *out;
    int64_t *acc;
    size_t ld, mr, nr; /* ld: of in and out; mr x nr: the part of the tile inside W */
    size_t acc_ld;     /* acc's row stride: NR_MAX (the tile's sum) or n (W's) */
    double scale;
    float fscale; /* scale as a float where it is a normal one, else 0 */
    int first;
} tile_io;

typedef void tile_fn(const float *Dp, const float *Ap, size_t k, const tile_io *io);

/* acc (row stride ld) += or = the tile's sum t, mr x nr of it; STREAM: acc is larger than
 * the caches, stored without reading it first where the path can. */
enum { ADD, STORE, STREAM };
typedef void flush_fn(int64_t *acc, size_t ld, const int64_t *t, size_t mr, size_t nr, int store);

/* Plain C: the definition itself. */
static void tile_plain(const float *Dp, const float *Ap, size_t k, const tile_io *io)
{
    float c[MR][NR_MAX] = {{0}};
    for (size_t i = 0; i < io->mr; i++)
        for (size_t j = 0; io->in && j < io->nr; j++)
            c[i][j] = io->in[i * io->ld + j];
    for (size_t r = 0; r < k; r++)
        for (size_t i = 0; i < MR; i++)
            for (size_t j = 0; j < NR_MAX; j++)
                c[i][j] = fmaf(Dp[r * MR + i], Ap[r * NR_MAX + j], c[i][j]);
    for (size_t i = 0; i < io->mr; i++)
        for (size_t j = 0; j < io->nr; j++) {
            size_t at = i * io->acc_ld + j;
            if (io->out)
                io->out[i * io->ld + j] = c[i][j];
            else
                io->acc[at] =
                    (io->first ? 0 : io->acc[at]) + (int64_t)rint((double)c[i][j] * io->scale);
        }
}

static void flush_plain(int64_t *acc, size_t ld, const int64_t *t, size_t mr, size_t nr, int store)
{
    for (size_t i = 0; i < mr; i++)
        for (size_t j = 0; j < nr; j++)
            acc[i * ld + j] = (store ? 0 : acc[i * ld + j]) + t[i * NR_MAX + j];
}

#if DW_SIMD
/* AVX-512: 6 x 64 sums in 24 registers, per row 6 broadcasts and 4 loads for 24 fmas. */
AVX512 static __mmask16 mask16(size_t nr, size_t from)
{
    return nr <= from ? 0 : nr - from >= 16 ? 0xffff : (__mmask16)((1u << (nr - from)) - 1);
}

/* acc[0 .. 8) (+)= q. The tile's own sum takes whole vectors (lanes past the edge are never
 * flushed: a masked store does not forward to a load); W's takes the lanes of m, which are
 * inside W. */
AVX512 static void add8_avx512(int64_t *acc, __m512i q, int first, __mmask8 m)
{
    if (m == 0xff) {
        if (!first)
            q = _mm512_add_epi64(q, _mm512_loadu_si512(acc));
        _mm512_storeu_si512(acc, q);
    } else if (m) {
        if (!first)
            q = _mm512_add_epi64(q, _mm512_maskz_loadu_epi64(m, acc));
        _mm512_mask_storeu_epi64(acc, m, q);
    }
}

AVX512 static void tile_avx512(const float *Dp, const float *Ap, size_t k, const tile_io *io)
{
    __m512 c[MR][4];
#pragma GCC unroll 6
    for (size_t i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (size_t q = 0; q < 4; q++)
            c[i][q] = i < io->mr && io->in ? _mm512_maskz_loadu_ps(mask16(io->nr, 16 * q),
                                                                   io->in + i * io->ld + 16 * q)
                                           : _mm512_setzero_ps();
    for (size_t r = 0; r < k; r++) {
        const float *a = Ap + r * 64, *d = Dp + r * MR;
        __m512 b0 = _mm512_loadu_ps(a), b1 = _mm512_loadu_ps(a + 16);
        __m512 b2 = _mm512_loadu_ps(a + 32), b3 = _mm512_loadu_ps(a + 48);
#pragma GCC unroll 6
        for (size_t i = 0; i < MR; i++) {
            __m512 di = _mm512_set1_ps(d[i]);
            c[i][0] = _mm512_fmadd_ps(di, b0, c[i][0]);
            c[i][1] = _mm512_fmadd_ps(di, b1, c[i][1]);
            c[i][2] = _mm512_fmadd_ps(di, b2, c[i][2]);
            c[i][3] = _mm512_fmadd_ps(di, b3, c[i][3]);
        }
    }
    /* rint(s * scale): the power of two scales exactly, and VCVTPD2QQ rounds in the current
     * mode (MXCSR), as rint does. A scale that is a normal float scales exactly in float
     * too (|s * scale| < 2^62; a product below float's normal range rounds, but to less
     * than 1/2, whose rint is 0 either way), and VCVTPS2QQ rounds as VCVTPD2QQ: the same
     * integers, 16 at a time. */
    __m512d scale = _mm512_set1_pd(io->scale);
    __m512 fscale = _mm512_set1_ps(io->fscale);
#pragma GCC unroll 6
    for (size_t i = 0; i < MR; i++) {
        if (i >= io->mr)
            break;
#pragma GCC unroll 4
        for (size_t q = 0; q < 4; q++) {
            __mmask16 m = mask16(io->nr, 16 * q);
            if (io->out) {
                _mm512_mask_storeu_ps(io->out + i * io->ld + 16 * q, m, c[i][q]);
                continue;
            }
            int64_t *acc = io->acc + i * io->acc_ld + 16 * q;
            /* the tile's sum: whole vectors; W's: the lanes inside it */
            __mmask8 lo = 0xff, hi = 0xff;
            if (io->acc_ld != NR_MAX)
                lo = (__mmask8)m, hi = (__mmask8)(m >> 8);
            __m512i q0, q1;
            if (io->fscale != 0) {
                __m512 x = _mm512_mul_ps(c[i][q], fscale);
                q0 = _mm512_cvtps_epi64(_mm512_castps512_ps256(x));
                q1 = _mm512_cvtps_epi64(_mm512_extractf32x8_ps(x, 1));
            } else {
                __m256 s0 = _mm512_castps512_ps256(c[i][q]),
                       s1 = _mm512_extractf32x8_ps(c[i][q], 1);
                q0 = _mm512_cvtpd_epi64(_mm512_mul_pd(_mm512_cvtps_pd(s0), scale));
                q1 = _mm512_cvtpd_epi64(_mm512_mul_pd(_mm512_cvtps_pd(s1), scale));
            }
            add8_avx512(acc, q0, io->first, lo);
            add8_avx512(acc + 8, q1, io->first, hi);
        }
    }
}

/* The sum of the whole weight gradient is larger than the caches: stored, it goes straight
 * to memory (a streaming store does not read the line first), whole aligned lines of it. */
AVX512 static void flush_avx512(int64_t *acc, size_t ld, const int64_t *t, size_t mr, size_t nr,
                                int store)
{
    for (size_t i = 0; i < mr; i++, acc += ld, t += NR_MAX) {
        size_t j = 0;
        if (store == STREAM) {
            size_t head = (64 - ((uintptr_t)acc & 63)) % 64 / sizeof(int64_t);
            head = head < nr ? head : nr;
            _mm512_mask_storeu_epi64(acc, (__mmask8)((1u << head) - 1), _mm512_loadu_si512(t));
            for (j = head; j + 8 <= nr; j += 8)
                _mm512_stream_si512((void *)(acc + j), _mm512_loadu_si512(t + j));
        }
        for (; j < nr; j += 8) {
            __mmask8 m = nr - j >= 8 ? 0xff : (__mmask8)((1u << (nr - j)) - 1);
            __m512i q = _mm512_loadu_si512(t + j);
            if (!store)
                q = _mm512_add_epi64(q, _mm512_maskz_loadu_epi64(m, acc + j));
            _mm512_mask_storeu_epi64(acc + j, m, q);
        }
    }
}

/* AVX2 has no packed double -> int64 convert. x = s * scale, |x| < 2^62 (the scales'
 * margin, src/fixed.h), in exact steps: t = rint(x) (the current mode, MXCSR); t = hi 2^32 + lo
 * with hi = floor(t 2^-32) in [-2^31, 2^31) (an int32 convert) and lo = t - hi 2^32 in [0, 2^32),
 * an integer below 2^52: the low bits of lo + 2^52. */
AVX2 static __m256i rint_i64(__m256d x)
{
    __m256d t = _mm256_round_pd(x, _MM_FROUND_CUR_DIRECTION | _MM_FROUND_NO_EXC);
    __m256d hi = _mm256_round_pd(_mm256_mul_pd(t, _mm256_set1_pd(0x1p-32)),
                                 _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m256d lo = _mm256_fnmadd_pd(hi, _mm256_set1_pd(0x1p32), t);
    __m256i h = _mm256_cvtepi32_epi64(_mm256_cvttpd_epi32(hi));
    __m256i l = _mm256_sub_epi64(_mm256_castpd_si256(_mm256_add_pd(lo, _mm256_set1_pd(0x1p52))),
                                 _mm256_castpd_si256(_mm256_set1_pd(0x1p52)));
    return _mm256_add_epi64(_mm256_slli_epi64(h, 32), l);
}

/* AVX2 + FMA: 6 x 16 sums in 12 registers. */
AVX2 static void tile_avx2(const float *Dp, const float *Ap, size_t k, const tile_io *io)
{
    __m256 c[MR][2];
#pragma GCC unroll 6
    for (size_t i = 0; i < MR; i++)
#pragma GCC unroll 2
        for (size_t q = 0; q < 2; q++)
            c[i][q] = _mm256_setzero_ps();
    if (io->in) {
        float t[MR][16] = {{0}};
        for (size_t i = 0; i < io->mr; i++)
            memcpy(t[i], io->in + i * io->ld, io->nr * sizeof(float));
#pragma GCC unroll 6
        for (size_t i = 0; i < MR; i++)
#pragma GCC unroll 2
            for (size_t q = 0; q < 2; q++)
                c[i][q] = _mm256_loadu_ps(t[i] + 8 * q);
    }
    for (size_t r = 0; r < k; r++) {
        const float *a = Ap + r * 16, *d = Dp + r * MR;
        __m256 b0 = _mm256_loadu_ps(a), b1 = _mm256_loadu_ps(a + 8);
#pragma GCC unroll 6
        for (size_t i = 0; i < MR; i++) {
            __m256 di = _mm256_broadcast_ss(d + i);
            c[i][0] = _mm256_fmadd_ps(di, b0, c[i][0]);
            c[i][1] = _mm256_fmadd_ps(di, b1, c[i][1]);
        }
    }
    __m256d scale = _mm256_set1_pd(io->scale);
#pragma GCC unroll 6
    for (size_t i = 0; i < MR; i++) {
        if (i >= io->mr)
            break;
        if (io->out) {
            float t[16];
            _mm256_storeu_ps(t, c[i][0]), _mm256_storeu_ps(t + 8, c[i][1]);
            memcpy(io->out + i * io->ld, t, io->nr * sizeof(float));
            continue;
        }
        int64_t q[16], *acc = io->acc + i * io->acc_ld;
#pragma GCC unroll 4
        for (size_t h = 0; h < 4; h++) {
            __m128 s =
                h % 2 ? _mm256_extractf128_ps(c[i][h / 2], 1) : _mm256_castps256_ps128(c[i][h / 2]);
            _mm256_storeu_si256((__m256i *)(q + 4 * h),
                                rint_i64(_mm256_mul_pd(_mm256_cvtps_pd(s), scale)));
        }
        if (io->first)
            memcpy(acc, q, io->nr * sizeof(int64_t));
        else
            for (size_t j = 0; j < io->nr; j++)
                acc[j] += q[j];
    }
}
#endif

typedef struct {
    tile_fn *tile;
    flush_fn *flush;
    size_t nr; /* columns per tile: the packed panel's width */
} path_def;

static const path_def paths[] = {
    [BP__DW_PLAIN] = {tile_plain, flush_plain, NR_MAX},
#if DW_SIMD
    [BP__DW_AVX2] = {tile_avx2, flush_plain, 16},
    [BP__DW_AVX512] = {tile_avx512, flush_avx512, 64},
#endif
};

int bp__dw_fixed_has(int path)
{
#if DW_SIMD
    __builtin_cpu_init();
    if (path == BP__DW_AVX512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
    if (path == BP__DW_AVX2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return path == BP__DW_PLAIN;
}

static int best_path(void)
{
    static int best = -1; /* the CPU's answer, the same every time */
    if (best < 0)
        best = bp__dw_fixed_has(BP__DW_AVX512) ? BP__DW_AVX512
               : bp__dw_fixed_has(BP__DW_AVX2) ? BP__DW_AVX2
                                               : BP__DW_PLAIN;
    return best;
}

/* Dp (tiles of k x MR, zero padded) = D[0 .. k)[0 .. mb) */
static void pack_D(float *Dp, const float *D, size_t ldd, size_t k, size_t mb)
{
    for (size_t t = 0; t < mb; t += MR) {
        size_t w = mb - t < MR ? mb - t : MR;
        for (size_t r = 0; r < k; r++, Dp += MR) {
            memcpy(Dp, D + r * ldd + t, w * sizeof(float));
            memset(Dp + w, 0, (MR - w) * sizeof(float));
        }
    }
}

/* Ap (k x nr, zero padded) = A[0 .. k)[0 .. nb) */
static void pack_A(float *Ap, const float *A, size_t lda, size_t k, size_t nb, size_t nr)
{
    for (size_t r = 0; r < k; r++, Ap += nr) {
        memcpy(Ap, A + r * lda, nb * sizeof(float));
        memset(Ap + nb, 0, (nr - nb) * sizeof(float));
    }
}

/* The chunk of rows from c0: whole micro-shards, or a piece of one longer than CHUNK. */
static size_t chunk_end(size_t c0, size_t rows, size_t u)
{
    size_t c1 = u <= CHUNK ? c0 + CHUNK / u * u : c0 + CHUNK;
    size_t shard_end = u <= CHUNK ? c1 : (c0 / u + 1) * u;
    c1 = c1 < shard_end ? c1 : shard_end;
    return c1 < rows ? c1 : rows;
}

/* Rows [c0, c1) of every tile of W's rows [a0, a0 + mb) and columns [j0, j0 + nb). */
static void chunk_tiles(const path_def *p, const bp__dw_job *job, const float *Dp, const float *Ap,
                        size_t c0, size_t c1, size_t a0, size_t mb, size_t j0, size_t nb)
{
    size_t u = job->u;
    int64_t sum[MR * NR_MAX];
    tile_io io = {.acc = sum, .ld = job->n, .nr = nb, .scale = job->scale, .acc_ld = NR_MAX};
    if (job->scale >= 0x1p-126 && job->scale <= 0x1p127)
        io.fscale = (float)job->scale;
    /* no micro-shard ended before c0: the first to reach acc stores */
    int store = c0 < u ? (job->stream ? STREAM : STORE) : ADD;
    /* The chunk is one micro-shard's rows, to its end (W2 or the main job at 2 ranks): the
     * tiles go to acc itself, without the copy through their own sums (not when acc is
     * streamed: stores that read the line first cost more than the copy saves). */
    size_t shard_end = (c0 / u + 1) * u;
    int direct =
        !job->out && store != STREAM && c1 == (shard_end < job->rows ? shard_end : job->rows);
    for (size_t t = 0; t < mb; t += MR, Dp += (c1 - c0) * MR) {
        size_t at = (a0 + t) * job->n + j0;
        int summed = 0; /* a micro-shard ended in this chunk */
        io.mr = mb - t < MR ? mb - t : MR;
        if (direct)
            io.acc = job->acc + at, io.acc_ld = job->n;
        for (size_t s0 = c0; s0 < c1;) {
            size_t s1 = (s0 / u + 1) * u; /* this micro-shard's end, or the rows' */
            s1 = s1 < job->rows ? s1 : job->rows;
            int ends = s1 <= c1;
            s1 = ends ? s1 : c1;
            io.in = s0 % u ? job->carry + at : NULL;
            io.out = !ends ? job->carry + at : job->out ? job->out + at : NULL;
            io.first = direct ? store != ADD : !summed;
            p->tile(Dp + (s0 - c0) * MR, Ap + (s0 - c0) * p->nr, s1 - s0, &io);
            summed |= ends && !job->out;
            s0 = s1;
        }
        if (summed && !direct)
            p->flush(job->acc + at, job->n, sum, io.mr, nb, store);
    }
}

size_t bp__dw_pack_floats(void)
{
    return CHUNK * MC + CHUNK * NR_MAX; /* 219 KB: the caller's, not the stack's */
}

void bp__dw_fixed_on(int path, const bp__dw_job *job)
{
    const path_def *p = &paths[path];
    float *Dp = job->pack, *Ap = job->pack + CHUNK * MC;
    size_t m = job->m, n = job->n;
    for (size_t c0 = 0, c1; c0 < job->rows; c0 = c1) {
        c1 = chunk_end(c0, job->rows, job->u);
        for (size_t a0 = 0; a0 < m; a0 += MC) {
            size_t mb = m - a0 < MC ? m - a0 : MC;
            pack_D(Dp, job->D + c0 * job->ldd + a0, job->ldd, c1 - c0, mb);
            for (size_t j0 = 0; j0 < n; j0 += p->nr) {
                size_t nb = n - j0 < p->nr ? n - j0 : p->nr;
                pack_A(Ap, job->A + c0 * job->lda + j0, job->lda, c1 - c0, nb, p->nr);
                chunk_tiles(p, job, Dp, Ap, c0, c1, a0, mb, j0, nb);
            }
        }
    }
#if DW_SIMD
    if (job->stream)
        _mm_sfence(); /* the streaming stores seen before whoever reads acc next */
#endif
}

void bp__dw_fixed(const bp__dw_job *job)
{
    bp__dw_fixed_on(best_path(), job);
}
