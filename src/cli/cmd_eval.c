/* backprop eval / predict: a checkpoint's network applied to a data set. */
#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "blas.h"
#include "backprop/checkpoint.h"
#include "backprop/data.h"
#include "cli.h"
#include "internal.h"
#include "fileio.h"
#include "predict.h"
#include "source.h"
#include "train.h"

static const char eval_usage[] =
    "usage: backprop eval --checkpoint CKPT --data FILE [--labels FILE] [--json]\n"
    "\n"
    "Mean data cost (no L2 term), accuracy and confusion matrix of the checkpoint's network\n"
    "on FILE (.h5, or IDX images with --labels). Runs sharded under mpirun. An HDF5 file\n"
    "whose /X is contiguous is read in place, 256 rows at a time (each rank its share);\n"
    "any other file is loaded whole.\n";
static const char predict_usage[] =
    "usage: backprop predict --checkpoint CKPT --data FILE [--labels FILE] --out FILE.h5\n"
    "                        [--force]\n"
    "\n"
    "Writes the network's outputs (/outputs, n x k) and, for k > 1, the predicted classes\n"
    "(/predicted, n) to FILE.h5. --labels is needed only for IDX images. An existing\n"
    "FILE.h5 is replaced only with --force, and never when it is a checkpoint or an input.\n"
    "The data is read as eval reads it: in place when its /X is contiguous HDF5.\n";

enum { EVAL_ROWS = 256 }; /* rows a forward pass takes at a time */

typedef struct {
    const char *checkpoint, *data, *labels, *out;
    int json, force;
} eval_args;

static int parse_args(int argc, char **argv, eval_args *a, int predict, char *err, size_t len)
{
    memset(a, 0, sizeof(*a));
    for (int i = 1; i < argc; i++) {
        const char *v;
        int r = 0;
        if ((r = bp_arg_value(argc, argv, &i, "--checkpoint", &v)) > 0)
            a->checkpoint = v;
        else if (r == 0 && (r = bp_arg_value(argc, argv, &i, "--data", &v)) > 0)
            a->data = v;
        else if (r == 0 && (r = bp_arg_value(argc, argv, &i, "--labels", &v)) > 0)
            a->labels = v;
        else if (r == 0 && predict && (r = bp_arg_value(argc, argv, &i, "--out", &v)) > 0)
            a->out = v;
        else if (r == 0 && !predict && strcmp(argv[i], "--json") == 0)
            a->json = 1;
        else if (r == 0 && predict && strcmp(argv[i], "--force") == 0)
            a->force = 1;
        else
            return snprintf(err, len, r < 0 ? "%s needs a value" : "unexpected argument '%s'",
                            argv[i]),
                   -1;
    }
    if (!a->checkpoint || !a->data || (predict && !a->out))
        return snprintf(err, len, "missing %s (see backprop %s --help)",
                        !a->checkpoint ? "--checkpoint"
                        : !a->data     ? "--data"
                                       : "--out",
                        predict ? "predict" : "eval"),
               -1;
    return 0;
}

/* Reads the checkpoint, opens the data (read in place when it can be: source.h) and checks
 * them against each other; a workspace of rows for the passes. */
static int load(const eval_args *a, bp_checkpoint *ck, bp__source *src, bp_workspace *ws, char *err,
                size_t len)
{
    int rc = bp_checkpoint_read(a->checkpoint, ck, err, len);
    if (rc < 0)
        return rc;
    const bp_net *net = &ck->net;
    if (bp_workspace_create(ws, net, EVAL_ROWS) < 0)
        return bp__fail(err, len, BP_ENOMEM, "out of memory");
    /* The library says IDX images lack their labels; which option gives them is ours. */
    size_t n, d;
    if (!a->labels && !bp__is_h5_path(a->data) && strncmp(a->data, "builtin:", 8) != 0 &&
        bp__idx_shape(a->data, &n, &d, NULL, 0) == 0)
        return bp__fail(err, len, BP_EINVAL,
                        "%s: IDX images need their labels: add --labels FILE (the IDX labels file)",
                        a->data);
    return bp__source_open(src, a->data, a->labels, net->sizes[0], net->sizes[net->nlayers], 0,
                           EVAL_ROWS, err, len);
}

/* A number as JSON has it: JSON has no NaN or infinity, so such a value is null. */
static void json_number(const char *name, double v)
{
    if (isfinite(v))
        printf("\"%s\":%.9g", name, v);
    else
        printf("\"%s\":null", name);
}

static void print_report(const eval_args *a, const double *r, const bp_dataset *ds)
{
    const double *confusion = r + BP_EVAL_OUT;
    size_t k = ds->k;
    double n = r[2], cost = n > 0 ? r[0] / n : NAN;
    int labels = ds->labels != NULL;
    if (a->json) {
        printf("{\"n\":%.0f,", n);
        json_number("cost", cost);
        if (labels) {
            printf(",");
            json_number("accuracy", n > 0 ? r[1] / n : NAN);
            printf(",\"confusion\":[");
            for (size_t i = 0; i < k; i++)
                for (size_t j = 0; j < k; j++)
                    printf("%s%.0f%s",
                           j   ? ","
                           : i ? ",["
                               : "[",
                           confusion[i * k + j], j + 1 == k ? "]" : "");
            printf("]");
        }
        printf("}\n");
        return;
    }
    printf("examples: %.0f\ncost: %.6f (mean per example, no L2 term)\n", n, cost);
    if (!labels)
        return;
    printf("accuracy: %.2f%% (%.0f of %.0f)\n", 100 * r[1] / n, r[1], n);
    printf("confusion (rows: true class, columns: predicted):\n");
    for (size_t i = 0; i < k; i++) {
        for (size_t j = 0; j < k; j++)
            printf("%7.0f", confusion[i * k + j]);
        printf("\n");
    }
}

