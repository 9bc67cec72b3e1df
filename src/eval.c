/* Evaluation: the sums over a set that the trainer's epochs take, and the public calls that
 * eval, predict and plot make (include/backprop/eval.h). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "agree.h"
#include "backprop/files.h"
#include "blas.h"
#include "data_common.h"
#include "data_idx.h"
#include "eval.h"
#include "fileio.h"
#include "fixed.h"
#include "internal.h"
#include "predict.h"

int bp__evaluate(const bp_net *net, bp_workspace *ws, const bp_dataset *ds, bp_rows_fn read,
                 void *ctx, const bp_comm *comm, int confusion, double *out, char *err,
                 size_t errlen)
{
    size_t k = ds->k, nout = BP__EVAL_OUT + (confusion ? k * k : 0);
    memset(out, 0, nout * sizeof(double));
    bp__bf16_weights(net, ws);
    size_t lo, hi;
    int rc = 0;
    bp__shard(ds->n, comm->rank, comm->size, &lo, &hi);
    for (size_t r = lo; r < hi; r += ws->max_rows) {
        size_t rows = hi - r < ws->max_rows ? hi - r : ws->max_rows;
        const bp_real *X, *Y;
        const int *labels;
        if (read) {
            rc = read(ctx, r, rows, &X, &Y, &labels, err, errlen);
            if (rc < 0) {
                out[3] = 1;
                break;
            }
        } else {
            X = ds->X + r * ds->d, Y = ds->Y + r * k;
            labels = ds->labels ? ds->labels + r : NULL;
        }
        const bp_real *A = bp_forward(net, ws, X, rows);
        out[0] += bp_cost_sum(net, ws, Y, rows);
        if (labels)
            out[1] += (double)bp_count_correct(net, ws, labels, rows);
        for (size_t i = 0; confusion && labels && i < rows; i++)
            out[BP__EVAL_OUT + (size_t)labels[i] * k + bp__argmax(A + i * k, k)] += 1;
    }
    out[2] = (double)(hi - lo);
    if (bp__comm_allreduce_sum_double(comm, out, nout) < 0)
        return bp__fail(err, errlen, BP_ECOMM, "evaluation: %s", bp_strerror(BP_ECOMM));
    return rc;
}

/* Chunks [first, end) of BP__EVAL_ROWS rows through the forward pass: each chunk's cost in
 * costs[], the correct count and the examples in sum[1], sum[2]; sum[3] set when a read (or
 * the costs' memory) failed. Returns 0 or the failure. */
static int exact_chunks(const bp_net *net, bp_workspace *ws, const bp_dataset *ds, bp_rows_fn read,
                        void *ctx, size_t first, size_t end, double *costs, int64_t *sum, char *err,
                        size_t errlen)
{
    size_t k = ds->k, chunk = BP__EVAL_ROWS;
    if (!costs) {
        sum[3] = 1;
        return bp__fail(err, errlen, BP_ENOMEM, "out of memory for the evaluation's costs");
    }
    for (size_t c = first; c < end; c++) {
        size_t r = c * chunk, rows = ds->n - r < chunk ? ds->n - r : chunk;
        const bp_real *X, *Y;
        const int *labels;
        if (read) {
            int rc = read(ctx, r, rows, &X, &Y, &labels, err, errlen);
            if (rc < 0) {
                sum[3] = 1;
                return rc;
            }
        } else {
            X = ds->X + r * ds->d, Y = ds->Y + r * k;
            labels = ds->labels ? ds->labels + r : NULL;
        }
        bp_forward(net, ws, X, rows);
        costs[c - first] = bp_cost_sum(net, ws, Y, rows);
        if (labels)
            sum[1] += (int64_t)bp_count_correct(net, ws, labels, rows);
        sum[2] += (int64_t)rows;
    }
    return 0;
}

