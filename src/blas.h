/* BLAS threads and kernel choice. */
#ifndef BACKPROP_BLAS_H
#define BACKPROP_BLAS_H

#include <stddef.h>

#include "backprop/runtime.h"

#include "backprop/comm.h"

/* Sets OpenBLAS's thread count. */
void bp__set_blas_threads(int threads);

/* [train] threads = auto: the cores this process may run on, shared among comm's ranks on
 * this node, at least 1 (runtime.c). */
int bp__auto_threads(const bp_comm *comm);

/* Before the first product: *threads per rank (bp__set_blas_threads). Under a limit on data
 * or address space (ulimit -d, -v), malloc must first show that it can give OpenBLAS's work
 * buffers, 128 MiB for each of its threads (OpenBLAS would retry forever where it cannot):
 * with fewer threads when not all fit (*threads says how many). Then the calling thread's
 * buffer is taken. 0, or BP_EINVAL with the reason in err when not even one fits. */
int bp__blas_setup(int *threads, char *err, size_t errlen);

/* Whether products of a million multiply-adds or more go to oneDNN (1) or OpenBLAS (0), in
 * a build with oneDNN: `want` is BACKPROP_GEMM ("openblas", "onednn", else the table),
 * avx512 whether the CPU has AVX-512 (oneDNN's kernels lead there, trail on AVX2 alone). */
int bp__large_on_onednn(const char *want, int avx512);

/* Which libraries run the matrix products, for the log. */
const char *bp__gemm_libraries(void);

/* The kernel OpenBLAS runs ("SkylakeX", "Haswell", ...). */
const char *bp__blas_kernel(void);

/* The kernel OpenBLAS had chosen before the program re-executed itself with another
 * (bp_runtime_start_env), or NULL. */
const char *bp__blas_replaced_kernel(void);

/* bf16 products ([train] precision = bf16). */
#include <stddef.h>
#include <stdint.h>

#include "backprop/backprop.h"
typedef uint16_t bp_bf16;

/* 0 when this process can multiply bf16 matrices natively (AVX512_BF16 or AMX-BF16, and
 * oneDNN built in); else -1 with the reason in why. BACKPROP_BF16=off in the environment
 * answers as a CPU without bf16 would (to test that path anywhere). */
int bp__bf16_check(char *why, size_t len);

/* "AMX-BF16", "AVX512_BF16" or "none": what the CPU offers, for the log. */
const char *bp__bf16_isa(void);

/* dst = src rounded to bf16, to nearest with ties to even. */
void bp__to_bf16(bp_bf16 *dst, const bp_real *src, size_t n);
/* dst = src widened to bp_real (exact), and dst += src widened. */
void bp__bf16_widen(bp_real *dst, const bp_bf16 *src, size_t n);
void bp__bf16_add(bp_real *dst, const bp_bf16 *src, size_t n);

/* C (m x n, f32) = op(A) op(B), op transposing where ta, tb are 1; row-major bf16
 * operands, products accumulated in f32. -1 where oneDNN has no primitive for it (it
 * declined the shape, or the cache of shapes is full), counted by bp__bf16_declined. */
long bp__bf16_declined(void);
int bp__gemm_bf16(int ta, int tb, int m, int n, int k, const bp_bf16 *A, int lda, const bp_bf16 *B,
                  int ldb, float *C, int ldc);

#endif
