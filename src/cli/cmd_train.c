/* backprop train CONFIG [--set SECTION.KEY=VALUE]... [--resume CKPT|latest|auto] */
#define _GNU_SOURCE /* sigabbrev_np */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "backprop/data.h"
#include "backprop/files.h"
#include "backprop/runtime.h"
#include "backprop/train.h"
#include "cli.h"

#define MAX_SETS 64

static const char train_usage[] =
    "usage: backprop train CONFIG [--set SECTION.KEY=VALUE]... [--resume CKPT|latest|auto]\n"
    "                      [--trace PATH]\n"
    "\n"
    "Trains the network CONFIG describes; under mpirun -np N each rank computes the\n"
    "gradient of 1/N of every mini-batch. --set overrides a config key; --resume continues\n"
    "from a checkpoint (latest = the newest in [checkpoint] dir) at the exact example where\n"
    "it was taken; auto = latest when [checkpoint] dir holds a checkpoint, else a fresh\n"
    "run (for job scripts that start again after a requeue). --trace PATH is --set\n"
    "log.trace=PATH: the last steps' phases of every rank as a Chrome trace-event JSON\n"
    "(Perfetto, chrome://tracing, backprop plot), written at the end, on a stop, and by the\n"
    "watchdog when a collective hangs.\n"
    "\n"
    "SIGTERM, SIGINT or SIGUSR1 to any rank (mpirun forwards SIGUSR1 to all) stops the run\n"
    "at the end of the step: a checkpoint is written and train exits with status 3.\n";

/* The config keys, from the library's own table (docs/config.md explains each). */
/* text from column `at`, words wrapped before column 80, continued at column `at`. */
static void print_wrapped(const char *text, int at)
{
    int col = at;
    printf("%*s", at, "");
    while (*text) {
        int word = (int)strcspn(text, " ");
        if (col > at && col + 1 + word > 80) {
            printf("\n%*s", at, "");
            col = at;
        } else if (col > at) {
            putchar(' ');
            col++;
        }
        printf("%.*s", word, text);
        col += word;
        text += word;
        text += strspn(text, " ");
    }
    putchar('\n');
}

/* Every config key, by section: its values and default, then what it does. */
static void print_config_keys(void)
{
    fputs("\nConfig keys (docs/config.md says more):\n", stdout);
    bp_config_key k;
    const char *section = "";
    for (size_t i = 0; bp_config_describe(i, &k) == 0; i++) {
        if (strcmp(k.section, section) != 0)
            printf("[%s]\n", section = k.section);
        if (strcmp(k.fallback, "—") == 0) /* optional, and nothing in its place */
            printf("  %s = %s\n", k.key, k.type);
        else
            printf("  %s = %s; %s%s\n", k.key, k.type,
                   strncmp(k.fallback, "required", 8) == 0 ? "" : "default ", k.fallback);
        print_wrapped(k.help, 6);
    }
}

typedef struct {
    const char *config, *resume;
    const char *sets[MAX_SETS + 1]; /* and --trace's, last */
    int nsets;
    char trace[BP_PATH_MAX + 16]; /* "log.trace=PATH" */
} train_args;

static int parse_args(int argc, char **argv, train_args *a, char *err, size_t errlen)
{
    memset(a, 0, sizeof(*a));
    for (int i = 1; i < argc; i++) {
        const char *v;
        int r;
        if ((r = bp_arg_value(argc, argv, &i, "--set", &v)) != 0) {
            if (r < 0 || a->nsets == MAX_SETS)
                return snprintf(err, errlen,
                                r < 0 ? "--set needs SECTION.KEY=VALUE"
                                      : "at most %d --set options",
                                MAX_SETS),
                       -1;
            a->sets[a->nsets++] = v;
        } else if ((r = bp_arg_value(argc, argv, &i, "--resume", &v)) != 0) {
            if (r < 0)
                return snprintf(err, errlen,
                                "--resume needs a checkpoint path, 'latest' or 'auto'"),
                       -1;
            a->resume = v;
        } else if ((r = bp_arg_value(argc, argv, &i, "--trace", &v)) != 0) {
            if (r < 0 || !v[0])
                return snprintf(err, errlen, "--trace needs a file path"), -1;
            if (strlen(v) >= BP_PATH_MAX)
                return snprintf(err, errlen, "--trace: the path is longer than %d bytes",
                                BP_PATH_MAX - 1),
                       -1;
            snprintf(a->trace, sizeof(a->trace), "log.trace=%s", v);
        } else if (argv[i][0] == '-' || a->config) {
            return snprintf(err, errlen,
                            "train: unexpected argument '%s' (see backprop train "
                            "--help)",
                            argv[i]),
                   -1;
        } else {
            a->config = argv[i];
        }
    }
    if (!a->config)
        return snprintf(err, errlen, "train: missing CONFIG (see backprop train --help)"), -1;
    if (a->trace[0]) /* after every --set: it wins */
        a->sets[a->nsets++] = a->trace;
    return 0;
}

