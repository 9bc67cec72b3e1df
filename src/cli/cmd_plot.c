/* backprop plot: one PNG of one or more runs: cost and accuracy per epoch, the step-time
 * breakdown, and the final model's confusion matrix.
 *
 * Drawn by gnuplot (Debian's gnuplot-nox, its pngcairo terminal), fed a script on a pipe.
 * gnuplot over matplotlib: it is one C program with no interpreter behind it (the package
 * and its libraries are a few MB; python3-matplotlib brings Python, numpy and about 100 MB),
 * it starts in tens of milliseconds, and its script takes the data inline, so what is
 * drawn is exactly what --script saves. Nothing but this command needs it.
 *
 * Nothing a run directory holds is ever gnuplot code. Every string taken from a file, a
 * path, the config stored in a checkpoint or a CSV reaches the script through script_text
 * alone, which turns every byte outside printable ASCII, and every quote, backslash, '$',
 * '@', backtick and '#', into '?': such a string cannot end its quotes, its line or a data
 * block, nor expand a macro or a variable. Numbers are printed from parsed doubles, never
 * copied as text. The picture's own path is not in the script: gnuplot reads the script
 * on its stdin (as /dev/stdin, so that its errors name a line) and writes the PNG to its
 * stdout, the temporary file; --script's copy names its output through script_text. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "args.h"
#include "backprop/checkpoint.h"
#include "backprop/config.h"
#include "backprop/eval.h"
#include "backprop/files.h"
#include "cli.h"

static const char plot_usage[] =
    "usage: backprop plot RUN_DIR [RUN_DIR ...] [--trace FILE] [--trace-steps K]\n"
    "                     [--out FILE.png] [--script FILE] [--force]\n"
    "\n"
    "Draws the runs in one PNG: cost and accuracy per epoch for train, validation and test\n"
    "(RUN_DIR/metrics.csv, else the file the run's [log] metrics names; resumed runs\n"
    "included), where a step's time went (RUN_DIR/step_times.csv, which train writes),\n"
    "the confusion matrix of the final model (RUN_DIR/latest.h5 on its config's test set,\n"
    "else its validation set) when the data has class labels, and a timeline of the last K\n"
    "steps (default 4, at most 50) of a trace train wrote ([log] trace): --trace FILE, else\n"
    "RUN_DIR/trace.json of the first run, a lane per rank. A run with a trace and no metrics\n"
    "yet (one the watchdog ended) is drawn as its timeline alone. Several runs are labelled by\n"
    "directory. FILE.png defaults to RUN_DIR/plot.png of the first run, and is replaced only\n"
    "with --force (plot.png in a run directory is always replaced). --script FILE also saves\n"
    "the gnuplot script, with the data it plots. Needs gnuplot with its cairo terminals\n"
    "(Debian: gnuplot-nox).\n";

#define MAX_RUNS 8
#define MAX_EPOCHS 100000
/* metrics.csv's columns that are drawn, in the order of the data blocks */
static const char *const columns[] = {"epoch",          "train_cost",   "val_cost",     "test_cost",
                                      "train_accuracy", "val_accuracy", "test_accuracy"};
#define NCOLS 7

typedef struct {
    const char *dir;
    char metrics[BP_PATH_MAX + 32]; /* the metrics file read */
    double (*rows)[NCOLS];          /* metrics.csv's drawn fields (NaN where empty) */
    size_t nrows;
    int has[NCOLS]; /* some row has the column */
    double step[5]; /* data, compute, exchange, update ms; steps (weighted means) */
    int has_steps;
    double *confusion; /* k x k, or NULL */
    size_t k;
    const char *confusion_of;        /* "test" or "validation" */
    bp_config *cfg;                  /* the config stored in latest.h5, or NULL */
    char cfg_err[BP_PATH_MAX + 256]; /* why there is none */
} run_data;

#define MAX_TRACE_STEPS 50

typedef struct {
    const char *dirs[MAX_RUNS], *out, *script, *trace;
    int ndirs, force, trace_steps;
} plot_args;

static int parse_args(int argc, char **argv, plot_args *a, char *err, size_t len)
{
    memset(a, 0, sizeof(*a));
    a->trace_steps = 4;
    for (int i = 1; i < argc; i++) {
        const char *v;
        char *end;
        int r = bp_arg_value(argc, argv, &i, "--out", &v);
        if (r > 0)
            a->out = v;
        else if (r == 0 && (r = bp_arg_value(argc, argv, &i, "--trace", &v)) > 0) {
            if (!v[0])
                return snprintf(err, len, "--trace needs a trace file"), -1;
            a->trace = v;
        } else if (r == 0 && (r = bp_arg_value(argc, argv, &i, "--trace-steps", &v)) > 0) {
            long k = strtol(v, &end, 10);
            if (*v < '0' || *v > '9' || *end || k < 1 || k > MAX_TRACE_STEPS)
                return snprintf(err, len, "--trace-steps: '%s' is not a whole number from 1 to %d",
                                v, MAX_TRACE_STEPS),
                       -1;
            a->trace_steps = (int)k;
        } else if (r == 0 && (r = bp_arg_value(argc, argv, &i, "--script", &v)) > 0)
            a->script = v;
        else if (r == 0 && strcmp(argv[i], "--force") == 0)
            a->force = r = 1;
        else if (r == 0 && argv[i][0] != '-' && a->ndirs < MAX_RUNS)
            a->dirs[a->ndirs++] = argv[i], r = 1;
        else if (r == 0 && argv[i][0] != '-')
            return snprintf(err, len, "plot: at most %d runs in one picture", MAX_RUNS), -1;
        if (r <= 0)
            return snprintf(err, len, r < 0 ? "%s needs a value" : "plot: unexpected argument '%s'",
                            argv[i]),
                   -1;
    }
    if (a->ndirs == 0)
        return snprintf(err, len, "plot: missing RUN_DIR (see backprop plot --help)"), -1;
    return 0;
}

