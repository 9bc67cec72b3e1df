/* BLAS threading. */
#include "internal.h"
#include "train.h"

void bp_set_blas_threads(int threads)
{
    openblas_set_num_threads(threads);
}
