/* sgemm throughput for given shapes: the peak that scripts/bench.sh compares against.
 * usage: bench-gemm [SECONDS] SHAPE...   SHAPE = TA,TB,M,N,K (TA/TB: n or t)
 * Prints "shape GFLOP/s" per shape, for OpenBLAS (threads: OPENBLAS_NUM_THREADS) or, with
 * BENCH_GEMM=onednn in a build with oneDNN, for oneDNN's sgemm (threads: OMP_NUM_THREADS). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>
#ifdef BACKPROP_ONEDNN
#include <dnnl.h>
#endif

static void sgemm(char ta, char tb, int m, int n, int k, const float *A, int lda, const float *B,
                  int ldb, float *C)
{
#ifdef BACKPROP_ONEDNN
    static int onednn = -1;
    if (onednn < 0)
        onednn = getenv("BENCH_GEMM") && strcmp(getenv("BENCH_GEMM"), "onednn") == 0;
    if (onednn) {
        dnnl_sgemm(ta == 't' ? 'T' : 'N', tb == 't' ? 'T' : 'N', m, n, k, 1, A, lda, B, ldb, 0, C,
                   n);
        return;
    }
#endif
    cblas_sgemm(CblasRowMajor, ta == 't' ? CblasTrans : CblasNoTrans,
                tb == 't' ? CblasTrans : CblasNoTrans, m, n, k, 1, A, lda, B, ldb, 0, C, n);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double measure(char ta, char tb, int m, int n, int k, double seconds)
{
    float *A = malloc(sizeof(float) * (size_t)m * k), *B = malloc(sizeof(float) * (size_t)k * n);
    float *C = malloc(sizeof(float) * (size_t)m * n);
    for (size_t i = 0; i < (size_t)m * k; i++)
        A[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)k * n; i++)
        B[i] = (float)(i % 5) * 0.1f;
    int lda = ta == 't' ? m : k, ldb = tb == 't' ? k : n;
    double best = 0;
    for (int round = 0; round < 2; round++) { /* the first round warms up */
        long reps = 0;
        double start = now_s(), t;
        do {
            sgemm(ta, tb, m, n, k, A, lda, B, ldb, C);
            reps++;
        } while ((t = now_s() - start) < seconds / 2);
        double gflops = 2.0 * m * n * k * reps / t / 1e9;
        best = gflops > best ? gflops : best;
    }
    free(A), free(B), free(C);
    return best;
}

int main(int argc, char **argv)
{
    int first = 1;
    double seconds = 2;
    if (argc > 1 && strchr(argv[1], ',') == NULL)
        seconds = atof(argv[first++]);
    for (int i = first; i < argc; i++) {
        char ta, tb;
        int m, n, k;
        if (sscanf(argv[i], "%c,%c,%d,%d,%d", &ta, &tb, &m, &n, &k) != 5) {
            fprintf(stderr, "bad shape %s (want TA,TB,M,N,K)\n", argv[i]);
            return 2;
        }
        printf("%s %.1f\n", argv[i], measure(ta, tb, m, n, k, seconds));
        fflush(stdout);
    }
    return 0;
}