/* ---- what is drawn ---- */

static int split_csv(char *line, char **fields, int most)
{
    int n = 0;
    line[strcspn(line, "\r\n")] = 0;
    for (char *p = line; n < most;) {
        fields[n++] = p;
        char *comma = strchr(p, ',');
        if (!comma)
            break;
        *comma = 0;
        p = comma + 1;
    }
    return n;
}

/* The config stored in RUN_DIR/latest.h5, read once: it names the metrics file of a run
 * without RUN_DIR/metrics.csv and the data the confusion matrix is drawn from, which are
 * all inputs that the outputs must not replace. */
static void read_config(run_data *r)
{
    char path[BP_PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/latest.h5", r->dir);
    bp_checkpoint ck;
    if (bp_checkpoint_read(path, &ck, r->cfg_err, sizeof(r->cfg_err)) < 0)
        return;
    r->cfg = calloc(1, sizeof(*r->cfg));
    if (!r->cfg)
        snprintf(r->cfg_err, sizeof(r->cfg_err), "out of memory");
    else if (!ck.config_text)
        snprintf(r->cfg_err, sizeof(r->cfg_err), "%s: stores no config", path);
    if (r->cfg && (!ck.config_text || bp_config_parse(r->cfg, path, ck.config_text, NULL, 0,
                                                      r->cfg_err, sizeof(r->cfg_err)) != 0)) {
        free(r->cfg);
        r->cfg = NULL;
    }
    bp_checkpoint_free(&ck);
}

/* The run's metrics file: RUN_DIR/metrics.csv, else the one its config's [log] metrics
 * names (as stored in RUN_DIR/latest.h5; relative to where train ran, as train took it).
 * why: what to say when it cannot be opened. */
static void find_metrics(run_data *r, char *why, size_t len)
{
    snprintf(r->metrics, sizeof(r->metrics), "%s/metrics.csv", r->dir);
    snprintf(why, len, "plot takes run directories: a train run's [checkpoint] dir");
    char path[BP_PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/latest.h5", r->dir);
    if (access(r->metrics, F_OK) == 0 || access(path, F_OK) != 0)
        return;
    if (!r->cfg) {
        snprintf(why, len, "nor could the run's config be read: %s", r->cfg_err);
        return;
    }
    snprintf(r->metrics, sizeof(r->metrics), "%s", r->cfg->metrics);
    snprintf(why, len, "[log] metrics in the config stored in %s, relative to where train ran",
             path);
}

/* At most this many lines are read from a run's CSV files, each at most a line buffer long:
 * a file that never ends (one of zeros with no line end, a huge sparse file) is refused in
 * bounded time. */
#define MAX_LINES (MAX_EPOCHS + 1)

/* The next line of f into line: 1, 0 at the end, -1 for a line longer than len - 1 bytes
 * (without its end). */
static int next_line(FILE *f, char *line, size_t len)
{
    if (!fgets(line, (int)len, f))
        return 0;
    size_t n = strlen(line);
    if (n + 1 < len || line[n - 1] == '\n')
        return 1;
    int c = getc(f); /* a full buffer: the line goes on unless the file ends here */
    return c == EOF ? 1 : (ungetc(c, f), -1);
}

/* The run's metrics file: the drawn columns of every row, kept as text so that the plot gets
 * exactly what the file says. Opened as every input is: a FIFO or a device is refused, not
 * waited on or read forever. optional (a run drawn with its trace): a file that is not
 * there, or has no epochs yet, is no rows and no error. */
static int read_metrics(run_data *r, int optional, char *err, size_t len)
{
    char line[1024], why[BP_PATH_MAX + 512], open_err[BP_PATH_MAX + 128];
    const char *path = r->metrics;
    find_metrics(r, why, sizeof(why));
    int fd = bp_input_open(path, open_err, sizeof(open_err));
    FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;
    if (fd >= 0 && !f)
        close(fd);
    if (fd < 0 && access(path, F_OK) != 0 && optional)
        return 0;
    if (fd < 0 && access(path, F_OK) != 0) /* where plot looked, and why there */
        return bp_cli_fail(err, len, BP_EINVAL, "%s (%s)", open_err, why);
    if (fd < 0)
        return bp_cli_fail(err, len, BP_EINVAL, "%s", open_err);
    if (!f)
        return bp_cli_fail(err, len, BP_ENOMEM, "%s: %s", path, strerror(errno));
    int at[NCOLS], rc = 0, got;
    size_t lineno = 1;
    for (int c = 0; c < NCOLS; c++)
        at[c] = -1;
    char *fields[32];
    got = next_line(f, line, sizeof(line));
    int nf = got > 0 ? split_csv(line, fields, 32) : 0;
    for (int i = 0; i < nf; i++)
        for (int c = 0; c < NCOLS; c++)
            if (strcmp(fields[i], columns[c]) == 0)
                at[c] = i;
    if (got < 0 || at[0] < 0 || at[1] < 0)
        rc = bp_cli_fail(err, len, BP_EFORMAT,
                         "%s: not a backprop metrics file (no epoch and train_cost columns)", path);
    while (rc == 0 && (got = next_line(f, line, sizeof(line))) != 0) {
        if (++lineno > MAX_LINES) {
            rc = bp_cli_fail(err, len, BP_EFORMAT, "%s: more than %d lines", path, MAX_LINES);
            break;
        }
        if (got < 0) {
            rc = bp_cli_fail(err, len, BP_EFORMAT, "%s: line %zu is longer than %zu bytes", path,
                             lineno, sizeof(line) - 2);
            break;
        }
        nf = split_csv(line, fields, 32);
        if (nf < 2)
            continue;
        void *grown = realloc(r->rows, (r->nrows + 1) * sizeof(*r->rows));
        if (!grown) {
            rc = bp_cli_fail(err, len, BP_ENOMEM, "out of memory");
            break;
        }
        r->rows = grown;
        for (int c = 0; c < NCOLS; c++) {
            const char *v = at[c] >= 0 && at[c] < nf ? fields[at[c]] : "";
            char *end;
            double x = strtod(v, &end);
            if (*v && *end) {
                rc = bp_cli_fail(err, len, BP_EFORMAT, "%s: row %zu: '%.40s' is not a number", path,
                                 r->nrows + 2, v);
                break;
            }
            /* A diverged run's inf is drawn as missing, as an empty field is. */
            r->rows[r->nrows][c] = *v && isfinite(x) ? x : NAN;
            r->has[c] |= *v != 0 && isfinite(x);
        }
        r->nrows++;
    }
    if (rc == 0 && ferror(f))
        rc = bp_cli_fail(err, len, BP_EIO, "%s: read error", path);
    fclose(f);
    if (rc == 0 && r->nrows == 0 && !optional)
        rc = bp_cli_fail(err, len, BP_EFORMAT, "%s: no epochs yet", path);
    return rc;
}

/* RUN_DIR/step_times.csv (one row per train command of the run): the means over all their
 * steps. Absent in runs of older versions: then the panel says so. One that cannot be
 * read (not a file, lines without end) is a warning, and the panel says it is absent: the
 * rest of the picture does not need it. */
static void read_step_times(run_data *r)
{
    char path[BP_PATH_MAX + 32], line[512], err[BP_PATH_MAX + 128];
    snprintf(path, sizeof(path), "%s/step_times.csv", r->dir);
    if (access(path, F_OK) != 0 && errno == ENOENT)
        return;
    int fd = bp_input_open(path, err, sizeof(err));
    FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;
    if (fd >= 0 && !f) {
        snprintf(err, sizeof(err), "%s: %s", path, strerror(errno));
        close(fd);
    }
    if (!f) {
        bp_cli_warning("no step times for %s: %s", r->dir, err);
        return;
    }
    double sum[4] = {0}, steps = 0;
    int got;
    size_t lineno = 0;
    while ((got = next_line(f, line, sizeof(line))) != 0) {
        if (++lineno > MAX_LINES || got < 0) {
            if (got < 0)
                bp_cli_warning("no step times for %s: %s: line %zu is longer than %zu bytes",
                               r->dir, path, lineno, sizeof(line) - 2);
            else
                bp_cli_warning("no step times for %s: %s: more than %d lines", r->dir, path,
                               MAX_LINES);
            steps = 0;
            break;
        }
        double v[6];
        /* steps, data, compute, exchange, update, ranks (after the first_step column) */
        long first;
        if (sscanf(line, "%ld,%lf,%lf,%lf,%lf,%lf,%lf", &first, &v[0], &v[1], &v[2], &v[3], &v[4],
                   &v[5]) != 7 ||
            !(v[0] > 0) || !isfinite(v[0] + v[1] + v[2] + v[3] + v[4]))
            continue;
        for (int i = 0; i < 4; i++)
            sum[i] += v[0] * v[i + 1];
        steps += v[0];
    }
    fclose(f);
    if (steps > 0) {
        for (int i = 0; i < 4; i++)
            r->step[i] = sum[i] / steps;
        r->step[4] = steps;
        r->has_steps = 1;
    }
}

/* The final model's confusion matrix on the run's test set, else its validation set (as the
 * run's config names them); nothing when there is neither, or no labels. A set that cannot
 * be read is a warning: the rest of the picture does not need it. */
static void read_confusion(run_data *r)
{
    char path[BP_PATH_MAX + 32], err[2048] = "";
    snprintf(path, sizeof(path), "%s/latest.h5", r->dir);
    bp_checkpoint ck;
    const bp_config *cfg = r->cfg; /* read_config's: the data plot() checked as an input */
    if (!cfg) {
        bp_cli_warning("no confusion matrix for %s: %s", r->dir, r->cfg_err);
        return;
    }
    int rc = bp_checkpoint_read(path, &ck, err, sizeof(err));
    if (rc < 0) {
        bp_cli_warning("no confusion matrix for %s: %s", r->dir, err);
        return;
    }
    bp_eval_set set = {.seed = cfg->seed, .classes_only = 1};
    if (cfg->test[0])
        set.data = cfg->test, set.labels = cfg->test_labels, r->confusion_of = "test";
    else if (cfg->validation[0])
        set.data = cfg->validation, set.labels = cfg->validation_labels,
        r->confusion_of = "validation";
    else if (cfg->validation_split) /* the split's tail */
        set.data = cfg->train, set.labels = cfg->train_labels, r->confusion_of = "validation",
        set.limit = (size_t)cfg->limit, set.tail = (size_t)cfg->validation_split;
    bp_eval_result res = {0};
    if (set.data) {
        set.labels = set.labels[0] ? set.labels : NULL;
        rc = bp_eval_net(NULL, &ck.net, &set, &res, err, sizeof(err)); /* plot runs alone */
    }
    /* Non-finite outputs have no class: their argmax would count them all as class 0. */
    if (rc == 0 && res.confusion && !isfinite(res.cost_sum))
        rc = bp_cli_fail(err, sizeof(err), BP_EDIVERGED,
                         "%s: the network's outputs are not finite on this data (its values "
                         "overflow the model)",
                         set.data);
    if (rc == 0 && res.confusion) {
        r->k = res.k;
        r->confusion = calloc(r->k * r->k, sizeof(double));
        if (r->confusion)
            memcpy(r->confusion, res.confusion, r->k * r->k * sizeof(double));
    }
    if (rc < 0)
        bp_cli_warning("no confusion matrix for %s: %s", r->dir, err[0] ? err : bp_strerror(rc));
    bp_eval_result_free(&res);
    bp_checkpoint_free(&ck);
}

/* ---- the gnuplot script ---- */

/* The one way a string from outside reaches the script (the guarantee at the top): bytes
 * outside printable ASCII, quotes, backslash, '$', '@', backtick and '#' become '?'. */
static void script_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        fputc(c < 0x20 || c > 0x7e || strchr("'\"\\$@`#", c) ? '?' : c, f);
    }
}