int bp__evaluate_exact(const bp_net *net, bp_workspace *ws, const bp_dataset *ds, bp_rows_fn read,
                       void *ctx, const bp_comm *comm, double *out, char *err, size_t errlen)
{
    size_t chunks = (ds->n + BP__EVAL_ROWS - 1) / BP__EVAL_ROWS, first, end;
    int64_t sum[4] = {0}; /* cost, correct, examples, failed reads */
    bp__shard(chunks, comm->rank, comm->size, &first, &end);
    double *costs = bp__calloc(end > first ? end - first : 1, sizeof(double));
    int rc = exact_chunks(net, ws, ds, read, ctx, first, end, costs, sum, err, errlen);
    /* The chunks' costs summed exactly, as a step's micro-shards' are: at a scale every rank
     * agrees on from the largest (infinite when one is not finite), each rounded to it. */
    double most = 0, scale = 0;
    for (size_t c = 0; rc == 0 && c < end - first; c++) {
        double v = isnan(costs[c]) ? INFINITY : fabs(costs[c]);
        most = v > most ? v : most;
    }
    if (bp__comm_max_doubles(comm, &most, 1) < 0) {
        bp__free(costs);
        return bp__fail(err, errlen, BP_ECOMM, "evaluation: %s", bp_strerror(BP_ECOMM));
    }
    int finite = bp__fixed_scales(&most, 1, chunks, &scale) == 0;
    for (size_t c = 0; rc == 0 && finite && c < end - first; c++)
        sum[0] += (int64_t)llrint(costs[c] * scale);
    bp__free(costs);
    if (bp__comm_sum_i64(comm, sum, 4) < 0)
        return bp__fail(err, errlen, BP_ECOMM, "evaluation: %s", bp_strerror(BP_ECOMM));
    out[0] = finite ? (double)sum[0] / scale : NAN;
    out[1] = (double)sum[1], out[2] = (double)sum[2], out[3] = (double)sum[3];
    return rc;
}

void bp_eval_result_free(bp_eval_result *res)
{
    bp__free(res->confusion);
    memset(res, 0, sizeof(*res));
}

/* As train's threads = auto: the node's cores shared among its ranks (the libraries' own
 * default, every core for every rank, oversubscribes the node under mpirun). */
static int threads_setup(const bp_comm *comm, char *err, size_t errlen)
{
    int threads = bp__auto_threads(comm);
    return bp__blas_setup(&threads, err, errlen);
}

/* The sums of net over src's rows into res: cost, correct, examples, and the confusion
 * matrix when the set has labels. */
static int sums(const bp_comm *comm, const bp_net *net, bp__source *src, bp_eval_result *res,
                char *err, size_t errlen)
{
    const bp_dataset *ds = &src->ds;
    size_t k = ds->k;
    bp_workspace ws = {0};
    double *out = bp__calloc(BP__EVAL_OUT + k * k, sizeof(double));
    int rc = out && bp_workspace_create(&ws, net, BP__EVAL_ROWS) == 0
                 ? bp__evaluate(net, &ws, ds, bp__source_rows, src, comm, 1, out, err, errlen)
                 : bp__fail(err, errlen, BP_ENOMEM, "out of memory");
    res->n = ds->n, res->k = k, res->labelled = ds->labels != NULL;
    if (rc == 0) {
        res->cost_sum = out[0], res->correct = out[1], res->n = (size_t)out[2];
        res->confusion = res->labelled ? bp__calloc(k * k, sizeof(double)) : NULL;
        if (res->labelled && !res->confusion)
            rc = bp__fail(err, errlen, BP_ENOMEM, "out of memory");
        else if (res->confusion)
            memcpy(res->confusion, out + BP__EVAL_OUT, k * k * sizeof(double));
    }
    bp_workspace_free(&ws);
    bp__free(out);
    return rc;
}

int bp_eval_net(const bp_comm *comm, const bp_net *net, const bp_eval_set *set, bp_eval_result *res,
                char *err, size_t errlen)
{
    const bp_comm alone = {.rank = 0, .size = 1, .local_size = 1};
    comm = comm ? comm : &alone;
    memset(res, 0, sizeof(*res));
    bp__source src;
    memset(&src, 0, sizeof(src));
    int k = net->sizes[net->nlayers];
    int rc = bp__source_open(&src, set->data, set->labels, net->sizes[0], k, set->seed,
                             BP__EVAL_ROWS, err, errlen);
    if (rc == 0 && set->tail)
        rc = bp__source_tail(&src, set->limit, set->tail, err, errlen);
    if (rc == 0 && set->classes_only && (!src.ds.labels || k < 2)) {
        bp__source_close(&src);
        return 0;
    }
    if (rc == 0)
        rc = threads_setup(comm, err, errlen);
    if (rc == 0)
        rc = sums(comm, net, &src, res, err, errlen);
    bp__source_close(&src);
    return rc;
}

/* ---- eval and predict from a checkpoint ---- */

/* Reads the checkpoint and opens the data (read in place when it can be: source.h),
 * checked against each other. */
