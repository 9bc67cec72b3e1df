/* BLAS set-up: threads per rank, and the choice of OpenBLAS's kernel.
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

char *openblas_get_corename(void);

void bp_set_blas_threads(int threads)
{
    openblas_set_num_threads(threads);
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