static void print_banner(const bp_config *c, const bp_trainer *t)
{
    bp_trainer_info in;
    bp_trainer_get_info(t, &in);
    printf("backprop %s (%s): layers", BP_VERSION, BP_SCALAR_NAME);
    for (int i = 0; i < c->nsizes; i++)
        printf("%s%d", i ? "," : " ", c->sizes[i]);
    printf(" %s/%s/%s, %zu parameters\n", bp_activation_name(c->hidden),
           bp_activation_name(c->output), bp_cost_name(c->cost), in.nparams);
    printf("data: %zu train, %zu validation, %zu test, read in %.2f s, placement %s; batch %ld "
           "over %d rank%s x %d BLAS thread%s\n",
           in.n_train, in.n_val, in.n_test, in.load_s, in.placement, c->batch_size, in.ranks,
           in.ranks > 1 ? "s" : "", in.threads, in.threads > 1 ? "s" : "");
    if (c->any_scale) {
        long shards = (c->batch_size + c->micro_batch - 1) / c->micro_batch;
        int idle = in.ranks > shards;
        char how[96] = "";
        if (in.any_scale_floats || idle)
            snprintf(how, sizeof(how), " (%s%s%s)",
                     in.any_scale_floats ? "one a rank, sent as floats" : "",
                     in.any_scale_floats && idle ? "; " : "",
                     idle ? "ranks past the micro-shards idle" : "");
        printf("reproducible: any_scale, a batch in %ld micro-shard%s of %ld rows, every product "
               "on 1 thread: the same bits at any rank or thread count%s\n",
               shards, shards > 1 ? "s" : "", c->micro_batch, how);
    }
    bp_runtime_info rt;
    bp_runtime_get_info(&rt);
    if (rt.blas_replaced_kernel)
        printf("BLAS: %s; OpenBLAS %s kernel (chosen by backprop for this AVX-512 CPU over "
               "%s; BACKPROP_BLAS_KERNEL=keep to keep it)\n",
               rt.gemm_libraries, rt.blas_kernel, rt.blas_replaced_kernel);
    else
        printf("BLAS: %s; OpenBLAS %s kernel\n", rt.gemm_libraries, rt.blas_kernel);
    if (in.bf16)
        printf("precision: bf16 products with float sums (%s); weights, update and checkpoints "
               "in float\n",
               rt.bf16_isa);
    if (in.ranks > 1)
        printf("exchange: %s\n", in.exchange);
    if (in.resumed)
        printf("resumed at epoch %ld, step %ld of the epoch (global step %ld)\n", in.epoch + 1,
               in.batch_in_epoch, in.global_step);
    if (in.resume_note[0])
        printf("note: %s\n", in.resume_note);
    fflush(stdout);
}

/* Rank 0's view of a run: epoch lines on stdout, flushed as they are written (a log
 * redirected to a file keeps every line printed before a kill), and a progress bar on
 * stderr, redrawn at most every 0.1 s. */
typedef struct {
    int bar;         /* draw the progress bar */
    int drawn;       /* a bar is on the screen */
    double last_bar; /* when it was drawn */
} train_view;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void on_progress(void *ctx, long epoch, long epochs, size_t step, size_t steps, double rate)
{
    train_view *v = ctx;
    double now = now_s();
    if (step < steps && now - v->last_bar < 0.1)
        return;
    v->last_bar = now;
    int width = 30, filled = (int)((double)width * (double)step / (double)steps);
    fprintf(stderr, "\r\033[Kepoch %ld/%ld [%.*s%*s] %3.0f%% %.0f samples/s", epoch, epochs, filled,
            "==============================", width - filled, "",
            100.0 * (double)step / (double)steps, rate);
    fflush(stderr);
    v->drawn = 1;
}