/* A gnuplot single-quoted string of an outside string. */
static void quoted(FILE *f, const char *s)
{
    fputc('\'', f);
    script_text(f, s);
    fputc('\'', f);
}

/* A string in a data block: gnuplot reads a double-quoted one as one column. */
static void data_string(FILE *f, const char *s)
{
    fputc('"', f);
    script_text(f, s);
    fputc('"', f);
}

/* A value of metrics.csv: the shortest of %.9g (what train writes) and %.17g that reads
 * back as the same double, so that a file train wrote is drawn digit for digit. */
static void data_number(FILE *f, double v)
{
    char text[32];
    if (isnan(v)) {
        fputs("NaN", f);
        return;
    }
    snprintf(text, sizeof(text), "%.9g", v);
    if (strtod(text, NULL) != v)
        snprintf(text, sizeof(text), "%.17g", v);
    fputs(text, f);
}

/* A panel with nothing to draw but why. */
static void empty_panel(FILE *f, const char *why)
{
    fprintf(f,
            "set label 1 '%s' at graph 0.5,0.5 center\nset xrange [0:1]\nset yrange [0:1]\n"
            "unset xtics\nunset ytics\nunset xlabel\nplot -1 notitle\nunset label 1\n"
            "set xrange [*:*]\nset yrange [*:*]\nset xtics\nset ytics\n",
            why);
}

