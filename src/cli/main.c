/* backprop: train, evaluate, inspect, convert and plot. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backprop/runtime.h"
#include "cli.h"

static const char usage[] =
    "usage: backprop COMMAND [ARGS]\n"
    "\n"
    "  train CONFIG [--set SECTION.KEY=VALUE]... [--resume CKPT|latest|auto]\n"
    "          [--trace PATH]\n"
    "  eval --checkpoint CKPT --data FILE [--labels FILE] [--json]\n"
    "  predict --checkpoint CKPT --data FILE [--labels FILE] --out FILE.h5 [--force]\n"
    "  gradcheck CONFIG [--set ...] [--epsilon E] [--tolerance T] [--examples M]\n"
    "  inspect CKPT\n"
    "  convert (--idx-images F --idx-labels F | --csv F [--targets K]) --out FILE.h5\n"
    "          [--contiguous] [--force]\n"
    "  plot RUN_DIR [RUN_DIR ...] [--out FILE.png] [--script FILE] [--force]\n"
    "          [--trace FILE] [--trace-steps K]\n"
    "  launch --hostfile FILE [--min-hosts N] [--mpirun-arg ARG]... -- CONFIG [--set ...]\n"
    "  --help | --version | COMMAND --help\n"
    "\n"
    "train, eval, predict and gradcheck run alone or under mpirun -np N; launch runs train\n"
    "under mpirun over a hostfile's hosts, and again on the rest when hosts are lost.\n"
    "Exit status: 0 success, 2 bad usage or input, 1 failure during work, 3 train stopped\n"
    "by SIGTERM, SIGINT or SIGUSR1 after a checkpoint (continue with --resume latest).\n";

/* The length of the UTF-8 sequence at s if it is a well-formed character past the C1
 * controls (U+00A0 on, no surrogates, shortest form), else 0. */
static size_t utf8_printable(const unsigned char *s)
{
    unsigned c = s[0], need = 0;
    if (c >= 0xC2 && c <= 0xDF)
        need = 1;
    else if (c >= 0xE0 && c <= 0xEF)
        need = 2;
    else if (c >= 0xF0 && c <= 0xF4)
        need = 3;
    else
        return 0;
    unsigned cp = c & (0x3F >> need);
    for (unsigned i = 1; i <= need; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    static const unsigned least[] = {0, 0xA0, 0x800, 0x10000};
    if (cp < least[need] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
        return 0;
    return need + 1;
}

/* msg as one line of text into out (4 bytes for each of msg's at most, and a NUL): what a
 * file or a path put in it (a CR-only CSV's \r, a newline or an escape sequence in a
 * directory's name) is shown, not obeyed. */
void bp_cli_printable(char *out, const char *msg)
{
    const unsigned char *s = (const unsigned char *)msg;
    while (*s) {
        size_t n = *s >= 0x80 ? utf8_printable(s) : (*s >= 0x20 && *s != 0x7F);
        if (n > 0) {
            memcpy(out, s, n);
            out += n, s += n;
        } else if (*s == '\n' || *s == '\r' || *s == '\t') {
            out += sprintf(out, "\\%c", *s == '\n' ? 'n' : *s == '\r' ? 'r' : 't');
            s++;
        } else {
            out += sprintf(out, "\\x%02x", *s++);
        }
    }
    *out = 0;
}

/* One write for the whole line (stderr is unbuffered): lines of ranks never interleave. */
static void report(const char *kind, int rank, const char *fmt, va_list ap)
{
    char msg[2048], shown[4 * sizeof(msg)];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    bp_cli_printable(shown, msg);
    char who[32] = "";
    if (rank > 0)
        snprintf(who, sizeof(who), "[rank %d] ", rank);
    fprintf(stderr, "backprop: %s: %s%s\n", kind, who, shown);
    fflush(stderr);
}

void bp_cli_line(const char *fmt, ...)
{
    va_list ap, again;
    va_start(ap, fmt);
    va_copy(again, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *msg = n >= 0 ? calloc((size_t)n + 1, 1) : NULL;
    char *shown = msg ? calloc(4 * (size_t)n + 1, 1) : NULL;
    if (shown) {
        vsnprintf(msg, (size_t)n + 1, fmt, again);
        bp_cli_printable(shown, msg);
        printf("%s\n", shown);
        fflush(stdout);
    }
    va_end(again);
    free(msg);
    free(shown);
}

void bp_cli_error(int rank, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    report("error", rank, fmt, ap);
    va_end(ap);
}

void bp_cli_warning(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    report("warning", 0, fmt, ap);
    va_end(ap);
}

int bp_cli_agree(const bp_comm *comm, int status, const char *msg)
{
    int agreed, who;
    if (bp_comm_agree(comm, status, &agreed, &who) < 0) {
        bp_cli_error(comm->rank, "the ranks could not agree on how %s",
                     status ? "this rank failed" : "the others fared");
        return EXIT_FAILURE_DURING_WORK;
    }
    if (agreed != 0 && who == comm->rank)
        bp_cli_error(comm->rank, "%s", msg && *msg ? msg : "failed");
    return agreed;
}

/* FNV-1a of a NUL-terminated string: what the ranks compare of their commands. */
static uint64_t text_hash(const char *s)
{
    uint64_t h = 1469598103934665603u;
    do
        h = (h ^ (unsigned char)*s) * 1099511628211u;
    while (*s++);
    return h;
}

/* The watchdog's callback: a collective hung, so this process ends here (exit status 1, and
 * mpirun ends the job); nothing may wait for the collective to return. */
static void timed_out(void *ctx, int rank, const char *reason)
{
    bp_cli_error(rank, "%s", reason);
    _exit(1);
}

/* MPI's start-up (MPI_Init waits for every process of the job) comes before any watchdog:
 * a rank stopped, hung or cut off before it began would keep the others in it for good.
 * A thread of its own ends the process if the start-up has not finished in time:
 * BACKPROP_START_TIMEOUT seconds (default BP_CLI_TIMEOUT; 0 = no limit). */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    double seconds;
} start = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};

static void *watch_start(void *arg)
{
    (void)arg;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)start.seconds;
    pthread_mutex_lock(&start.mu);
    int rc = 0;
    while (!start.done && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&start.cv, &start.mu, &until);
    int done = start.done;
    pthread_mutex_unlock(&start.mu);
    if (done)
        return NULL;
    /* No rank number before MPI: Open MPI's own says who speaks first (the others later,
     * if mpirun has not ended them by then). */
    const char *r = getenv("OMPI_COMM_WORLD_RANK");
    long rank = r ? strtol(r, NULL, 10) : 0;
    if (rank > 0) /* mpirun ends the job once rank 0 has exited: about 2 s here */
        sleep(10);
    bp_cli_error((int)rank,
                 "MPI's start-up has not finished after %.0f s: a rank of the job was stopped, "
                 "hung or cut off before it began (BACKPROP_START_TIMEOUT sets the limit)",
                 start.seconds);
    _exit(EXIT_FAILURE_DURING_WORK);
}

