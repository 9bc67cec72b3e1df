/* MPI_Allreduce (sum, float, in place) time for the packed gradient buffers of W1-W3.
 * usage: mpirun -np 2 [MCA options] bench-allreduce [0|1|2]; rank 0 prints "FLOATS
 * MICROSECONDS" for each buffer, or for W1, W2 or W3's alone. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    /* parameters + the cost and correct-count slots */
    const int sizes[] = {23820 + 40 + 2, 268800 + 522 + 2, 5820416 + 4106 + 2};
    int only = argc > 1 ? atoi(argv[1]) : -1;
    for (int s = 0; s < 3; s++) {
        if (only >= 0 && s != only)
            continue;
        int n = sizes[s], reps = n < 100000 ? 2000 : n < 1000000 ? 500 : 30;
        float *buf = calloc((size_t)n, sizeof(float));
        for (int i = 0; i < 10; i++) /* warm-up */
            MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        MPI_Barrier(MPI_COMM_WORLD);
        double t = MPI_Wtime();
        for (int i = 0; i < reps; i++)
            MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        t = (MPI_Wtime() - t) / reps;
        if (rank == 0)
            printf("%d %.1f\n", n, t * 1e6);
        free(buf);
    }
    MPI_Finalize();
    return 0;
}