/* Straggler detection's news, on rank 0: one warning line when the set of slow ranks
 * changes (docs/running.md, "Slow ranks"). */
static void on_straggler(void *ctx, const bp_straggler_report *r)
{
    train_view *v = ctx;
    if (v->drawn) {
        fprintf(stderr, "\r\033[K");
        v->drawn = 0;
    }
    if (r->nslow == 0)
        bp_cli_warning("no rank is slow any more (steps %ld-%ld)", r->from_step, r->to_step);
    else
        bp_cli_warning("%s %s slow: step work %.3f ms against %.3f ms on the other ranks "
                       "(%.1fx, steps %ld-%ld); every step waits for %s",
                       r->who, r->nslow == 1 ? "is" : "are", r->work_ms, r->others_ms,
                       r->others_ms > 0 ? r->work_ms / r->others_ms : 0.0, r->from_step, r->to_step,
                       r->nslow == 1 ? "it" : "them");
}

static void on_epoch(void *ctx, const bp_metrics_row *r, long epochs)
{
    train_view *v = ctx;
    if (v->drawn) { /* the epoch line takes the bar's place */
        fprintf(stderr, "\r\033[K");
        fflush(stderr);
        v->drawn = 0;
    }
    printf("epoch %ld/%ld  step %ld", r->epoch, epochs, r->step);
    bp_cli_print_metrics(stdout, r);
    printf("  %.0f samples/s  %.1fs\n", r->samples_per_s, r->elapsed_s);
    fflush(stdout);
}

/* Whether line (its end of line cut off here) is a row of step_times.csv with `fields`
 * fields: the first two whole numbers, the rest numbers or empty. */
static int step_times_row(char *line, int fields)
{
    line[strcspn(line, "\r\n")] = 0;
    int n = 0;
    for (char *f = line;; n++) {
        char *end;
        size_t len = strcspn(f, ",");
        if (n < 2 ? (strtol(f, &end, 10), end != f + len || len == 0)
                  : (len > 0 && (strtod(f, &end), end != f + len)))
            return 0;
        if (!f[len])
            return n + 1 == fields;
        f += len + 1;
    }
}

/* Rank 0: this command's step times as a row of RUN_DIR/step_times.csv, after the rows of
 * the run's earlier commands when it resumed (what backprop plot draws). A failure to
 * write it is a warning: the run itself went well. */
static void save_step_times(const bp_config *cfg, const bp_trainer *t, const bp_step_times *st)
{
    static const char header[] =
        "first_step,steps,data_ms,compute_ms,exchange_ms,update_ms,ranks,slow_rank,slow_factor\n";
    char path[BP_PATH_MAX + 32], err[BP_PATH_MAX + 256], row[256];
    bp_trainer_info in;
    bp_trainer_get_info(t, &in);
    snprintf(path, sizeof(path), "%s/step_times.csv", cfg->checkpoint_dir);
    char *text = NULL;
    size_t size = 0;
    FILE *mem = open_memstream(&text, &size);
    if (!mem)
        return;
    int fd = in.resumed ? bp_input_open(path, NULL, 0) : -1; /* never waits on a FIFO */
    FILE *old = fd >= 0 ? fdopen(fd, "r") : NULL;
    if (fd >= 0 && !old)
        close(fd);
    /* The header before slow_rank and slow_factor: its rows are kept, those two empty. */
    static const char before[] =
        "first_step,steps,data_ms,compute_ms,exchange_ms,update_ms,ranks\n";
    char line[512];
    int got = old && fgets(line, sizeof(line), old);
    line[got ? strcspn(line, "\r\n") : 0] = 0; /* a header saved with CRLF is the same */
    int older = got && strncmp(line, before, sizeof(before) - 2) == 0 && !line[sizeof(before) - 2];
    int ours = got && strncmp(line, header, sizeof(header) - 2) == 0 && !line[sizeof(header) - 2];
    long dropped = 0;
    fputs(header, mem);
    while ((older || ours) && fgets(line, sizeof(line), old))
        if (step_times_row(line, older ? 7 : 9))
            fprintf(mem, "%s%s\n", line, older ? ",," : "");
        else
            dropped += line[0] != 0;
    if (old)
        fclose(old);
    if (dropped)
        bp_cli_warning("%s: %ld line%s that %s not step times left out", path, dropped,
                       dropped == 1 ? "" : "s", dropped == 1 ? "was" : "were");
    char slow[64] = ",";
    if (st->slow_rank >= 0)
        snprintf(slow, sizeof(slow), "%d,%.3g", st->slow_rank, st->slow_factor);
    snprintf(row, sizeof(row), "%ld,%ld,%.6g,%.6g,%.6g,%.6g,%d,%s\n", in.global_step - st->steps,
             st->steps, st->data_ms, st->compute_ms, st->exchange_ms, st->update_ms, in.ranks,
             slow);
    fputs(row, mem);
    fclose(mem);
    if (bp_publish(path, text, size, BP_OUT_REPLACE, err, sizeof(err)) < 0)
        bp_cli_warning("%s", err);
    free(text);
}

