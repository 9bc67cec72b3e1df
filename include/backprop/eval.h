/* A trained network applied to a data set: the mean cost, accuracy and confusion matrix
 * (eval), or every row's outputs written to a file (predict). Sets are read in row order a
 * few hundred rows at a time: an HDF5 file whose /X is contiguous is read in place, never
 * whole, and under MPI each rank reads and evaluates its share; any other file (IDX, CSV,
 * chunked HDF5) is loaded whole. */
#ifndef BACKPROP_EVAL_H
#define BACKPROP_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "backprop/backprop.h"
#include "backprop/comm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What bp_eval_run does. */
typedef struct {
    const char *checkpoint;  /* the network: a checkpoint file */
    const char *data;        /* the set: HDF5, CSV, IDX images or builtin:NAME */
    const char *labels;      /* IDX images' labels file, else NULL */
    const char *data_name;   /* how messages name the set (the program's option: "--data") */
    const char *predictions; /* NULL: evaluate; else the HDF5 file that gets every row's
                              * outputs (/outputs, n x k) and, for k > 1, classes (/predicted) */
    int flags;               /* BP_OUT_REPLACE (files.h): predictions may replace a file */
} bp_eval_job;

/* What an evaluation found. */
typedef struct {
    size_t n, k;       /* rows evaluated (all of them, over every rank), outputs per row */
    int labelled;      /* the set has class labels: correct and confusion mean something */
    double cost_sum;   /* the data cost summed over the rows (no L2 term) */
    double correct;    /* rows whose largest output is their label */
    double *confusion; /* k x k counts, true class row, predicted column, when labelled; the
                        * result's own (bp_eval_result_free) */
    /* On an error: 1 when it came from the rows (reading, evaluating, writing them), 0
     * from the setup (the checkpoint, the data's file and shape, the ranks' agreement). */
    int during_work;
    /* The set is IDX images named without their labels file (the error is BP_EINVAL). */
    int needs_labels;
} bp_eval_result;

/* Collective over comm: reads job's checkpoint and data on every rank, checks that every
 * rank has the same network and the same set (by contents, whatever the files are called),
 * then evaluates the set into *res (job->predictions NULL) or writes the predictions file
 * from rank 0 (res gets n and k); BP_EINVAL without a checkpoint or data. A network whose
 * cost overflows on finite data (BP_EDIVERGED) has no result. Every rank returns the same
 * code; err holds the reason on one rank and is empty on the others. */
int bp_eval_run(const bp_comm *comm, const bp_eval_job *job, bp_eval_result *res, char *err,
                size_t errlen);

/* A set as a run's config names it, for bp_eval_net. */
typedef struct {
    const char *data, *labels; /* labels: IDX images' labels file, else NULL */
    uint64_t seed;             /* for builtin sets ([train] seed) */
    size_t limit, tail;        /* only the last `tail` of the first `limit` rows (0: all; 0:
                                * every one of them): [data] validation_split's rows */
    int classes_only;          /* when the set has no class labels or net one output: nothing to do,
                                * res->labelled 0 */
} bp_eval_set;

/* Collective over comm (NULL: this process alone, no MPI): net on set's rows into *res, as
 * bp_eval_run evaluates. The BLAS threads are the node's cores shared among comm's ranks. 0,
 * or a code with the reason in err. */
int bp_eval_net(const bp_comm *comm, const bp_net *net, const bp_eval_set *set, bp_eval_result *res,
                char *err, size_t errlen);

/* Frees what a result holds and zeroes it; harmless on a zeroed one. */
void bp_eval_result_free(bp_eval_result *res);

#ifdef __cplusplus
}
#endif

#endif
