/* Matrix products and BLAS set-up: threads per rank, the choice of OpenBLAS's kernel, and
 * which library runs each product.
 *
 * Debian's OpenBLAS is built with DYNAMIC_ARCH: it picks its kernels once, when the
 * library loads, from the CPU or from OPENBLAS_CORETYPE. Where that lands on a kernel
 * without AVX-512 on a CPU that has it (an old OpenBLAS not knowing a new CPU, or a
 * site-wide OPENBLAS_CORETYPE=Haswell), sgemm runs at half speed. The choice cannot be
 * changed after loading: bp_runtime_start_env says which environment the process should
 * have started with (OPENBLAS_CORETYPE set), and the program re-executes itself with it,
 * before MPI or anything else starts. The library never execs.
 *
 * Process-wide state here, each one answer for the process by design: `choice` (which
 * library runs the large products: it decides every product's bits, so it must not change
 * during a run or between two trainers), `matmuls` (oneDNN's engine and its primitives, one
 * per shape, built once and kept for the process, as OpenBLAS keeps its kernels; under a
 * lock), and
 * `bf16_declined` (a count for the log, atomic). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <unistd.h>

#include "blas.h"
#include "internal.h"

#ifdef BACKPROP_ONEDNN
#include <dnnl.h>
#include <omp.h>
#endif

char *openblas_get_corename(void);

void bp__set_blas_threads(int threads)
{
#ifdef BACKPROP_ONEDNN
    /* oneDNN's sgemm runs the large products on OpenMP threads; OpenBLAS keeps the small
     * ones on one thread. Two thread pools spinning for the same cores make both crawl
     * (measured: 1 rank x 2 threads fell to 5 % of its speed). */
    omp_set_num_threads(threads);
    openblas_set_num_threads(1);
#else
    openblas_set_num_threads(threads);
#endif
}

/* OpenBLAS (Debian 12's 0.3.21) retries forever when it cannot allocate a thread's work
 * buffer (OpenBLAS issue 5289, fixed in 0.3.30): under a tight ulimit -v or -d, a rank hung,
 * deaf to SIGTERM. Each of its worker threads takes its buffer as it starts (at load, or
 * when openblas_set_num_threads adds it), the calling thread at its first product. The
 * buffer is BUFFER_SIZE of its x86_64 build (common_x86_64.h: 32 << 22 bytes), page-aligned;
 * a worker also maps a thread stack. So: under such limits the program starts with one
 * OpenBLAS thread (bp_runtime_start_env), and bp__blas_setup checks that malloc can give the
 * buffers before OpenBLAS asks for them. */
#define OPENBLAS_BUFFER (((size_t)128 << 20) + ((size_t)1 << 20))

static int memory_limited(void)
{
    struct rlimit r;
    return (getrlimit(RLIMIT_DATA, &r) == 0 && r.rlim_cur != RLIM_INFINITY) ||
           (getrlimit(RLIMIT_AS, &r) == 0 && r.rlim_cur != RLIM_INFINITY);
}

/* Whether malloc can give OpenBLAS's buffers for `threads` threads (the calling one and
 * threads - 1 workers, each with its stack). */
static int buffers_fit(int threads)
{
    /* glibc's default thread stack: ulimit -s when set */
    struct rlimit r;
    size_t stack = getrlimit(RLIMIT_STACK, &r) == 0 && r.rlim_cur != RLIM_INFINITY
                       ? (size_t)r.rlim_cur
                       : (size_t)8 << 20;
    void *probe = malloc((size_t)threads * OPENBLAS_BUFFER + (size_t)(threads - 1) * stack);
    free(probe);
    return probe != NULL;
}

int bp__blas_setup(int *threads, char *err, size_t errlen)
{
    if (*threads < 1)
        *threads = 1;
#ifdef BACKPROP_ONEDNN
    int openblas = 1; /* OpenBLAS keeps to the calling thread (bp__set_blas_threads) */
#else
    int openblas = *threads;
#endif
    if (memory_limited()) {
        while (openblas > 0 && !buffers_fit(openblas))
            openblas--; /* fewer threads, rather than none */
        if (openblas == 0)
            return bp__fail(err, errlen, BP_EINVAL,
                            "OpenBLAS needs a 128 MiB work buffer for its thread, which this "
                            "process's memory limits (ulimit -v or -d) leave no room for");
#ifndef BACKPROP_ONEDNN
        *threads = openblas;
#endif
    }
    bp__set_blas_threads(*threads);
    /* The calling thread's buffer, taken now: OpenBLAS keeps it for the products to come. */
    enum { N = 256 }; /* past OpenBLAS's small-matrix path, which takes no buffer */
    float *a = calloc(3 * N * N, sizeof(float));
    if (!a)
        return bp__fail(err, errlen, BP_ENOMEM, "out of memory");
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1, a, N, a + N * N, N, 0,
                a + 2 * N * N, N);
    free(a);
    return 0;
}

