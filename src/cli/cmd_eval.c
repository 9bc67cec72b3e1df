/* backprop eval / predict: a checkpoint's network applied to a data set. */
#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "backprop/eval.h"
#include "backprop/files.h"
#include "cli.h"

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

/* A number as JSON has it: JSON has no NaN or infinity, so such a value is null. */
static void json_number(const char *name, double v)
{
    if (isfinite(v))
        printf("\"%s\":%.9g", name, v);
    else
        printf("\"%s\":null", name);
}

static void print_report(const eval_args *a, const bp_eval_result *r)
{
    const double *confusion = r->confusion;
    size_t k = r->k;
    double n = (double)r->n, cost = n > 0 ? r->cost_sum / n : NAN;
    int labels = r->labelled;
    if (a->json) {
        printf("{\"n\":%.0f,", n);
        json_number("cost", cost);
        if (labels) {
            printf(",");
            json_number("accuracy", n > 0 ? r->correct / n : NAN);
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
    printf("accuracy: %.2f%% (%.0f of %.0f)\n", 100 * r->correct / n, r->correct, n);
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

/* The library says what is missing; which option gives it is ours. */
static void labels_hint(const bp_eval_result *r, char *err, size_t len)
{
    size_t n = strlen(err);
    if (r->needs_labels && n > 0 && n < len)
        snprintf(err + n, len - n, ": add --labels FILE (the IDX labels file)");
}

static int run(int argc, char **argv, int predict)
{
    bp_comm comm;
    int started = bp_cli_init(&argc, &argv, &comm);
    if (started != 0)
        return started;
    static char err[2048];
    eval_args a;
    bp_eval_result r;
    memset(&r, 0, sizeof(r));
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
        rc = bp_output_check(a.out, a.force ? BP_OUT_REPLACE : 0, inputs, err, sizeof(err));
        bp_cli_force_hint(rc, err, sizeof(err));
    }
    status = bp_cli_agree(&comm, rc < 0 ? EXIT_BAD_INPUT : 0, err);
    if (status)
        goto cleanup;
    bp_eval_job job = {.checkpoint = a.checkpoint,
                       .data = a.data,
                       .labels = a.labels,
                       .data_name = "--data",
                       .predictions = predict ? a.out : NULL,
                       .flags = a.force ? BP_OUT_REPLACE : 0};
    rc = bp_eval_run(&comm, &job, &r, err, sizeof(err));
    labels_hint(&r, err, sizeof(err));
    bp_cli_force_hint(rc, err, sizeof(err));
    if (rc < 0) {
        status =
            bp_cli_report(&comm, r.during_work ? run_status(rc) : bp_cli_setup_status(rc), err);
        goto cleanup;
    }
    if (comm.rank == 0 && predict)
        bp_cli_line("wrote %zu predictions to %s", r.n, a.out);
    else if (comm.rank == 0)
        print_report(&a, &r);
cleanup:
    bp_eval_result_free(&r);
    bp_comm_finalize(&comm);
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
