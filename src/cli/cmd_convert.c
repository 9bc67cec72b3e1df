/* backprop convert: IDX or CSV to the HDF5 data layout. */
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "backprop/data.h"
#include "cli.h"

static const char convert_usage[] =
    "usage: backprop convert --idx-images F --idx-labels F --out FILE.h5\n"
    "       backprop convert --csv F [--targets K] --out FILE.h5\n"
    "\n"
    "Writes /X (n x d, float32) and /y (n int32 labels, or n x K float32 targets).\n"
    "IDX pixels are scaled to [0,1]; plain or gzip. CSV: one example per line, an optional\n"
    "header; the last column is the class label, or with --targets K the last K columns\n"
    "are real-valued targets.\n";

int bp_cmd_convert(int argc, char **argv)
{
    if (bp_cli_wants_help(argc, argv)) {
        fputs(convert_usage, stdout);
        return EXIT_OK;
    }
    const char *images = NULL, *labels = NULL, *csv = NULL, *out = NULL, *targets = "0";
    for (int i = 1; i < argc; i++) {
        const char *v;
        int r = bp_arg_value(argc, argv, &i, "--idx-images", &v);
        if (r > 0)
            images = v;
        else if (r == 0 && (r = bp_arg_value(argc, argv, &i, "--idx-labels", &v)) > 0)
            labels = v;
        else if (r == 0 && (r = bp_arg_value(argc, argv, &i, "--csv", &v)) > 0)
            csv = v;
        else if (r == 0 && (r = bp_arg_value(argc, argv, &i, "--targets", &v)) > 0)
            targets = v;
        else if (r == 0 && (r = bp_arg_value(argc, argv, &i, "--out", &v)) > 0)
            out = v;
        if (r <= 0) {
            bp_cli_error(0, r < 0 ? "%s needs a value" : "convert: unexpected argument '%s'",
                         argv[i]);
            return EXIT_BAD_INPUT;
        }
    }
    int k = 0;
    if (!out || (!csv && !(images && labels)) || (csv && images) ||
        sscanf(targets, "%d", &k) != 1 || k < 0) {
        bp_cli_error(0, "convert: need --out and either --idx-images with --idx-labels, or "
                        "--csv [--targets K] (see backprop convert --help)");
        return EXIT_BAD_INPUT;
    }
    char err[2048];
    bp_dataset ds;
    int rc = csv ? bp_dataset_load_csv(&ds, csv, k, err, sizeof(err))
                 : bp_dataset_load(&ds, images, labels, 0, 0, err, sizeof(err));
    if (rc < 0) {
        bp_cli_error(0, "%s", err);
        return bp_cli_setup_status(rc);
    }
    rc = bp_dataset_write_h5(&ds, out, err, sizeof(err));
    if (rc < 0)
        bp_cli_error(0, "%s", err);
    else
        printf("wrote %s: %zu examples, %zu features, %s\n", out, ds.n, ds.d,
               ds.labels ? "class labels" : "real-valued targets");
    bp_dataset_free(&ds);
    return rc < 0 ? EXIT_FAILURE_DURING_WORK : EXIT_OK;
}