/* Measured on one core of a Zen 5 (AVX-512) with bench/gemm.c and its oneDNN twin, GFLOP/s:
 *   shape (M x N x K)        OpenBLAS SkylakeX   oneDNN 2.6
 *   10 x 30 x 784                 166              129
 *   16 x 256 x 784                 85              134
 *   128 x 256 x 784               165              190
 *   256 x 2048 x 2048 (NN)        164              185
 * OpenBLAS's small-matrix kernels win below about a million multiply-adds, oneDNN's JIT
 * kernels above; BLIS 0.9 was slower than both on every shape but the largest. Exceptions
 * alone: W2's output products (128 x 10 x 256 NT: oneDNN 86, OpenBLAS 54), yet sending every
 * product to oneDNN changed W2's step by 1-2 %, within the noise, and slowed W1's by 25 %. */
#define BP_ONEDNN_MIN_MACS 1000000.0

#ifdef BACKPROP_ONEDNN
/* The forward's products, A W^T with W stored out x in, run fastest through oneDNN's matmul
 * primitive (its brgemm kernels), measured on one Zen 5 core, GFLOP/s:
 *   shape (M x N x K, NT)    dnnl_sgemm   matmul
 *   256 x 2048 x 784             163        193
 *   256 x 2048 x 2048            177        194
 *   128 x 2048 x 784             153        191
 *   128 x 256 x 784              184        192
 * The backward's NN and TN products are as fast or faster through dnnl_sgemm (NN 128 x 2048
 * x 2048: 178 against 163), so they stay there. A primitive is built once per shape (a few
 * JIT-compiled kernels) and kept; past MATMUL_SHAPES shapes, or if oneDNN declines one,
 * the product goes to dnnl_sgemm. */
#define MATMUL_SHAPES 256

typedef struct {
    int ta, tb; /* A, B transposed: read through their strides */
    int m, n, k, lda, ldb, ldc;
    dnnl_data_type_t in; /* A's and B's: f32, or bf16 for [train] precision = bf16 */
    dnnl_primitive_t prim;
    dnnl_memory_t a, b, c;
} matmul_entry;

/* The process's primitives: built once per shape and kept, shared by every trainer. mu makes
 * a lookup and the execution of an entry (its memory handles are set per call) one step,
 * for trainers running in threads of their own; alone, a trainer takes it uncontended. */
static struct {
    pthread_mutex_t mu;
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    int failed; /* the engine could not be made: never try again */
    int count;
    matmul_entry e[MATMUL_SHAPES];
} matmuls = {.mu = PTHREAD_MUTEX_INITIALIZER};

static int make_matmul(matmul_entry *e)
{
    dnnl_memory_desc_t a, b, c;
    /* Row-major operands; a transposed one is the same memory read with swapped strides
     * (B^T with B n x k, row stride ldb, is k x n with strides 1, ldb). */
    dnnl_dims_t ad = {e->m, e->k}, as = {e->lda, 1};
    dnnl_dims_t bd = {e->k, e->n}, bs = {e->ldb, 1};
    dnnl_dims_t cd = {e->m, e->n}, cs = {e->ldc, 1};
    if (e->ta)
        as[0] = 1, as[1] = e->lda;
    if (e->tb)
        bs[0] = 1, bs[1] = e->ldb;
    dnnl_matmul_desc_t desc;
    dnnl_primitive_desc_t pd;
    if (dnnl_memory_desc_init_by_strides(&a, 2, ad, e->in, as) != dnnl_success ||
        dnnl_memory_desc_init_by_strides(&b, 2, bd, e->in, bs) != dnnl_success ||
        dnnl_memory_desc_init_by_strides(&c, 2, cd, dnnl_f32, cs) != dnnl_success ||
        dnnl_matmul_desc_init(&desc, &a, &b, NULL, &c) != dnnl_success ||
        dnnl_primitive_desc_create(&pd, &desc, NULL, matmuls.engine, NULL) != dnnl_success)
        return -1;
    int ok = dnnl_primitive_create(&e->prim, pd) == dnnl_success;
    dnnl_primitive_desc_destroy(pd);
    if (!ok)
        return -1;
    if (dnnl_memory_create(&e->a, &a, matmuls.engine, DNNL_MEMORY_NONE) != dnnl_success ||
        dnnl_memory_create(&e->b, &b, matmuls.engine, DNNL_MEMORY_NONE) != dnnl_success ||
        dnnl_memory_create(&e->c, &c, matmuls.engine, DNNL_MEMORY_NONE) != dnnl_success)
        return -1; /* what was made stays unused: a few bytes, once */
    return 0;
}