/* Where a step's time goes, on rank 0, in milliseconds per step: what to look at when
 * adding ranks does not add speed (saved for backprop plot too). Collective: every rank
 * calls it. */
/* Rank 0: each rank's compute and wait per step, a line each (the slowest first past 16
 * ranks, and the count of the rest): the end-of-run look at who kept whom waiting. */
static void print_rank_times(const bp_trainer *t, const bp_rank_times *rt, int n)
{
    int *order = malloc((size_t)n * sizeof(int));
    if (!order)
        return;
    for (int i = 0; i < n; i++)
        order[i] = i;
    int shown = n <= 16 ? n : 8;
    if (n > 16) /* the 8 of the largest compute first */
        for (int i = 0; i < shown; i++)
            for (int j = i + 1; j < n; j++)
                if (rt[order[j]].compute_ms > rt[order[i]].compute_ms) {
                    int k = order[i];
                    order[i] = order[j], order[j] = k;
                }
    printf("per rank, ms a step:%s\n", n > 16 ? " the 8 of the most compute" : "");
    for (int i = 0; i < shown; i++) {
        const bp_rank_times *r = &rt[order[i]];
        printf("  rank %d (host %s): data %.3f + compute %.3f + wait %.3f + update %.3f\n",
               order[i], bp_trainer_rank_host(t, order[i]), r->data_ms, r->compute_ms, r->wait_ms,
               r->update_ms);
    }
    if (n > shown) {
        double lo = rt[order[shown]].compute_ms, hi = lo;
        for (int i = shown; i < n; i++) {
            double c = rt[order[i]].compute_ms;
            lo = c < lo ? c : lo, hi = c > hi ? c : hi;
        }
        printf("  %d more ranks: compute %.3f to %.3f\n", n - shown, lo, hi);
    }
    free(order);
}

static void print_step_time(const bp_comm *comm, const bp_config *cfg, const bp_trainer *t)
{
    bp_step_times st;
    int rc = bp_trainer_step_times(t, &st);
    bp_rank_times *rt = comm->rank == 0 ? calloc((size_t)comm->size, sizeof(*rt)) : NULL;
    /* Every rank takes part; a rank 0 without memory for the list gathers into one. */
    bp_rank_times none;
    int per_rank = bp_trainer_rank_times(t, rt ? rt : &none) == 0 && rt && comm->size > 1;
    if (comm->rank != 0 || st.steps == 0) {
        free(rt);
        return;
    }
    save_step_times(cfg, t, &st);
    double step = st.data_ms + st.compute_ms + st.exchange_ms + st.update_ms;
    printf("step time: %.3f ms = data %.3f + compute %.3f", step, st.data_ms, st.compute_ms);
    if (comm->size > 1) {
        if (rc == 0)
            printf(" (slowest rank %.3f)", st.slowest_compute_ms);
        printf(" + exchange %.3f (%.1f%%)", st.exchange_ms, 100 * st.exchange_ms / step);
    }
    printf(" + update %.3f  [rank 0, mean of %ld steps", st.update_ms, st.steps);
    if (comm->size > 1)
        printf("; the exchange took %.3f in all, %.3f of it hidden behind the backward pass",
               st.exchange_ms + st.hidden_ms, st.hidden_ms);
    printf("]\n");
    if (per_rank)
        print_rank_times(t, rt, comm->size);
    free(rt);
    bp_runtime_info rti;
    bp_runtime_get_info(&rti);
    long declined = rti.bf16_declined;
    if (declined > 0) /* a bf16 run whose shapes oneDNN would not take, or too many */
        printf("warning: %ld bf16 products on rank 0 ran in float: oneDNN declined their "
               "shapes or its cache of shapes was full\n",
               declined);
    if (st.checkpoints > 0)
        printf("checkpoints: %ld, each paused training %.3f ms (replica check, copy); written "
               "in the background in %.3f ms each\n",
               st.checkpoints, st.checkpoint_pause_ms, st.checkpoint_write_ms);
}