/* The runs' data blocks: metrics per run, step times, confusion matrices. */
static void write_run_blocks(FILE *f, const run_data *runs, int n)
{
    for (int i = 0; i < n; i++) {
        /* one block per run: epoch, then cost train/val/test, accuracy train/val/test */
        fprintf(f,
                "$metrics_%d << EOD\n# epoch train_cost val_cost test_cost train_accuracy "
                "val_accuracy test_accuracy\n",
                i);
        for (size_t e = 0; e < runs[i].nrows; e++) {
            for (int c = 0; c < NCOLS; c++) {
                if (c)
                    fputc(' ', f);
                data_number(f, runs[i].rows[e][c]);
            }
            fputc('\n', f);
        }
        fprintf(f, "EOD\n");
    }
    fprintf(f, "$steps << EOD\n# run data_ms compute_ms exchange_ms update_ms steps\n");
    for (int i = 0; i < n; i++)
        if (runs[i].has_steps) {
            data_string(f, runs[i].dir);
            fprintf(f, " %.6g %.6g %.6g %.6g %.0f\n", runs[i].step[0], runs[i].step[1],
                    runs[i].step[2], runs[i].step[3], runs[i].step[4]);
        }
    fprintf(f, "EOD\n");
    for (int i = 0; i < n; i++)
        if (runs[i].confusion) {
            fprintf(f, "$confusion_%d << EOD\n", i);
            for (size_t a = 0; a < runs[i].k; a++)
                for (size_t b = 0; b < runs[i].k; b++)
                    fprintf(f, "%.0f%c", runs[i].confusion[a * runs[i].k + b],
                            b + 1 == runs[i].k ? '\n' : ' ');
            fprintf(f, "EOD\n");
        }
}

/* The runs' panels, in the multiplot layout's slots. Key titles and labels: gnuplot's
 * enhanced text would read _ and ^ as sub- and superscripts, so titles are marked
 * noenhanced where they are used. */