static matmul_entry *find_matmul(const matmul_entry *want)
{
    for (int i = 0; i < matmuls.count; i++) {
        matmul_entry *e = &matmuls.e[i];
        if (e->ta == want->ta && e->tb == want->tb && e->m == want->m && e->n == want->n &&
            e->k == want->k && e->lda == want->lda && e->ldb == want->ldb && e->ldc == want->ldc &&
            e->in == want->in)
            return e->prim ? e : NULL;
    }
    if (matmuls.failed || matmuls.count == MATMUL_SHAPES)
        return NULL;
    if (!matmuls.engine && (dnnl_engine_create(&matmuls.engine, dnnl_cpu, 0) != dnnl_success ||
                            dnnl_stream_create(&matmuls.stream, matmuls.engine,
                                               dnnl_stream_default_flags) != dnnl_success)) {
        matmuls.failed = 1;
        return NULL;
    }
    matmul_entry *e = &matmuls.e[matmuls.count++];
    *e = *want;
    e->prim = NULL;
    if (make_matmul(e) < 0) {
        e->prim = NULL; /* remembered as declined */
        return NULL;
    }
    return e;
}

/* C = op(A) op(B) through a matmul primitive, A and B of type `in`, C f32; -1 when there
 * is none for this shape. */
static int matmul(int ta, int tb, int m, int n, int k, dnnl_data_type_t in, const void *A, int lda,
                  const void *B, int ldb, float *C, int ldc)
{
    matmul_entry want = {
        .ta = ta, .tb = tb, .m = m, .n = n, .k = k, .lda = lda, .ldb = ldb, .ldc = ldc, .in = in};
    pthread_mutex_lock(&matmuls.mu);
    matmul_entry *e = find_matmul(&want);
    int rc = e ? 0 : -1;
    if (e) {
        dnnl_exec_arg_t args[3] = {
            {DNNL_ARG_SRC, e->a}, {DNNL_ARG_WEIGHTS, e->b}, {DNNL_ARG_DST, e->c}};
        if (dnnl_memory_set_data_handle(e->a, (void *)A) != dnnl_success ||
            dnnl_memory_set_data_handle(e->b, (void *)B) != dnnl_success ||
            dnnl_memory_set_data_handle(e->c, C) != dnnl_success ||
            dnnl_primitive_execute(e->prim, matmuls.stream, 3, args) != dnnl_success ||
            dnnl_stream_wait(matmuls.stream) != dnnl_success)
            rc = -1;
    }
    pthread_mutex_unlock(&matmuls.mu);
    return rc;
}
#endif

static int has_avx512(void);

/* Which library runs the large products, by CPU family. Every row was measured on that
 * family, 1 rank x 1 thread, samples/s of W3 (784-2048-2048-10, batch 256) with large
 * products on oneDNN 2.6.3 against all on OpenBLAS 0.3.21:
 *   AVX-512 (Zen 5, OpenBLAS SkylakeX)                  oneDNN ahead (the tables above)
 *   AVX-512 + AMX (Intel Xeon, OpenBLAS Cooperlake)     oneDNN ahead (docs/benchmarks.md)
 *   AVX2 only (Zen 3, OpenBLAS Zen)                     1,354 against 2,401: OpenBLAS
 * oneDNN 2.6's AVX2 matmul and sgemm kernels trail OpenBLAS's Haswell/Zen ones by almost
 * half, its AVX-512 ones lead. A table rather than a start-up calibration: a calibration
 * would time both libraries on a shared, noisy machine and could pick differently from one
 * run to the next, and the library a product runs on decides its rounding, so two runs of
 * the same config would no longer agree bit for bit. The table gives one answer per CPU.
 * BACKPROP_GEMM=openblas or =onednn overrides it (for scripts/bench.sh's comparison). */
