/* What runs the arithmetic in this process: for a program's log, so that a slow or an
 * unusual run can be told apart from the machine it ran on. */
#ifndef BACKPROP_RUNTIME_H
#define BACKPROP_RUNTIME_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const char *gemm_libraries; /* which libraries run the matrix products, and why */
    const char *blas_kernel;    /* the kernel OpenBLAS runs ("SkylakeX", "Haswell", ...) */
    /* The kernel OpenBLAS had chosen before backprop replaced it for this CPU (the program
     * was re-executed with another), or NULL when it was kept. */
    const char *blas_replaced_kernel;
    const char *bf16_isa; /* what the CPU offers for bf16: "AMX-BF16", "AVX512_BF16", "none" */
    /* bf16 products this process ran in float so far: oneDNN declined their shapes, or its
     * cache of shapes was full. */
    long bf16_declined;
} bp_runtime_info;

/* Fills info; its strings are static. */
void bp_runtime_get_info(bp_runtime_info *info);

/* One variable of the environment a process should start with. */
typedef struct {
    const char *name;
    char value[128];
} bp_env_var;
enum { BP_START_ENV_MAX = 3 };

/* The environment this process should have started with for its matrix products, which
 * OpenBLAS reads once, when it loads: on a CPU with AVX-512 where OpenBLAS loaded a kernel
 * without it, OPENBLAS_CORETYPE=SkylakeX (with BACKPROP_BLAS_REEXEC, the kernel it had
 * picked: bp_runtime_info.blas_replaced_kernel, and the mark that stops a second start);
 * under a limit on data or address space (ulimit -d, -v), OPENBLAS_NUM_THREADS=1, so that
 * no OpenBLAS worker starts before the trainer checks its memory. BACKPROP_BLAS_KERNEL=keep
 * leaves OpenBLAS's choice alone; =NAME asks for that core. Fills env and returns how many
 * variables to set; 0: start as it is. Changes nothing: a program that wants them sets them
 * and re-executes itself (execv of /proc/self/exe) first thing in main, before MPI starts. */
int bp_runtime_start_env(bp_env_var env[BP_START_ENV_MAX]);

#ifdef __cplusplus
}
#endif

#endif
