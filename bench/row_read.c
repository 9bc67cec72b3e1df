/* What a row costs under [data] placement = stream against one in memory: random rows of an
 * HDF5 /X, 64 to a step as W2's ranks read them at 2 ranks, through the stream's reader
 * (copied from its mapping of the file, the page cache warm) and copied from the rows in
 * memory (replicated, node).
 * Prints microseconds per row. Run by scripts/bench-data.sh rows; not a test.
 * usage: bench-rowread FILE.h5 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backprop/data.h"
#include "data_internal.h"

#define ROWS 64
#define STEPS 4000

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv)
{
    char err[1024];
    bp_dataset ds;
    bp__h5_stream *s;
    if (argc != 2 || bp_dataset_load(&ds, argv[1], NULL, 0, 0, err, sizeof(err)) < 0 ||
        bp__h5_stream_open(&s, argv[1], (int)ds.k, err, sizeof(err)) < 0) {
        fprintf(stderr, "bench-rowread: %s\n", argc == 2 ? err : "usage: bench-rowread FILE.h5");
        return 2;
    }
    size_t d = ds.d, k = ds.k, rows[ROWS];
    bp_real *X = malloc(ROWS * d * sizeof(bp_real)), *Y = malloc(ROWS * k * sizeof(bp_real));
    int *L = malloc(ROWS * sizeof(int));
    unsigned seed = 1;
    double best[2] = {1e9, 1e9};
    for (int rep = 0; rep < 3; rep++) { /* the best of 3, the two alternating */
        double t0 = now();
        for (int step = 0; step < STEPS; step++) {
            for (int i = 0; i < ROWS; i++)
                rows[i] = (size_t)rand_r(&seed) % ds.n;
            if (bp__h5_stream_rows(s, rows, ROWS, 0, X, Y, L, err, sizeof(err)) < 0) {
                fprintf(stderr, "bench-rowread: %s\n", err);
                return 1;
            }
        }
        double t1 = now();
        for (int step = 0; step < STEPS; step++) {
            for (int i = 0; i < ROWS; i++)
                rows[i] = (size_t)rand_r(&seed) % ds.n;
            for (int i = 0; i < ROWS; i++) { /* as bp__place_rows copies them */
                memcpy(X + i * d, ds.X + rows[i] * d, d * sizeof(bp_real));
                memcpy(Y + i * k, ds.Y + rows[i] * k, k * sizeof(bp_real));
                L[i] = ds.labels ? ds.labels[rows[i]] : 0;
            }
        }
        double t2 = now();
        best[0] = best[0] < t1 - t0 ? best[0] : t1 - t0;
        best[1] = best[1] < t2 - t1 ? best[1] : t2 - t1;
    }
    printf("%zu features a row, %d rows a step: streamed %.2f us a row, in memory %.2f us "
           "a row\n",
           d, ROWS, 1e6 * best[0] / (STEPS * ROWS), 1e6 * best[1] / (STEPS * ROWS));
    bp__h5_stream_close(s);
    bp_dataset_free(&ds);
    free(X), free(Y), free(L);
    return 0;
}