/* Starts the start-up's watch; *thread is left unset (and 0 returned) when there is none. */
static int start_watch(pthread_t *thread, int *started)
{
    const char *v = getenv("BACKPROP_START_TIMEOUT");
    start.seconds = BP_CLI_TIMEOUT;
    if (v && *v) {
        char *end;
        double s = strtod(v, &end);
        if (*end || !(s >= 0) || s > 1e9)
            return bp_cli_error(0, "BACKPROP_START_TIMEOUT=%s: not a number of seconds", v), -1;
        start.seconds = s;
    }
    *started = start.seconds > 0 && pthread_create(thread, NULL, watch_start, NULL) == 0;
    return 0;
}

static void end_watch(pthread_t thread, int started)
{
    if (!started)
        return;
    pthread_mutex_lock(&start.mu);
    start.done = 1;
    pthread_cond_signal(&start.cv);
    pthread_mutex_unlock(&start.mu);
    pthread_join(thread, NULL);
}

int bp_cli_init(int *argc, char ***argv, bp_comm *comm)
{
    pthread_t watcher;
    int watching = 0;
    if (start_watch(&watcher, &watching) < 0)
        return EXIT_BAD_INPUT;
    int rc = bp_comm_init(argc, argv, comm);
    end_watch(watcher, watching);
    if (rc < 0) {
        bp_cli_error(0, "MPI initialisation failed");
        return EXIT_FAILURE_DURING_WORK;
    }
    if (bp_comm_watch(comm, BP_CLI_TIMEOUT, timed_out, NULL) < 0) {
        bp_cli_error(comm->rank, "cannot start the watchdog thread");
        bp_comm_finalize(comm);
        return EXIT_FAILURE_DURING_WORK;
    }
    /* Ranks started with other commands (mpirun's MPMD form) would call other collectives
     * and wait for each other: the command is the first thing they agree on. */
    const char *command = (*argv)[0];
    int same = bp_comm_same(comm, text_hash(command));
    if (same != 1) {
        if (same < 0)
            bp_cli_error(comm->rank, "the ranks could not compare their commands");
        else if (comm->rank == 0)
            bp_cli_error(0,
                         "the ranks of this job run different commands (rank 0 runs '%s'): "
                         "start every rank with the same one",
                         command);
        bp_comm_finalize(comm);
        return same < 0 ? EXIT_FAILURE_DURING_WORK : EXIT_BAD_INPUT;
    }
    return 0;
}

