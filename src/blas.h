/* BLAS threads and kernel choice. */
#ifndef BACKPROP_BLAS_H
#define BACKPROP_BLAS_H

/* Sets OpenBLAS's thread count. */
void bp_set_blas_threads(int threads);

/* Which libraries run the matrix products, for the log. */
const char *bp_gemm_libraries(void);

/* The kernel OpenBLAS runs ("SkylakeX", "Haswell", ...). */
const char *bp_blas_kernel(void);

/* Call first thing in main. On a CPU with AVX-512 where OpenBLAS loaded a kernel without
 * it, re-executes the program with OPENBLAS_CORETYPE=SkylakeX (does not return then).
 * BACKPROP_BLAS_KERNEL=keep leaves OpenBLAS's choice alone; =NAME forces a core name. */
void bp_blas_choose_kernel(char **argv);

/* The kernel OpenBLAS had chosen before bp_blas_choose_kernel replaced it, or NULL. */
const char *bp_blas_replaced_kernel(void);

#endif
