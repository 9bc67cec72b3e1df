/* The command-line front end: each subcommand in its own file. Only this layer prints
 * errors and picks exit statuses. */
#ifndef BACKPROP_CLI_H
#define BACKPROP_CLI_H

#include <stdio.h>

#include "backprop/checkpoint.h"
#include "backprop/comm.h"
#include "backprop/config.h"

enum { EXIT_OK = 0, EXIT_FAILURE_DURING_WORK = 1, EXIT_BAD_INPUT = 2, EXIT_STOPPED = 3 };

int bp_cmd_train(int argc, char **argv);
int bp_cmd_eval(int argc, char **argv);
int bp_cmd_predict(int argc, char **argv);
int bp_cmd_gradcheck(int argc, char **argv);
int bp_cmd_inspect(int argc, char **argv);
int bp_cmd_convert(int argc, char **argv);
int bp_cmd_plot(int argc, char **argv);
int bp_cmd_launch(int argc, char **argv);

/* "backprop: error: WHAT" on stderr, with "[rank R] " for ranks other than 0. WHAT may
 * quote file contents and paths: control characters and bytes that are not UTF-8 are
 * written as escapes (\r, \x1b), so the line is one line and nothing in it reaches the
 * terminal as a control sequence. */
void bp_cli_error(int rank, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* msg as one line of text into out, which holds 4 bytes for each of msg's and a NUL:
 * bp_cli_error's escapes, for any line that quotes a path or a file (plot's "wrote"). */
void bp_cli_printable(char *out, const char *msg);

/* A line on stdout (flushed), escaped as bp_cli_error's WHAT: for lines that name a path
 * or quote a file ("wrote FILE", inspect's stored config). */
void bp_cli_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* "backprop: warning: WHAT" on stderr, escaped as bp_cli_error's WHAT. */
void bp_cli_warning(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* All ranks agree on the worst status; the rank that reported it prints msg. Returns the
 * agreed exit status. */
int bp_cli_agree(const bp_comm *comm, int status, const char *msg);

/* MPI, then the watchdog with the CLI's error line: no collective waits more than
 * BP_CLI_TIMEOUT seconds until a config says otherwise ([comm] timeout, which train and
 * gradcheck apply). Then every rank checks it runs the same command as rank 0. 0, or the
 * exit status after printing why: 1 where MPI or the thread failed, 2 for another command. */
#define BP_CLI_TIMEOUT 300.0
int bp_cli_init(int *argc, char ***argv, bp_comm *comm);

/* After a collective library call failed (the ranks already agree): the rank whose err
 * holds the reason prints it; returns status. */
int bp_cli_report(const bp_comm *comm, int status, const char *err);

/* "  train_cost 0.4563  train_acc 83.62%  val_cost ..." for the values a row has. */
void bp_cli_print_metrics(FILE *f, const bp_metrics_row *r);

/* The library says an output exists (BP_EEXIST); which option replaces it is ours: appends
 * "; add --force to replace it" to err (empty err, or another rc: untouched). */
void bp_cli_force_hint(int rc, char *err, size_t errlen);

/* Writes a formatted message into err and returns code: the library's way of failing, for
 * the CLI's own checks. */
int bp_cli_fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* bp_config_load, with the overrides' errors named by the flag that gave them ("--set
 * train.epochs=0: ..." where the library says "override train.epochs=0: ..."). */
int bp_cli_config_load(bp_config *cfg, const char *path, const char *const *sets, int nsets,
                       char *err, size_t errlen);

/* Exit status for a library error met before work started. */
int bp_cli_setup_status(int code);

/* True when argv[i] is "--help" or "-h" for some i. */
int bp_cli_wants_help(int argc, char **argv);

/* plot's timeline (plot_trace.c): the last steps of a trace train wrote, as boxes per rank.
 * Kinds colour the boxes; sub-lanes stack a rank's threads. */
enum {
    BP_TRACE_DATA,
    BP_TRACE_FORWARD,
    BP_TRACE_BACKWARD,
    BP_TRACE_COMPUTE,
    BP_TRACE_EXCHANGE,
    BP_TRACE_UPDATE,
    BP_TRACE_COLLECTIVE,
    BP_TRACE_CHECKPOINT,
    BP_TRACE_EVALUATION,
    BP_TRACE_OTHER,
    BP_TRACE_KINDS
};
enum { BP_TRACE_TRAINER, BP_TRACE_BUCKETS, BP_TRACE_EXCHANGE_THREAD, BP_TRACE_WRITER };
#define BP_TRACE_MAX_LANES 32
typedef struct {
    int rank, sublane, kind, unfinished;
    double start, end; /* ms from the window's start */
} bp_cli_trace_box;
typedef struct {
    bp_cli_trace_box *boxes; /* by rank, sub-lane, start */
    size_t nboxes;
    int ranks[BP_TRACE_MAX_LANES]; /* the drawn ranks, ascending: a lane each */
    char names[BP_TRACE_MAX_LANES][64];
    int nranks, all_ranks;
    int has_window, steps;      /* whether some event names its step; the steps asked */
    long first_step, last_step; /* the window's */
    double *step_at;            /* ms of step first_step + i's first event on the top rank */
    double span;                /* ms from the window's start to its end */
    int to_end;                 /* some event of the window never ended (the watchdog's trace) */
    double beyond_ms;           /* then: how long the trace goes on past the window's end */
} bp_cli_trace;

/* Reads path: 0, or BP_EFORMAT with "PATH: not a trace (WHY)" (BP_EINVAL when it cannot be
 * opened, BP_EIO, BP_ENOMEM). */
int bp_cli_trace_read(const char *path, int steps, bp_cli_trace *t, char *err, size_t errlen);
void bp_cli_trace_free(bp_cli_trace *t);
/* The lane of a rank, or -1 when it has none. */
int bp_cli_trace_lane(const bp_cli_trace *t, int rank);

#endif