/* A stop on request: training ends at the next step, after a checkpoint (the library's
 * part). The signals are blocked in every thread started after main's first steps (the
 * mask is set before MPI, oneDNN or the trainer start theirs, and they inherit it), and one
 * thread of ours takes them with sigwait: no such thread is ever interrupted by a handler,
 * so no MPI or BLAS call sees EINTR or runs a handler on its stack (pass_on, below, is for
 * the threads started before main). (With a plain handler, 4 of 6 runs of mpirun -np 1
 * stopped by SIGTERM died of heap corruption inside oneDNN's sgemm; with sigwait, none
 * of 6, nor any run of tests/cli/test_signals.sh since.) */
static void *wait_for_stop(void *set)
{
    /* The third signal ends the process at once: the way out of a job that cannot reach
     * a step boundary (a setup stuck with [comm] timeout = 0). Files stay whole: every
     * write is atomic. */
    for (int count = 0;;) {
        int signo;
        if (sigwait(set, &signo) != 0)
            continue;
        bp_request_stop(signo);
        if (++count == 3) {
            bp_cli_error(0,
                         "a third SIG%s: ending now, without a stop at a step boundary; "
                         "the last checkpoint is intact",
                         sigabbrev_np(signo) ? sigabbrev_np(signo) : "NAL");
            _exit(EXIT_FAILURE_DURING_WORK);
        }
    }
    return NULL;
}

static pthread_t stop_thread;

/* Threads started before main keep the signals unblocked: OpenBLAS's workers, created by
 * its constructor when the process sees more than one core. A signal the kernel hands to
 * one of them would end the process by its default action; this handler, run only there,
 * passes it on to the thread that takes it (pthread_kill is async-signal-safe). */
static void pass_on(int signo)
{
    int saved = errno;
    pthread_kill(stop_thread, signo);
    errno = saved;
}

static int catch_stop_signals(void)
{
    static sigset_t set;
    static const int signals[] = {SIGTERM, SIGINT, SIGUSR1};
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof(signals) / sizeof(signals[0]); i++)
        sigaddset(&set, signals[i]);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (rc == 0)
        rc = pthread_create(&stop_thread, &attr, wait_for_stop, &set);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        pthread_sigmask(SIG_UNBLOCK, &set, NULL);
        return rc;
    }
    struct sigaction sa = {.sa_handler = pass_on, .sa_flags = SA_RESTART};
    sigfillset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof(signals) / sizeof(signals[0]); i++)
        if (sigaction(signals[i], &sa, NULL) != 0)
            return errno;
    return 0;
}

/* Rank 0, after a run that ended before its last epoch: early stopping (which weights it
 * kept) or lbfgs's convergence (why). Said of the run as it stopped, in the checkpoint's
 * numbers: a resume of a run that had already stopped trains nothing, whatever the config
 * says now (the stop's weights were replaced by the best epoch's, or lbfgs's search has
 * ended), and says so. */
static void print_early_stop(const bp_trainer *t, int already)
{
    bp_trainer_info in;
    bp_trainer_get_info(t, &in);
    const char *when = already ? "the run had already stopped before this resume: " : "";
    if (in.stopped_early)
        printf("early stopping: %sno better validation cost for %ld epochs; the weights are "
               "epoch %ld's (val_cost %.4f)%s\n",
               when, in.epoch - in.best_epoch, in.best_epoch, in.best_val_cost,
               already ? "; a larger early_stopping or epochs does not continue it (its last "
                         "weights gave way to the best epoch's): resume a checkpoint from before "
                         "the stop, or start a new run"
                       : "");
    if (in.converged)
        printf("lbfgs: %sconverged after %ld iterations and %ld cost evaluations: %s%s\n", when,
               in.epoch, in.global_step,
               in.converged == BP_LBFGS_CONVERGED_GRADIENT
                   ? "no gradient component is larger than lbfgs_tolerance"
                   : "the line search found no lower cost along the search direction",
               already ? " (the tolerance of the run that converged); another lbfgs_tolerance "
                         "does not continue it: start a new run"
                       : "");
}

