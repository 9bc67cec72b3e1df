/* What runs the arithmetic: how many BLAS threads a rank takes, and what blas.c chose, for
 * the program's log (include/backprop/runtime.h). */
#define _GNU_SOURCE /* sched_getaffinity */
#include <sched.h>
#include <unistd.h>

#include "backprop/comm.h"
#include "backprop/runtime.h"
#include "blas.h"

int bp__auto_threads(const bp_comm *comm)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    long t = cores / (comm->local_size > 0 ? comm->local_size : 1);
    /* mpirun binds each rank to one core by default at -np <= 2: more threads than the
     * cores we may run on would only take turns. */
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) < t)
        t = CPU_COUNT(&set);
    return t < 1 ? 1 : (int)t;
}

void bp_runtime_get_info(bp_runtime_info *info)
{
    info->gemm_libraries = bp__gemm_libraries();
    info->blas_kernel = bp__blas_kernel();
    info->blas_replaced_kernel = bp__blas_replaced_kernel();
    info->bf16_isa = bp__bf16_isa();
    info->bf16_declined = bp__bf16_declined();
}