static void write_run_panels(FILE *f, const run_data *runs, int n)
{
    size_t epochs = 0;
    for (int i = 0; i < n; i++)
        epochs = runs[i].nrows > epochs ? runs[i].nrows : epochs;
    static const char *const sets[] = {"train", "validation", "test"};
    /* A colour per set (train, validation, test), a dash pattern per run. */
    static const char *const colour[] = {"#1b6ca8", "#d95f02", "#2ca02c"};
    if (epochs <= 20)
        fprintf(f, "set xtics 1\n");
    fprintf(f, "set format x '%%.0f'\n");
    for (int panel = 0; panel < 2; panel++) {
        fprintf(f, "set title '%s'\nset xlabel 'epoch'\nset ylabel '%s'\n",
                panel ? "Accuracy per epoch" : "Cost per epoch (mean per example, no L2 term)",
                panel ? "accuracy (%)" : "cost (per example)");
        int any = 0;
        for (int i = 0; i < n; i++)
            for (int s = 0; s < 3; s++)
                any |= runs[i].has[1 + 3 * panel + s];
        if (!any) { /* real-valued targets have no accuracy */
            empty_panel(f, "no accuracy: the targets are not class labels");
            continue;
        }
        fprintf(f, "plot ");
        int first = 1;
        for (int i = 0; i < n; i++)
            for (int s = 0; s < 3; s++) {
                int col = 1 + 3 * panel + s; /* 0-based in columns[] */
                if (!runs[i].has[col])
                    continue;
                fprintf(f,
                        "%s$metrics_%d using 1:(%s$%d) with linespoints lc rgb '%s' dt %d pt 7 "
                        "ps 0.6 title ",
                        first ? "" : ", \\\n     ", i, panel ? "100*" : "", col + 1, colour[s],
                        i % 5 + 1);
                char title[BP_PATH_MAX + 32];
                if (n > 1)
                    snprintf(title, sizeof(title), "%s: %s", runs[i].dir, sets[s]);
                else
                    snprintf(title, sizeof(title), "%s", sets[s]);
                quoted(f, title);
                first = 0;
            }
        fprintf(f, "\n");
    }
    /* Where a step's time went: one stacked bar per run. */
    fprintf(f, "set title 'Where a step''s time went (rank 0, mean over the steps)'\n"
               "set xlabel ''\nset ylabel 'ms per step'\nset style data histograms\n"
               "set style histogram rowstacked\nset style fill solid 0.8 border -1\n"
               "set boxwidth 0.6\nset yrange [0:*]\nset xtics noenhanced\n");
    int any_steps = 0;
    for (int i = 0; i < n; i++)
        any_steps |= runs[i].has_steps;
    if (any_steps)
        fprintf(f,
                "plot $steps using 2:xtic(1) title 'data', '' using 3 title 'compute', "
                "'' using 4 title 'exchange', '' using 5 title 'update', '' using 0:($2+$3+$4+$5):"
                "(sprintf('%%.3f ms', $2+$3+$4+$5)) with labels offset 0,0.8 notitle\n");
    else
        empty_panel(f, "no step_times.csv (runs of an older backprop)");
    fprintf(f, "set style data points\nset xtics auto\nset format x '%%g'\nset yrange [*:*]\n");
    for (int i = 0; i < n; i++) {
        if (!runs[i].confusion)
            continue;
        size_t k = runs[i].k;
        char title[BP_PATH_MAX + 64];
        snprintf(title, sizeof(title), "Confusion matrix, %s set%s%s (rows: true class)",
                 runs[i].confusion_of, n > 1 ? ", " : "", n > 1 ? runs[i].dir : "");
        fprintf(f, "set title ");
        quoted(f, title);
        fprintf(f,
                "\nset xlabel 'predicted class'\nset ylabel 'true class'\n"
                "set xrange [-0.5:%zu.5]\nset yrange [%zu.5:-0.5]\nset xtics 1\nset ytics 1\n"
                "set cblabel 'examples'\nset palette defined (0 'white', 1 '#2166ac')\n"
                "plot $confusion_%d matrix with image notitle, '' matrix using 1:2:"
                "(sprintf('%%d', int($3))) with labels font ',8' notitle\n",
                k - 1, k - 1, i);
    }
}

/* ---- the timeline ---- */

/* A kind's word in the data block and its key title. */
static const char *const kind_word[BP_TRACE_KINDS] = {
    "data",   "forward",    "backward",   "compute",    "exchange",
    "update", "collective", "checkpoint", "evaluation", "other"};
/* data, compute (forward, backward), exchange and update as the step-time panel colours
 * them (gnuplot's first four line colours); the rest apart from those and from the red
 * outline of an unfinished event. */
static const char *const kind_colour[BP_TRACE_KINDS] = {"#9400d3", "#7fd3b9", "#009e73", "#006e52",
                                                        "#56b4e9", "#e69f00", "#f0e442", "#8c6d31",
                                                        "#cc79a7", "#404040"};

/* Layout rows (400 pixels each) for the timeline: a rank's four sub-lanes take about 70. */
static int timeline_rows(const bp_cli_trace *t)
{
    return (140 + 70 * t->nranks + 399) / 400;
}

/* $timeline: a row per box (lane: its rank's place from the top; sublane: 0 the trainer
 * thread, 1 the bucket exchanges, 2 the cross-node sums, 3 the checkpoint writer);
 * $trace_steps: where each step begins on the top rank, and whether it is labelled (a
 * label at least 4 % of the width from the one before stays legible). */
static void write_timeline_blocks(FILE *f, const bp_cli_trace *t)
{
    fprintf(f, "$timeline << EOD\n# rank lane sublane start_ms end_ms category unfinished\n");
    for (size_t i = 0; i < t->nboxes; i++) {
        const bp_cli_trace_box *b = &t->boxes[i];
        fprintf(f, "%d %d %d %.6f %.6f %s %d\n", b->rank, bp_cli_trace_lane(t, b->rank), b->sublane,
                b->start, b->end, kind_word[b->kind], b->unfinished);
    }
    fprintf(f, "EOD\n$trace_steps << EOD\n# step at_ms labelled\n");
    double labelled = -INFINITY;
    for (long s = 0; t->has_window && s <= t->last_step - t->first_step; s++) {
        double at = t->step_at[s];
        if (isnan(at))
            continue;
        int label = at - labelled >= 0.04 * t->span;
        labelled = label ? at : labelled;
        fprintf(f, "%ld %.6f %d\n", t->first_step + s, at, label);
    }
    fprintf(f, "EOD\n");
}

/* The timeline across the picture's width, below the other panels (frac: its share of the
 * height). Lanes top to bottom by rank; the trainer's phases thick, the other sub-lanes
 * thin; an unfinished event hatched and outlined in red to the window's edge. */