/* Rank 0, after the stop's checkpoint: the one line that says what to do next. */
static void print_stopped(const train_view *view, const bp_trainer *t)
{
    bp_trainer_info in;
    bp_trainer_get_info(t, &in);
    const char *abbrev = sigabbrev_np(in.stop_signal);
    fflush(stdout);
    fprintf(stderr, "%sbackprop: stopped by SIG%s at step %ld; resume with --resume latest\n",
            view->drawn ? "\r\033[K" : "", abbrev ? abbrev : "NAL", in.global_step);
    fflush(stderr);
}

/* Rank 0 on a terminal: "reading FILE: 45 %" while the data loads, on one line, redrawn
 * five times a second and erased before the banner. */
typedef struct {
    double last;
    int drawn;
} load_view;

static void on_load(void *ctx, const char *path, double done, double total)
{
    load_view *v = ctx;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double now = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    if (now - v->last < 0.2 && done < total)
        return;
    v->last = now;
    v->drawn = 1;
    const char *name = strrchr(path, '/');
    fprintf(stderr, "\r\033[Kreading %s: %.0f %%", name ? name + 1 : path,
            total > 0 ? 100 * done / total : 100);
    fflush(stderr);
}

/* Under `backprop launch` (BACKPROP_EVENTS=1), rank 0's record that every rank has set
 * up, and so takes stop signals: each blocked them before MPI started, and the trainer's
 * setup agreed across all of them. The launcher holds a stop until it reads this. */
static void say_started(void)
{
    const char *events = getenv("BACKPROP_EVENTS");
    if (events && strcmp(events, "1") == 0) {
        fputs("backprop-event: {\"event\":\"started\"}\n", stderr);
        fflush(stderr);
    }
}

/* Collective: the flight recorder's trace at [log] trace, when set; a failure is a
 * warning (the run went well). */
static void write_trace(const bp_comm *comm, bp_trainer *t, const bp_config *cfg, const char *why)
{
    char err[BP_PATH_MAX + 256];
    if (bp_trainer_write_trace(t, why, err, sizeof(err)) < 0 && comm->rank == 0)
        bp_cli_warning("%s", err);
    else if (comm->rank == 0 && cfg->trace[0] && cfg->trace_steps > 0) {
        if (cfg->trace_steps == 1)
            bp_cli_line("trace: %s (the last step of every rank)", cfg->trace);
        else
            bp_cli_line("trace: %s (the last %ld steps of every rank)", cfg->trace,
                        cfg->trace_steps);
    }
}

/* Rank 0: the config is an input too, so no file the run writes may be it, under any
 * name: not the metrics, nor a name the run writes or sweeps in [checkpoint] dir (the
 * library's check of the data files; it never sees the config's path). */
static int config_not_written(const bp_config *cfg, const char *config, char *err, size_t errlen)
{
    if (bp_same_file(cfg->metrics, config))
        return snprintf(err, errlen,
                        "[log] metrics = %.900s is the config %.900s, which the run would "
                        "replace; name another file",
                        cfg->metrics, config),
               -1;
    if (cfg->trace[0] && bp_same_file(cfg->trace, config))
        return snprintf(err, errlen,
                        "[log] trace = %.900s is the config %.900s, which the run would "
                        "replace; name another file",
                        cfg->trace, config),
               -1;
    char what[BP_PATH_MAX + 16];
    snprintf(what, sizeof(what), "the config %s", config);
    return bp_run_input_check(cfg, config, what, err, errlen) < 0 ? -1 : 0;
}

/* The library says what is wrong with the run directory; which option fixes it is ours.
 * err is empty on the ranks that do not report. */
static void flag_hint(int rc, char *err, size_t errlen)
{
    char what[2048];
    if (!err[0] || (rc != BP_ENOENT && rc != BP_EEXIST))
        return;
    snprintf(what, sizeof(what), "%s", err);
    if (rc == BP_ENOENT)
        snprintf(err, errlen, "--resume latest: %.1900s", what);
    else
        snprintf(err, errlen,
                 "%.1900s; continue it with --resume latest, or set another [checkpoint] dir",
                 what);
}

