/* Matrix products and BLAS set-up: threads per rank, the choice of OpenBLAS's kernel, and
 * which library runs each product.
 *
 * Debian's OpenBLAS is built with DYNAMIC_ARCH: it picks its kernels once, when the
 * library loads, from the CPU or from OPENBLAS_CORETYPE. Where that lands on a kernel
 * without AVX-512 on a CPU that has it (an old OpenBLAS not knowing a new CPU, or a
 * site-wide OPENBLAS_CORETYPE=Haswell), sgemm runs at half speed. The choice cannot be
 * changed after loading, so bp_blas_choose_kernel re-executes the program once with
 * OPENBLAS_CORETYPE set, before MPI or anything else starts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "blas.h"
#include "internal.h"

#ifdef BACKPROP_ONEDNN
#include <dnnl.h>
#include <omp.h>
#endif

char *openblas_get_corename(void);

void bp_set_blas_threads(int threads)
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

void bp__gemm(enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, int m, int n, int k, bp_real alpha,
              const bp_real *A, int lda, const bp_real *B, int ldb, bp_real beta, bp_real *C,
              int ldc)
{
#ifdef BACKPROP_ONEDNN
    if ((double)m * n * k >= BP_ONEDNN_MIN_MACS) {
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

const char *bp_gemm_libraries(void)
{
#ifdef BACKPROP_ONEDNN
    return "oneDNN (large products) + OpenBLAS";
#else
    return "OpenBLAS";
#endif
}

const char *bp_blas_kernel(void)
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

void bp_blas_choose_kernel(char **argv)
{
    const char *want = getenv("BACKPROP_BLAS_KERNEL"); /* auto (unset) | keep | a core name */
    if (getenv("BACKPROP_BLAS_REEXEC") || (want && strcmp(want, "keep") == 0))
        return;
    const char *core = openblas_get_corename();
    const char *target = NULL;
    if (want && strcmp(want, "auto") != 0)
        target = strcasecmp(core, want) != 0 ? want : NULL;
    else if (has_avx512() && !is_avx512_kernel(core))
        target = "SkylakeX";
    if (!target)
        return;
    /* The marker stops a loop if OpenBLAS ignores the setting; it also tells the log
     * what OpenBLAS had picked. */
    setenv("BACKPROP_BLAS_REEXEC", core, 1);
    setenv("OPENBLAS_CORETYPE", target, 1);
    execv("/proc/self/exe", argv);
    /* exec failed: carry on with the kernel we have. */
    unsetenv("BACKPROP_BLAS_REEXEC");
}

const char *bp_blas_replaced_kernel(void)
{
    return getenv("BACKPROP_BLAS_REEXEC");
}
