/* backprop convert: IDX or CSV to the HDF5 data layout. */
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "backprop/data.h"
#include "backprop/files.h"
#include "cli.h"

static const char convert_usage[] =
    "usage: backprop convert --idx-images F --idx-labels F --out FILE.h5 [--contiguous] "
    "[--force]\n"
    "       backprop convert --csv F [--targets K] --out FILE.h5 [--contiguous] [--force]\n"
    "\n"
    "Writes /X (n x d, float32) and /y (n int32 labels, or n x K float32 targets).\n"
    "IDX pixels are scaled to [0,1]; plain or gzip. CSV: one example per line, an optional\n"
    "header (the first line, when none of its fields is a number); the last column is the\n"
    "class label, or with --targets K the last K columns are real-valued targets. Fields\n"
    "may be quoted; lines end in \\n, \\r\\n or \\r. An existing FILE.h5 is replaced only\n"
    "with --force, and never when it is a checkpoint or one of the inputs. /X is chunked\n"
    "and compressed, or with --contiguous stored as plain rows, which [data] placement =\n"
    "stream needs.\n";

#define MAX_TARGETS 1000000 /* as many as an output layer may have */

typedef struct {
    const char *images, *labels, *csv, *out;
    long targets;
    int force, contiguous;
} convert_args;

static int parse_args(int argc, char **argv, convert_args *a, char *err, size_t len)
{
    memset(a, 0, sizeof(*a));
    const char *targets = NULL;
    for (int i = 1; i < argc; i++) {
        const char *v;
        int r = bp_arg_value(argc, argv, &i, "--idx-images", &v);
        if (r > 0)
            a->images = v;
        else if (r == 0 && (r = bp_arg_value(argc, argv, &i, "--idx-labels", &v)) > 0)
            a->labels = v;
        else if (r == 0 && (r = bp_arg_value(argc, argv, &i, "--csv", &v)) > 0)
            a->csv = v;
        else if (r == 0 && (r = bp_arg_value(argc, argv, &i, "--targets", &v)) > 0)
            targets = v;
        else if (r == 0 && (r = bp_arg_value(argc, argv, &i, "--out", &v)) > 0)
            a->out = v;
        else if (r == 0 && strcmp(argv[i], "--force") == 0)
            a->force = r = 1;
        else if (r == 0 && strcmp(argv[i], "--contiguous") == 0)
            a->contiguous = r = 1;
        if (r <= 0)
            return snprintf(err, len,
                            r < 0 ? "%s needs a value" : "convert: unexpected argument '%s'",
                            argv[i]),
                   -1;
    }
    if (targets && bp_arg_long(targets, 0, MAX_TARGETS, &a->targets) < 0)
        return snprintf(err, len, "--targets: expected an integer from 0 to %d, got '%s'",
                        MAX_TARGETS, targets),
               -1;
    if (targets && !a->csv)
        return snprintf(err, len, "--targets goes with --csv"), -1;
    if (!a->out || (!a->csv && !(a->images && a->labels)) || (a->csv && (a->images || a->labels)))
        return snprintf(err, len,
                        "convert: need --out and either --idx-images with --idx-labels, "
                        "or --csv [--targets K] (see backprop convert --help)"),
               -1;
    return 0;
}

int bp_cmd_convert(int argc, char **argv)
{
    if (bp_cli_wants_help(argc, argv)) {
        fputs(convert_usage, stdout);
        return EXIT_OK;
    }
    char err[2048];
    convert_args a;
    if (parse_args(argc, argv, &a, err, sizeof(err)) < 0) {
        bp_cli_error(0, "%s", err);
        return EXIT_BAD_INPUT;
    }
    /* Where the output goes is settled before the input is read. */
    int rc;
    const char *inputs[] = {a.csv ? a.csv : a.images, a.csv ? NULL : a.labels, NULL};
    rc = bp_output_check(a.out, a.force ? BP_OUT_REPLACE : 0, inputs, err, sizeof(err));
    if (rc < 0) {
        bp_cli_force_hint(rc, err, sizeof(err));
        bp_cli_error(0, "%s", err);
        return EXIT_BAD_INPUT;
    }
    bp_dataset ds;
    rc = a.csv ? bp_dataset_load_csv(&ds, a.csv, (int)a.targets, err, sizeof(err))
               : bp_dataset_load(&ds, a.images, a.labels, 0, 0, err, sizeof(err));
    if (rc < 0) {
        bp_cli_error(0, "%s", err);
        return bp_cli_setup_status(rc);
    }
    rc = bp_dataset_write_h5(
        &ds, a.out, (a.force ? BP_WRITE_REPLACE : 0) | (a.contiguous ? BP_WRITE_CONTIGUOUS : 0),
        err, sizeof(err));
    bp_cli_force_hint(rc, err, sizeof(err));
    if (rc < 0)
        bp_cli_error(0, "%s", err);
    else
        bp_cli_line("wrote %s: %zu examples, %zu features, %s", a.out, ds.n, ds.d,
                    ds.labels ? "class labels" : "real-valued targets");
    bp_dataset_free(&ds);
    return rc < 0 ? EXIT_FAILURE_DURING_WORK : EXIT_OK;
}