static int train_main(const bp_comm *comm, const train_args *a)
{
    static char err[2048];
    static bp_config cfg;
    int rc = bp_cli_config_load(&cfg, a->config, a->sets, a->nsets, err, sizeof(err));
    if (rc == 0 && comm->rank == 0)
        rc = config_not_written(&cfg, a->config, err, sizeof(err));
    int status = bp_cli_agree(comm, rc < 0 ? EXIT_BAD_INPUT : 0, err);
    if (status)
        return status;
    const char *resume = a->resume;
    int automatic = resume && strcmp(resume, "auto") == 0;
    /* Rank 0 looks, and every rank goes by what it saw. Every rank takes the agreement,
     * --resume auto or not: ranks started with other arguments (mpirun's MPMD form) still
     * reach the trainer's check of what they start from in step. */
    char latest[BP_PATH_MAX + 16];
    snprintf(latest, sizeof(latest), "%s/latest.h5", cfg.checkpoint_dir);
    int seen = comm->rank == 0 && access(latest, F_OK) == 0, who;
    if (bp_comm_agree(comm, seen, &seen, &who) < 0) {
        bp_cli_error(comm->rank, "the ranks could not agree on --resume auto");
        return EXIT_FAILURE_DURING_WORK;
    }
    if (automatic)
        resume = seen ? "latest" : NULL;
    bp_trainer *t = NULL;
    int already = 0; /* resumed a run that had stopped early or converged */
    int drawing = comm->rank == 0 && (cfg.progress == BP_PROGRESS_ON ||
                                      (cfg.progress == BP_PROGRESS_AUTO && isatty(2)));
    load_view loading = {0};
    bp_trainer_options opts = {
        .resume = resume, .load_progress = drawing ? on_load : NULL, .load_ctx = &loading};
    rc = bp_trainer_create_with(&t, &cfg, comm, &opts, err, sizeof(err));
    if (loading.drawn) {
        fprintf(stderr, "\r\033[K");
        fflush(stderr);
    }
    flag_hint(rc, err, sizeof(err));
    status = rc < 0 ? bp_cli_report(comm, bp_cli_setup_status(rc), err) : 0;
    if (status == 0) {
        train_view view = {0};
        view.bar = drawing;
        bp_callbacks cb = {on_epoch, view.bar ? on_progress : NULL, &view, on_straggler};
        bp_trainer_info before;
        bp_trainer_get_info(t, &before);
        already = before.stopped_early || before.converged;
        if (comm->rank == 0) {
            print_banner(&cfg, t);
            say_started();
        }
        rc = bp_trainer_run(t, comm->rank == 0 ? &cb : NULL, err, sizeof(err));
        if (rc == BP_ESTOPPED) {
            print_step_time(comm, &cfg, t);
            write_trace(comm, t, &cfg, "stop");
            if (comm->rank == 0)
                print_stopped(&view, t);
            status = EXIT_STOPPED;
        } else if (rc < 0) {
            status = bp_cli_report(comm, EXIT_FAILURE_DURING_WORK, err);
        }
    }
    if (status == 0) {
        print_step_time(comm, &cfg, t);
        write_trace(comm, t, &cfg, "end");
    }
    if (status == 0 && comm->rank == 0)
        print_early_stop(t, already);
    if (status == 0 && comm->rank == 0)
        bp_cli_line("done: checkpoint %s/latest.h5, metrics %s", cfg.checkpoint_dir, cfg.metrics);
    bp_trainer_free(t);
    return status;
}

int bp_cmd_train(int argc, char **argv)
{
    bp_comm comm;
    if (catch_stop_signals() != 0) {
        bp_cli_error(0, "cannot start the thread that takes stop signals");
        return EXIT_FAILURE_DURING_WORK;
    }
    int started = bp_cli_init(&argc, &argv, &comm);
    if (started != 0)
        return started;
    int status;
    char err[512];
    train_args a;
    if (bp_cli_wants_help(argc, argv)) {
        if (comm.rank == 0) {
            fputs(train_usage, stdout);
            print_config_keys();
        }
        status = EXIT_OK;
    } else if (parse_args(argc, argv, &a, err, sizeof(err)) < 0) {
        if (comm.rank == 0)
            bp_cli_error(0, "%s", err);
        status = EXIT_BAD_INPUT;
    } else {
        status = train_main(&comm, &a);
    }
    bp_comm_finalize(&comm);
    return status;
}