int bp__large_on_onednn(const char *want, int avx512)
{
    if (want && strcmp(want, "openblas") == 0)
        return 0;
    if (want && strcmp(want, "onednn") == 0)
        return 1;
    return avx512;
}

#ifdef BACKPROP_ONEDNN
static int large_on_onednn(void)
{
    static int choice = -1; /* one answer for the process: it decides every product's bits */
    if (choice < 0)
        choice = bp__large_on_onednn(getenv("BACKPROP_GEMM"), has_avx512());
    return choice;
}
#endif

void bp__gemm(enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, int m, int n, int k, bp_real alpha,
              const bp_real *A, int lda, const bp_real *B, int ldb, bp_real beta, bp_real *C,
              int ldc)
{
#ifdef BACKPROP_ONEDNN
    if ((double)m * n * k >= BP_ONEDNN_MIN_MACS && large_on_onednn()) {
        if (ta == CblasNoTrans && tb == CblasTrans && alpha == 1 && beta == 0 &&
            matmul(0, 1, m, n, k, dnnl_f32, A, lda, B, ldb, C, ldc) == 0)
            return;
        dnnl_sgemm(ta == CblasTrans ? 'T' : 'N', tb == CblasTrans ? 'T' : 'N', m, n, k, alpha, A,
                   lda, B, ldb, beta, C, ldc);
        return;
    }
#endif
#ifdef BACKPROP_DOUBLE
    cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
#else
    cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
}

/* ---- bf16 products ([train] precision = bf16) ---- */

/* Round to nearest, ties to even, as the hardware's VCVTNEPS2BF16 does for normal numbers
 * (it flushes subnormal inputs to zero; this keeps their top bits); NaN stays a (quiet)
 * NaN. A plain loop the compiler vectorises: converting a layer's activations is
 * a pass over memory the product reads anyway. */
BP__VECTORIZE void bp__to_bf16(bp_bf16 *restrict dst, const bp_real *restrict src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float f = (float)src[i]; /* the double build: rounded twice, and only in tests */
        uint32_t u;
        memcpy(&u, &f, sizeof(u));
        uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
        dst[i] = (bp_bf16)((u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x40u : rounded);
    }
}

/* bf16 is float's top half: exact. */
static inline float widen(bp_bf16 h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

BP__VECTORIZE void bp__bf16_widen(bp_real *restrict dst, const bp_bf16 *restrict src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = widen(src[i]);
}

BP__VECTORIZE void bp__bf16_add(bp_real *restrict dst, const bp_bf16 *restrict src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] += widen(src[i]);
}

#if defined(__x86_64__)
#include <cpuid.h>
#endif

/* What the CPU says of bf16: AVX512_BF16 (leaf 7, subleaf 1, EAX bit 5) and AMX-BF16
 * (leaf 7, subleaf 0, EDX bit 22). */
static void cpu_bf16(int *avx512, int *amx)
{
    *avx512 = *amx = 0;
#if defined(__x86_64__)
    unsigned a, b, c, d;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        *amx = (d >> 22) & 1;
        unsigned max_sub = a;
        if (max_sub >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d))
            *avx512 = (a >> 5) & 1;
    }
#endif
}

const char *bp__bf16_isa(void)
{
    int avx512, amx;
    cpu_bf16(&avx512, &amx);
    return amx ? "AMX-BF16" : avx512 ? "AVX512_BF16" : "none";
}

int bp__bf16_check(char *why, size_t len)
{
#ifndef BACKPROP_ONEDNN
    snprintf(why, len, "this build has no oneDNN (built with -DBACKPROP_ONEDNN=OFF)");
    return -1;
#else
    int avx512, amx;
    cpu_bf16(&avx512, &amx);
    const char *pretend = getenv("BACKPROP_BF16"); /* "off": as on a CPU without bf16 */
    if (pretend && strcmp(pretend, "off") == 0)
        avx512 = amx = 0;
    if (!avx512 && !amx) {
        /* Emulated bf16 products would be slower than float ones: refused, not emulated. */
        snprintf(why, len,
                 "this CPU has no bf16 instructions (neither AVX512_BF16 nor AMX-BF16 in "
                 "cpuid): use precision = float");
        return -1;
    }
    /* The CPU may have the instructions and still not run them: an OS that has not
     * enabled AVX-512 state, or ONEDNN_MAX_CPU_ISA set below them. oneDNN would then run
     * bf16 on its reference kernels. */
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    if ((isa & dnnl_cpu_isa_avx512_core_bf16) != dnnl_cpu_isa_avx512_core_bf16) {
        snprintf(why, len,
                 "oneDNN will not use this CPU's bf16 instructions (its effective ISA is 0x%x: "
                 "AVX-512 disabled by the OS, or ONEDNN_MAX_CPU_ISA): use precision = float",
                 (unsigned)isa);
        return -1;
    }
    bp_bf16 one[1] = {0x3f80};
    float out[1];
    if (bp__gemm_bf16(0, 1, 1, 1, 1, one, 1, one, 1, out, 1) < 0 || out[0] != 1) {
        snprintf(why, len, "oneDNN cannot multiply bf16 matrices on this CPU");
        return -1;
    }
    return 0;
#endif
}