static void write_timeline_panel(FILE *f, const bp_cli_trace *t, const char *path, double frac)
{
    char title[BP_PATH_MAX + 256];
    int n = snprintf(title, sizeof(title), "Timeline of %s", path);
    char beyond[96] = "";
    if (t->to_end && t->beyond_ms >= 1)
        snprintf(beyond, sizeof(beyond),
                 "; unfinished at the edge, %.3g s more to the end of the trace",
                 t->beyond_ms / 1000.0);
    else if (t->to_end)
        snprintf(beyond, sizeof(beyond), "; unfinished at the edge");
    if (n < (int)sizeof(title) && t->has_window && t->first_step < t->last_step)
        n += snprintf(title + n, sizeof(title) - (size_t)n, ": steps %ld..%ld%s", t->first_step,
                      t->last_step, beyond);
    else if (n < (int)sizeof(title) && t->has_window)
        n += snprintf(title + n, sizeof(title) - (size_t)n, ": step %ld%s", t->last_step, beyond);
    if (t->all_ranks > t->nranks && n < (int)sizeof(title))
        snprintf(title + n, sizeof(title) - (size_t)n, " (%d of %d ranks)", t->nranks,
                 t->all_ranks);
    fprintf(f, "set origin 0,0\nset size 1,%.6f\nunset label\nunset colorbox\nset title ", frac);
    quoted(f, title);
    fprintf(f,
            "\nset xlabel \"ms from the first event of step %ld\\nin a lane, top to bottom: "
            "the trainer thread, the bucket exchanges, the cross-node sums, the checkpoint "
            "writer\"\nunset ylabel\nset format x '%%g'\nset xtics autofreq\n"
            "unset grid\nset grid xtics\nset key outside right top vertical Left reverse\n",
            t->first_step);
    if (!t->has_window || t->nranks == 0) {
        empty_panel(f, "no event in the trace names its step");
        return;
    }
    fprintf(f, "set xrange [0:%.6f]\nset yrange [%.1f:-0.75]\nset ytics (",
            t->span > 0 ? t->span : 1, t->nranks - 0.5);
    for (int i = 0; i < t->nranks; i++) {
        fprintf(f, "%s", i ? ", " : "");
        quoted(f, t->names[i]);
        fprintf(f, " %d", i);
    }
    /* A sub-lane's centre and half-height in a lane one unit high. */
    fprintf(f,
            ")\nsub_y(s) = s == 0 ? -0.2 : s == 1 ? 0.09 : s == 2 ? 0.22 : 0.35\n"
            "sub_h(s) = s == 0 ? 0.22 : 0.06\n"
            "plot $trace_steps using 2:(-0.75):(0):(%d.25) with vectors nohead "
            "lc rgb '#c0c0c0' notitle, \\\n"
            "     '' using 2:(-0.62):($3 != 0 ? sprintf('%%d', $1) : '') with labels left "
            "offset 0.3,0 tc rgb '#808080' notitle",
            t->nranks);
    int present[BP_TRACE_KINDS] = {0}, unfinished = 0;
    for (size_t i = 0; i < t->nboxes; i++)
        present[t->boxes[i].kind] = 1, unfinished |= t->boxes[i].unfinished;
    for (int k = 0; k < BP_TRACE_KINDS; k++)
        if (present[k])
            fprintf(f,
                    ", \\\n     $timeline using (strcol(6) eq '%s' ? ($4+$5)/2 : NaN):"
                    "($2+sub_y($3)):(($5-$4)/2):(sub_h($3)) with boxxyerror "
                    "fs solid 0.85 border lc rgb '#303030' lw 0.5 lc rgb '%s' title '%s'",
                    kind_word[k], kind_colour[k], kind_word[k]);
    if (unfinished)
        fprintf(f, ", \\\n     $timeline using ($7 != 0 ? ($4+$5)/2 : NaN):($2+sub_y($3)):"
                   "(($5-$4)/2):(sub_h($3)) with boxxyerror fs transparent pattern 4 border "
                   "lc rgb '#d00000' lw 2 title 'unfinished'");
    fprintf(f, "\n");
}

/* The script: the runs' panels two to a row, then the timeline across the width below
 * them (the picture alone when the run has no metrics yet). */
static void write_script(FILE *f, const run_data *runs, int n, const bp_cli_trace *trace,
                         const char *trace_path, const char *out)
{
    int conf = 0;
    for (int i = 0; i < n; i++)
        conf += runs[i].confusion != NULL;
    int rows = runs[0].nrows ? (3 + conf + 1) / 2 : 0, trows = trace ? timeline_rows(trace) : 0;
    fprintf(f, "# backprop plot: gnuplot script with the data it draws\n");
    /* Sized for README's column: readable at 1100 pixels wide. */
    fprintf(f, "set terminal pngcairo size 1100,%d font 'sans,10' noenhanced\n",
            400 * (rows + trows));
    if (out) { /* else the picture goes to gnuplot's stdout */
        fprintf(f, "set output ");
        quoted(f, out);
        fputc('\n', f);
    }
    fprintf(f, "set datafile missing 'NaN'\nset grid\nset key below\n");
    if (rows)
        write_run_blocks(f, runs, n);
    if (trace)
        write_timeline_blocks(f, trace);
    fprintf(f, "set multiplot layout %d,2\n", rows + trows);
    if (rows)
        write_run_panels(f, runs, n);
    if (trace)
        write_timeline_panel(f, trace, trace_path, (double)trows / (rows + trows));
    fprintf(f, "unset multiplot\n");
}

/* Runs gnuplot on the script, the picture to png (a new file): 0, or the reason (its first
 * error line) for the one line. Neither path is on gnuplot's command line: the script is
 * its stdin, the picture its stdout. */