/* A failure while the rows are read: bad data (NaN, labels out of range, values that
 * overflow the model) is bad input, exit 2, as it is when a file loaded whole is refused;
 * the file failing is exit 1. */
static int run_status(int code)
{
    return code == BP_EFORMAT || code == BP_EMISMATCH || code == BP_EDIVERGED
               ? EXIT_BAD_INPUT
               : EXIT_FAILURE_DURING_WORK;
}

/* Finite data whose forward pass overflows (relu passes 3e38 on to inf, and inf - inf is
 * NaN) has no cost and no classes: argmax would call every such row class 0. The sums are
 * the same on every rank, so every rank finds it. */
static int check_finite_cost(const eval_args *a, const double *r, char *err, size_t len)
{
    if (isfinite(r[0]))
        return 0;
    return bp__fail(err, len, BP_EDIVERGED,
                    "%s: the network's cost is %s on this data: its values are finite but "
                    "overflow the model's forward pass",
                    a->data, isnan(r[0]) ? "NaN" : "infinite");
}

static int run(int argc, char **argv, int predict)
{
    bp_comm comm;
    int started = bp_cli_init(&argc, &argv, &comm);
    if (started != 0)
        return started;
    static char err[2048];
    eval_args a;
    bp_checkpoint ck;
    bp__source src;
    bp_workspace ws;
    double *r = NULL;
    memset(&ck, 0, sizeof(ck)), memset(&src, 0, sizeof(src)), memset(&ws, 0, sizeof(ws));
    int status = EXIT_OK;
    if (bp_cli_wants_help(argc, argv)) {
        if (comm.rank == 0)
            fputs(predict ? predict_usage : eval_usage, stdout);
        goto cleanup;
    }
    if (parse_args(argc, argv, &a, predict, err, sizeof(err)) < 0) {
        status = bp_cli_agree(&comm, EXIT_BAD_INPUT, err);
        goto cleanup;
    }
    int rc = 0;
    if (predict && comm.rank == 0) { /* where the output goes is settled before any work */
        const char *inputs[] = {a.checkpoint, a.data, a.labels, NULL};
        rc = bp__output_check(a.out, a.force ? BP__OUT_REPLACE : 0, inputs, err, sizeof(err));
    }
    status = bp_cli_agree(&comm, rc < 0 ? EXIT_BAD_INPUT : 0, err);
    if (status)
        goto cleanup;
    /* As train's threads = auto: the node's cores shared among its ranks (the libraries'
     * own default, every core for every rank, oversubscribes the node under mpirun). */
    int threads = bp_auto_threads(&comm);
    rc = bp_blas_setup(&threads, err, sizeof(err));
    if (rc == 0)
        rc = load(&a, &ck, &src, &ws, err, sizeof(err));
    status = bp_cli_agree(&comm, rc < 0 ? bp_cli_setup_status(rc) : 0, err);
    if (status)
        goto cleanup;
    const bp_dataset *ds = &src.ds;
    /* Ranks started with other arguments (mpirun's MPMD form) must still evaluate one
     * network on one data set: compared by contents, whatever the files are called. */
    rc = bp__weights_agree(&comm, &ck.net, a.checkpoint, err, sizeof(err));
    if (rc == 0)
        rc = bp__data_agree(&comm, ds, bp__source_rows, &src, "--data", a.data, err, sizeof(err));
    if (rc < 0) {
        status = bp_cli_report(&comm, bp_cli_setup_status(rc), err);
        goto cleanup;
    }
    if (predict) {
        /* Output files are rank 0's; other ranks have nothing to add. */
        int flags = a.force ? BP__OUT_REPLACE : 0;
        rc = comm.rank == 0 ? bp_predict_write(&ck.net, &ws, ds, bp__source_rows, &src, a.out,
                                               flags, err, sizeof(err))
                            : 0;
        if (rc == BP_EDIVERGED) { /* the library names the row; the data is ours to name */
            char why[sizeof(err)];
            snprintf(why, sizeof(why), "%s", err);
            snprintf(err, sizeof(err), "%.1000s: %.1000s", a.data, why);
        }
        status = bp_cli_agree(&comm, rc < 0 ? run_status(rc) : 0, err);
        if (status == 0 && comm.rank == 0)
            bp_cli_line("wrote %zu predictions to %s", ds->n, a.out);
        goto cleanup;
    }
    r = bp__calloc(BP_EVAL_OUT + ds->k * ds->k, sizeof(double));
    rc = r ? bp_evaluate(&ck.net, &ws, ds, bp__source_rows, &src, &comm, 1, r, err, sizeof(err))
           : bp__fail(err, sizeof(err), BP_ENOMEM, "out of memory");
    if (rc == 0)
        rc = check_finite_cost(&a, r, err, sizeof(err));
    status = bp_cli_agree(&comm, rc < 0 ? run_status(rc) : 0, err);
    if (status == 0 && comm.rank == 0)
        print_report(&a, r, ds);
cleanup:
    bp__free(r);
    bp_workspace_free(&ws);
    bp__source_close(&src);
    bp_checkpoint_free(&ck);
    bp_comm_finalize();
    return status;
}

int bp_cmd_eval(int argc, char **argv)
{
    return run(argc, argv, 0);
}

int bp_cmd_predict(int argc, char **argv)
{
    return run(argc, argv, 1);
}