static atomic_long bf16_declined; /* for the log; trainers in several threads may add */

long bp__bf16_declined(void)
{
    return atomic_load_explicit(&bf16_declined, memory_order_relaxed);
}

int bp__gemm_bf16(int ta, int tb, int m, int n, int k, const bp_bf16 *A, int lda, const bp_bf16 *B,
                  int ldb, float *C, int ldc)
{
#ifdef BACKPROP_ONEDNN
    int rc = matmul(ta, tb, m, n, k, dnnl_bf16, A, lda, B, ldb, C, ldc);
    if (rc < 0)
        atomic_fetch_add_explicit(&bf16_declined, 1, memory_order_relaxed);
    return rc;
#else
    (void)ta, (void)tb, (void)m, (void)n, (void)k, (void)A, (void)lda, (void)B, (void)ldb;
    (void)C, (void)ldc;
    return -1;
#endif
}

const char *bp__gemm_libraries(void)
{
#ifdef BACKPROP_ONEDNN
    if (large_on_onednn())
        return "oneDNN (large products: matmul forward, sgemm backward) + OpenBLAS";
    return has_avx512() ? "OpenBLAS (BACKPROP_GEMM=openblas; oneDNN built in)"
                        : "OpenBLAS (this CPU has no AVX-512: oneDNN's AVX2 kernels are slower)";
#else
    return "OpenBLAS";
#endif
}

const char *bp__blas_kernel(void)
{
    return openblas_get_corename();
}

static int has_avx512(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    /* What OpenBLAS's SkylakeX kernels use. */
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512cd");
#else
    return 0;
#endif
}

static int is_avx512_kernel(const char *core)
{
    static const char *const names[] = {"SkylakeX", "Cooperlake", "SapphireRapids"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcasecmp(core, names[i]) == 0)
            return 1;
    return 0;
}

static void env_var(bp_env_var *v, const char *name, const char *value)
{
    v->name = name;
    snprintf(v->value, sizeof(v->value), "%s", value);
}

int bp_runtime_start_env(bp_env_var env[BP_START_ENV_MAX])
{
    const char *want = getenv("BACKPROP_BLAS_KERNEL"); /* auto (unset) | keep | a core name */
    const char *core = openblas_get_corename();
    const char *target = NULL;
    if (!getenv("BACKPROP_BLAS_REEXEC") && !(want && strcmp(want, "keep") == 0)) {
        if (want && strcmp(want, "auto") != 0)
            target = strcasecmp(core, want) != 0 ? want : NULL;
        else if (has_avx512() && !is_avx512_kernel(core))
            target = "SkylakeX";
    }
    /* Under memory limits, no worker threads at load (see bp__blas_setup). */
    const char *nthreads = getenv("OPENBLAS_NUM_THREADS");
    int one_thread = memory_limited() && !(nthreads && strcmp(nthreads, "1") == 0);
    int n = 0;
    /* The marker stops a loop if OpenBLAS ignores the kernel asked for; it also tells the
     * log what OpenBLAS had picked. OPENBLAS_NUM_THREADS=1 is its own marker. */
    if (target) {
        env_var(&env[n++], "BACKPROP_BLAS_REEXEC", core);
        env_var(&env[n++], "OPENBLAS_CORETYPE", target);
    }
    if (one_thread)
        env_var(&env[n++], "OPENBLAS_NUM_THREADS", "1");
    return n;
}

const char *bp__blas_replaced_kernel(void)
{
    return getenv("BACKPROP_BLAS_REEXEC");
}