static int run_gnuplot(const char *script_path, const char *png, char *err, size_t len)
{
    int fd[2], in = open(script_path, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return bp_cli_fail(err, len, BP_EIO, "%s: cannot read: %s", script_path, strerror(errno));
    int out = open(png, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (out < 0) {
        close(in);
        return bp_cli_fail(err, len, BP_EIO, "%s: cannot write: %s", png, strerror(errno));
    }
    if (pipe(fd) != 0) {
        close(in), close(out);
        return bp_cli_fail(err, len, BP_EIO, "cannot start gnuplot: %s", strerror(errno));
    }
    pid_t pid = fork();
    if (pid == 0) {
        dup2(in, 0);
        dup2(out, 1);
        dup2(fd[1], 2);
        close(fd[0]);
        execlp("gnuplot", "gnuplot", "/dev/stdin", (char *)NULL);
        _exit(127);
    }
    close(in);
    close(out);
    close(fd[1]);
    FILE *p = pid > 0 ? fdopen(fd[0], "r") : NULL;
    /* gnuplot says where it stopped on its last non-empty line ("/dev/stdin" line N: why). */
    char said[512] = "", line[512];
    while (p && fgets(line, sizeof(line), p))
        if (line[strspn(line, " \t\n^")])
            snprintf(said, sizeof(said), "%s", line + strspn(line, " \t"));
    if (p)
        fclose(p);
    else
        close(fd[0]);
    int status = -1;
    while (pid > 0 && waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    said[strcspn(said, "\n")] = 0;
    if (pid < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return bp_cli_fail(err, len, BP_EIO, "gnuplot failed%s%s", said[0] ? ": " : "", said);
    return 0;
}

/* gnuplot on PATH, with a cairo PNG terminal: the package to install otherwise. */
static int have_gnuplot(char *err, size_t len)
{
    FILE *p = popen("gnuplot -e \"set terminal pngcairo\" 2>&1 </dev/null; echo \"rc=$?\"", "r");
    char line[512], all[2048] = "";
    while (p && fgets(line, sizeof(line), p))
        strncat(all, line, sizeof(all) - strlen(all) - 1);
    if (p)
        pclose(p);
    if (strstr(all, "rc=127") || strstr(all, "not found"))
        return bp_cli_fail(err, len, BP_EINVAL,
                           "plot needs gnuplot, which is not installed (Debian: apt-get install "
                           "gnuplot-nox)");
    if (!strstr(all, "rc=0") || strstr(all, "unknown"))
        return bp_cli_fail(err, len, BP_EINVAL,
                           "plot needs gnuplot's pngcairo terminal, which this gnuplot lacks "
                           "(Debian: apt-get install gnuplot-nox)");
    return 0;
}

/* The directory part of path ("." when there is none, "/" for "/x"), into out. */
static void dir_of(const char *path, char *out, size_t len)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(out, len, ".");
    else
        snprintf(out, len, "%.*s", slash == path ? 1 : (int)(slash - path), path);
}

/* Whether two output paths name one file: the same file when both exist, else the same
 * name in the same directory (bp_output_check has seen both directories exist, and that
 * neither path is a symbolic link). */
static int same_output(const char *a, const char *b)
{
    if (access(a, F_OK) == 0 && access(b, F_OK) == 0)
        return bp_same_file(a, b);
    char dir_a[BP_PATH_MAX + 32], dir_b[BP_PATH_MAX + 32];
    dir_of(a, dir_a, sizeof(dir_a));
    dir_of(b, dir_b, sizeof(dir_b));
    const char *name_a = strrchr(a, '/'), *name_b = strrchr(b, '/');
    name_a = name_a ? name_a + 1 : a;
    name_b = name_b ? name_b + 1 : b;
    return strcmp(name_a, name_b) == 0 && bp_same_file(dir_a, dir_b);
}

/* "wrote OUT: RUN (N epochs, ...); ..." on stdout. Its paths come from the command line and
 * the file system: their control bytes are escaped as in an error line, so that a
 * directory's name cannot move the cursor or clear the screen. */
static void print_wrote(const char *out, const run_data *runs, int n, int timeline)
{
    char *text = NULL;
    size_t size = 0;
    FILE *mem = open_memstream(&text, &size);
    if (!mem)
        return;
    fprintf(mem, "wrote %s:", out);
    for (int i = 0; i < n && runs[0].nrows; i++)
        fprintf(mem, "%s %s (%zu epochs%s%s%s)", i ? ";" : "", runs[i].dir, runs[i].nrows,
                runs[i].has_steps ? ", step times" : "",
                runs[i].confusion ? ", confusion matrix" : "",
                i == 0 && timeline ? ", timeline" : "");
    if (!runs[0].nrows) /* a run with a trace and no epochs yet */
        fprintf(mem, " %s (no epochs yet, timeline)", runs[0].dir);
    char *shown = fclose(mem) == 0 ? calloc(4 * size + 1, 1) : NULL;
    if (shown) {
        bp_cli_printable(shown, text);
        printf("%s\n", shown);
        fflush(stdout);
    }
    free(shown);
    free(text); /* open_memstream's */
}

static int plot(const plot_args *a, char *err, size_t len)
{
    char out[BP_PATH_MAX + 32];
    int replace = a->force;
    if (a->out) {
        snprintf(out, sizeof(out), "%s", a->out);
    } else {
        snprintf(out, sizeof(out), "%s/plot.png", a->dirs[0]);
        replace = 1; /* the run directory's own picture */
    }
    /* The timeline's trace: --trace, else the first run's trace.json when it has one. */
    char trace_path[BP_PATH_MAX + 32];
    snprintf(trace_path, sizeof(trace_path), "%s/trace.json", a->dirs[0]);
    if (a->trace)
        snprintf(trace_path, sizeof(trace_path), "%s", a->trace);
    int has_trace = a->trace || access(trace_path, F_OK) == 0;
    bp_cli_trace trace = {0};
    run_data runs[MAX_RUNS];
    memset(runs, 0, sizeof(runs));
    int rc = 0;
    if (a->trace && strlen(a->trace) >= sizeof(trace_path))
        rc = bp_cli_fail(err, len, BP_EINVAL, "--trace: name too long");
    for (int i = 0; i < a->ndirs && rc == 0; i++) {
        runs[i].dir = a->dirs[i];
        read_config(&runs[i]);
        /* One run and its trace: a run the watchdog ended before an epoch still has that. */
        rc = read_metrics(&runs[i], has_trace && a->ndirs == 1, err, len);
    }
    if (rc == 0 && has_trace)
        rc = bp_cli_trace_read(trace_path, a->trace_steps, &trace, err, len);
    /* The runs' own files are inputs: never replaced, --force or not. So are the data sets
     * their configs name, which the confusion matrices are drawn from. */
    enum { PER_RUN = 9 };
    static char files[MAX_RUNS * 3][BP_PATH_MAX + 32];
    const char *inputs[MAX_RUNS * PER_RUN + 2];
    int ninputs = 0;
    if (has_trace)
        inputs[ninputs++] = trace_path;
    for (int i = 0; i < a->ndirs; i++) {
        for (int j = 0; j < 3; j++) {
            static const char *const names[] = {"metrics.csv", "step_times.csv", "latest.h5"};
            snprintf(files[3 * i + j], sizeof(files[0]), "%s/%s", a->dirs[i], names[j]);
            inputs[ninputs++] = j == 0 && runs[i].metrics[0] ? runs[i].metrics : files[3 * i + j];
        }
        const bp_config *c = runs[i].cfg;
        const char *const data[] = {c ? c->train : "",      c ? c->train_labels : "",
                                    c ? c->validation : "", c ? c->validation_labels : "",
                                    c ? c->test : "",       c ? c->test_labels : ""};
        for (int j = 0; j < PER_RUN - 3; j++)
            if (data[j][0])
                inputs[ninputs++] = data[j];
    }
    inputs[ninputs] = NULL;
    if (rc == 0)
        rc = bp_output_check(out, replace ? BP_OUT_REPLACE : 0, inputs, err, len);
    if (rc == 0 && a->script)
        rc = bp_output_check(a->script, a->force ? BP_OUT_REPLACE : 0, inputs, err, len);
    bp_cli_force_hint(rc, err, len);
    if (rc == 0 && a->script && same_output(out, a->script))
        rc = bp_cli_fail(err, len, BP_EINVAL,
                         "%s: is also the picture's output; the script and the picture need a "
                         "file each",
                         a->script);
    if (rc == 0)
        rc = have_gnuplot(err, len);
    for (int i = 0; i < a->ndirs && rc == 0 && runs[0].nrows; i++) {
        read_step_times(&runs[i]);
        read_confusion(&runs[i]);
    }
    /* gnuplot draws into a temporary file beside the picture, from a script saved there
     * too; the picture is then renamed into place. --script gets the same script, with a
     * line that draws to the final name. */
    char script[BP_PATH_MAX + 64] = "", tmp_png[BP_PATH_MAX + 64] = "";
    if (rc == 0 && (bp_temp_name(out, tmp_png, sizeof(tmp_png)) < 0 ||
                    snprintf(script, sizeof(script), "%s.gp", tmp_png) >= (int)sizeof(script)))
        rc = bp_cli_fail(err, len, BP_EINVAL, "%s: name too long", out);
    FILE *f = rc == 0 ? fopen(script, "wx") : NULL;
    if (rc == 0 && !f)
        rc = bp_cli_fail(err, len, BP_EIO, "%s: cannot write: %s", script, strerror(errno));
    if (f) {
        write_script(f, runs, a->ndirs, has_trace ? &trace : NULL, trace_path, NULL);
        if (fclose(f) != 0)
            rc = bp_cli_fail(err, len, BP_EIO, "%s: cannot write: %s", script, strerror(errno));
        if (rc == 0)
            rc = run_gnuplot(script, tmp_png, err, len);
        if (rc == 0 && rename(tmp_png, out) != 0)
            rc = bp_cli_fail(err, len, BP_EIO, "%s: cannot write: %s", out, strerror(errno));
        unlink(script);
        unlink(tmp_png);
    }
    char *text = NULL;
    size_t size = 0;
    FILE *mem = rc == 0 && a->script ? open_memstream(&text, &size) : NULL;
    if (mem) {
        write_script(mem, runs, a->ndirs, has_trace ? &trace : NULL, trace_path, out);
        fclose(mem);
        rc = bp_publish(a->script, text, size, a->force ? BP_OUT_REPLACE : 0, err, len);
        bp_cli_force_hint(rc, err, len);
        free(text);
    }
    if (rc == 0)
        print_wrote(out, runs, a->ndirs, has_trace);
    for (int i = 0; i < a->ndirs; i++) {
        free(runs[i].rows);
        free(runs[i].confusion);
        free(runs[i].cfg);
    }
    bp_cli_trace_free(&trace);
    return rc;
}

int bp_cmd_plot(int argc, char **argv)
{
    if (bp_cli_wants_help(argc, argv)) {
        fputs(plot_usage, stdout);
        return EXIT_OK;
    }
    char err[2048] = ""; /* bp_cli_force_hint reads it after a check that wrote nothing */
    plot_args a;
    if (parse_args(argc, argv, &a, err, sizeof(err)) < 0) {
        bp_cli_error(0, "%s", err);
        return EXIT_BAD_INPUT;
    }
    /* One process draws: under mpirun every rank would write the same file. */
    const char *ranks = getenv("OMPI_COMM_WORLD_SIZE");
    if (ranks && atoi(ranks) > 1) {
        if (atoi(getenv("OMPI_COMM_WORLD_RANK") ? getenv("OMPI_COMM_WORLD_RANK") : "0") == 0)
            bp_cli_error(0, "plot runs alone, not under mpirun");
        return EXIT_BAD_INPUT;
    }
    int rc = plot(&a, err, sizeof(err));
    if (rc < 0)
        bp_cli_error(0, "%s", err);
    /* Writing (the picture, the script) or gnuplot failing is a failure during work; the
     * rest was found before any. */
    return rc == 0 ? EXIT_OK : rc == BP_EIO ? EXIT_FAILURE_DURING_WORK : EXIT_BAD_INPUT;
}