static int load(const bp_eval_job *job, bp_checkpoint *ck, bp__source *src, bp_eval_result *res,
                char *err, size_t errlen)
{
    if (!job->checkpoint || !job->data)
        return bp__fail(err, errlen, BP_EINVAL,
                        "an evaluation needs a checkpoint and a data set (%s is missing)",
                        job->checkpoint ? "the data set" : "the checkpoint");
    int rc = bp_checkpoint_read(job->checkpoint, ck, err, errlen);
    if (rc < 0)
        return rc;
    const bp_net *net = &ck->net;
    /* IDX images without their labels: said here, in words of the files; which option
     * names the labels is the program's. */
    size_t n, d;
    if (!job->labels && !bp__is_h5_path(job->data) && strncmp(job->data, "builtin:", 8) != 0 &&
        bp__idx_shape(job->data, &n, &d, NULL, 0) == 0) {
        res->needs_labels = 1;
        return bp__fail(err, errlen, BP_EINVAL, "%s: IDX images need their labels", job->data);
    }
    return bp__source_open(src, job->data, job->labels, net->sizes[0], net->sizes[net->nlayers], 0,
                           BP__EVAL_ROWS, err, errlen);
}

/* Finite data whose forward pass overflows (relu passes 3e38 on to inf, and inf - inf is
 * NaN) has no cost and no classes: argmax would call every such row class 0. The sums are
 * the same on every rank, so every rank finds it. */
static int finite_cost(const bp_eval_job *job, const bp_eval_result *res, char *err, size_t errlen)
{
    if (isfinite(res->cost_sum))
        return 0;
    return bp__fail(err, errlen, BP_EDIVERGED,
                    "%s: the network's cost is %s on this data: its values are finite but "
                    "overflow the model's forward pass",
                    job->data, isnan(res->cost_sum) ? "NaN" : "infinite");
}

/* Rank 0 writes the predictions; the others have nothing to add. */
static int predict(const bp_comm *comm, const bp_eval_job *job, const bp_net *net, bp__source *src,
                   char *err, size_t errlen)
{
    if (comm->rank != 0)
        return 0;
    bp_workspace ws = {0};
    if (bp_workspace_create(&ws, net, BP__EVAL_ROWS) < 0)
        return bp__fail(err, errlen, BP_ENOMEM, "out of memory");
    int flags = job->flags & BP_OUT_REPLACE ? BP__OUT_REPLACE : 0;
    int rc = bp__predict_write(net, &ws, &src->ds, bp__source_rows, src, job->predictions, flags,
                               err, errlen);
    bp_workspace_free(&ws);
    if (rc == BP_EDIVERGED) { /* the writer names the row; the data is named here */
        char why[1024];
        snprintf(why, sizeof(why), "%s", err);
        snprintf(err, errlen, "%.1000s: %.1000s", job->data, why);
    }
    return rc;
}

int bp_eval_run(const bp_comm *comm, const bp_eval_job *job, bp_eval_result *res, char *err,
                size_t errlen)
{
    bp_checkpoint ck;
    bp__source src;
    memset(&ck, 0, sizeof(ck)), memset(&src, 0, sizeof(src)), memset(res, 0, sizeof(*res));
    int rc = threads_setup(comm, err, errlen);
    if (rc == 0)
        rc = load(job, &ck, &src, res, err, errlen);
    rc = bp__agree(comm, rc, err, errlen);
    res->needs_labels = rc < 0 && res->needs_labels;
    /* Ranks started with other arguments (mpirun's MPMD form) must still evaluate one
     * network on one data set: compared by contents, whatever the files are called. */
    if (rc == 0)
        rc = bp__weights_agree(comm, &ck.net, job->checkpoint, err, errlen);
    if (rc == 0)
        rc = bp__data_agree(comm, &src.ds, bp__source_rows, &src,
                            job->data_name ? job->data_name : "the data set", job->data, err,
                            errlen);
    if (rc == 0) {
        res->during_work = 1;
        res->n = src.ds.n, res->k = src.ds.k, res->labelled = src.ds.labels != NULL;
        if (job->predictions)
            rc = predict(comm, job, &ck.net, &src, err, errlen);
        else if ((rc = sums(comm, &ck.net, &src, res, err, errlen)) == 0)
            rc = finite_cost(job, res, err, errlen);
        rc = bp__agree(comm, rc, err, errlen);
    }
    if (rc < 0) {
        int during_work = res->during_work, needs_labels = res->needs_labels;
        bp_eval_result_free(res);
        res->during_work = during_work, res->needs_labels = needs_labels;
    }
    bp__source_close(&src);
    bp_checkpoint_free(&ck);
    return rc;
}