int bp_cli_report(const bp_comm *comm, int status, const char *err)
{
    if (err && *err)
        bp_cli_error(comm->rank, "%s", err);
    return status;
}

void bp_cli_print_metrics(FILE *f, const bp_metrics_row *r)
{
    const struct {
        const char *name;
        double v;
        int percent;
    } m[] = {{"train_cost", r->train_cost, 0}, {"train_acc", r->train_accuracy, 1},
             {"val_cost", r->val_cost, 0},     {"val_acc", r->val_accuracy, 1},
             {"test_cost", r->test_cost, 0},   {"test_acc", r->test_accuracy, 1}};
    for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++)
        if (!isnan(m[i].v))
            fprintf(f, m[i].percent ? "  %s %.2f%%" : "  %s %.4f", m[i].name,
                    m[i].percent ? 100 * m[i].v : m[i].v);
}

int bp_cli_fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return code;
}

void bp_cli_force_hint(int rc, char *err, size_t errlen)
{
    size_t n = strlen(err);
    if (rc == BP_EEXIST && n > 0 && n < errlen)
        snprintf(err + n, errlen - n, "; add --force to replace it");
}

int bp_cli_config_load(bp_config *cfg, const char *path, const char *const *sets, int nsets,
                       char *err, size_t errlen)
{
    int rc = bp_config_load(cfg, path, sets, nsets, err, errlen);
    static const char lib[] = "override", cli[] = "--set";
    size_t n = strlen(err), was = sizeof(lib) - 1, now = sizeof(cli) - 1;
    if (rc < 0 && strncmp(err, lib, was) == 0 && (err[was] == ' ' || err[was] == ':')) {
        memmove(err + now, err + was, n - was + 1); /* shorter: it fits */
        memcpy(err, cli, now);
    }
    return rc;
}

int bp_cli_setup_status(int code)
{
    return code == BP_ENOMEM || code == BP_ECOMM ? EXIT_FAILURE_DURING_WORK : EXIT_BAD_INPUT;
}

int bp_cli_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return 1;
    return 0;
}

/* Re-executes the program with the environment its matrix products want
 * (bp_runtime_start_env: OpenBLAS picks its kernel and threads only when it loads); does
 * not return then. Where it cannot, the environment is put back and the program carries on
 * as it is. */
static void start_with_blas_env(char **argv)
{
    bp_env_var env[BP_START_ENV_MAX];
    int n = bp_runtime_start_env(env), ok = 1;
    char *saved[BP_START_ENV_MAX] = {NULL};
    for (int i = 0; i < n; i++) {
        const char *was = getenv(env[i].name);
        saved[i] = was ? strdup(was) : NULL;
        ok = ok && setenv(env[i].name, env[i].value, 1) == 0;
    }
    if (n > 0 && ok)
        execv("/proc/self/exe", argv);
    for (int i = 0; i < n; i++) {
        if (saved[i])
            setenv(env[i].name, saved[i], 1);
        else
            unsetenv(env[i].name);
        free(saved[i]);
    }
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*run)(int, char **);
    } commands[] = {
        {"train", bp_cmd_train},         {"eval", bp_cmd_eval},       {"predict", bp_cmd_predict},
        {"gradcheck", bp_cmd_gradcheck}, {"inspect", bp_cmd_inspect}, {"convert", bp_cmd_convert},
        {"plot", bp_cmd_plot},           {"launch", bp_cmd_launch},
    };
    start_with_blas_env(argv);
    /* A damaged checkpoint must not take a rank down with it (checkpoint.h says why). */
    bp_checkpoint_isolate_reads(1);
    if (argc < 2) {
        fputs(usage, stderr);
        return EXIT_BAD_INPUT;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(usage, stdout);
        return EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("backprop %s (%s)\n", BP_VERSION, BP_SCALAR_NAME);
        return EXIT_OK;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    bp_cli_error(0, "unknown command '%s' (see backprop --help)", argv[1]);
    return EXIT_BAD_INPUT;
}
