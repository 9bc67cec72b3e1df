/* backprop launch --hostfile FILE [--min-hosts N] [--mpirun-arg ARG]... -- CONFIG [--set ...]:
 * `train CONFIG --resume auto` under mpirun over the hostfile's hosts, started again on the
 * hosts that still answer when some are lost, and on more when a lost one answers again.
 * mpirun and its probes are started with fork and execvp, never through a shell: nothing
 * from the hostfile, the config or the arguments is interpreted by one. */
#define _GNU_SOURCE /* signalfd, pipe2 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "args.h"
#include "cli.h"

static const char launch_usage[] =
    "usage: backprop launch --hostfile FILE [--min-hosts N] [--mpirun-arg ARG]...\n"
    "                       [--max-restarts N] [--backoff SECONDS] [--probe-every SECONDS]\n"
    "                       [--probe-timeout SECONDS] -- CONFIG [--set SECTION.KEY=VALUE]...\n"
    "\n"
    "Runs `mpirun --hostfile HOSTS ARG... backprop train CONFIG --resume auto` over FILE's\n"
    "hosts (Open MPI's format: `host [slots=N] [max_slots=N]`, # comments). When the job\n"
    "fails, every host is probed (`mpirun --host H:1 -np 1 ARG... backprop --version`); the\n"
    "hosts that do not answer are dropped, and the job starts again on the rest from its\n"
    "last checkpoint. A failure with every host answering (a bad config, divergence, a\n"
    "full disk) ends the launcher with the job's status: it is not retried. While hosts are\n"
    "dropped they are probed every --probe-every seconds; one that answers is taken back:\n"
    "the job is stopped with a checkpoint (SIGUSR1 to mpirun) and started again with it.\n"
    "\n"
    "  --hostfile FILE        the hosts (each listed once)\n"
    "  --min-hosts N          fewer hosts left than N ends the launcher (exit 1); default 1\n"
    "  --mpirun-arg ARG       one argument for mpirun, for the job and the probes (repeat it\n"
    "                         for each: --mpirun-arg --mca --mpirun-arg btl_tcp_if_include ...)\n"
    "  --max-restarts N       restarts after lost hosts before giving up (exit 1); default 10\n"
    "  --backoff SECONDS      wait before a restart, doubled after each one up to 60 s (a\n"
    "                         host taken back resets it); default 5\n"
    "  --probe-every SECONDS  how often dropped hosts are probed while the job runs; default 30\n"
    "  --probe-timeout SECONDS  a host that has not answered by then is lost; default 15\n"
    "\n"
    "mpirun is `mpirun` from PATH, or BACKPROP_MPIRUN. SIGUSR1, SIGTERM, SIGINT, SIGHUP or\n"
    "SIGQUIT stop the job with a checkpoint (SIGUSR1 to mpirun, once its ranks have started)\n"
    "and the launcher exits with its status, 3.\n"
    "Exit status: the job's (0 done, 1 failed, 2 bad config or input, 3 stopped).\n";

#define MAX_SETS 64
#define MAX_BACKOFF 60.0
#define EVENT_PREFIX "backprop-event: "
#define ERROR_PREFIX "backprop: error: "
#define LINE_MAX_KEPT (1 << 20) /* a longer record or error line is forwarded, not kept */

typedef struct {
    const char *hostfile, *config;
    const char *mpirun_args[256];
    int nmpirun;
    const char *sets[MAX_SETS];
    int nsets;
    long min_hosts, max_restarts;
    double backoff, probe_every, probe_timeout;
} launch_args;

enum probe_state { PROBE_IDLE, PROBE_RUNNING, PROBE_ANSWERED, PROBE_FAILED };

typedef struct {
    char *name;
    long slots, max_slots; /* 0: not given */
    int dropped;
    enum probe_state probe;
    pid_t probe_pid;
    double probe_deadline;
    char probe_why[96]; /* why it failed */
} host;

/* What mpirun's stderr is in the middle of: undecided until a line's first bytes say
 * whether it is a record or an error line (kept whole) or anything else (passed on as it
 * comes, a progress bar's \r included). */
enum line_mode { LINE_UNDECIDED, LINE_PASS };

typedef struct {
    launch_args a;
    host *hosts;
    int nhosts;
    char exe[PATH_MAX];
    char dir[PATH_MAX]; /* mkdtemp: the job's hostfiles */
    char jobfile[PATH_MAX + 32];
    int sigfd;
    pid_t job;
    int job_status, err_fd;
    enum line_mode mode;
    char *line;
    size_t nline, cap;
    char reason[512]; /* the first record's "what", else the last error line */
    int have_record;
    int early;                   /* the usable hosts were probed while the job ended */
    int killed;                  /* the launcher ended the job */
    int stop_signal, stop_count; /* a signal to the launcher: no restart */
    int taking_back;             /* the launcher stopped the job for a host */
    int started;                 /* the job's ranks take stop signals (its "started" record) */
    int stop_pending;            /* a stop asked for before that: sent when it comes */
    double next_takeback;
    int attempt;
} launcher;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* One line "backprop: launch: WHAT" on stderr, escaped as bp_cli_error's. */
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    char msg[2048], shown[4 * sizeof(msg)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    bp_cli_printable(shown, msg);
    fprintf(stderr, "backprop: launch: %s\n", shown);
    fflush(stderr);
}

/* ---- arguments and the hostfile ---- */

static int parse_number(const char *opt, const char *v, double *out, char *err, size_t len)
{
    if (bp_arg_positive(v, out) == 0)
        return 0;
    return snprintf(err, len, "%s needs a positive number of seconds, not '%s'", opt, v), -1;
}

static int parse_option(int argc, char **argv, int *i, launch_args *a, char *err, size_t len)
{
    const char *v;
    int r;
    if ((r = bp_arg_value(argc, argv, i, "--hostfile", &v)) > 0)
        a->hostfile = v;
    else if (r == 0 && (r = bp_arg_value(argc, argv, i, "--mpirun-arg", &v)) > 0) {
        if (a->nmpirun == (int)(sizeof(a->mpirun_args) / sizeof(a->mpirun_args[0])))
            return snprintf(err, len, "too many --mpirun-arg options"), -1;
        a->mpirun_args[a->nmpirun++] = v;
    } else if (r == 0 && (r = bp_arg_value(argc, argv, i, "--min-hosts", &v)) > 0) {
        if (bp_arg_long(v, 1, 1 << 20, &a->min_hosts) < 0)
            return snprintf(err, len, "--min-hosts needs a positive integer, not '%s'", v), -1;
    } else if (r == 0 && (r = bp_arg_value(argc, argv, i, "--max-restarts", &v)) > 0) {
        if (bp_arg_long(v, 0, 1 << 20, &a->max_restarts) < 0)
            return snprintf(err, len, "--max-restarts needs an integer >= 0, not '%s'", v), -1;
    } else if (r == 0 && (r = bp_arg_value(argc, argv, i, "--backoff", &v)) > 0)
        return parse_number("--backoff", v, &a->backoff, err, len);
    else if (r == 0 && (r = bp_arg_value(argc, argv, i, "--probe-every", &v)) > 0)
        return parse_number("--probe-every", v, &a->probe_every, err, len);
    else if (r == 0 && (r = bp_arg_value(argc, argv, i, "--probe-timeout", &v)) > 0)
        return parse_number("--probe-timeout", v, &a->probe_timeout, err, len);
    if (r < 0)
        return snprintf(err, len, "%s needs a value", argv[*i]), -1;
    if (r == 0 && argv[*i][0] != '-')
        return snprintf(err, len,
                        "launch: missing -- before CONFIG '%s' (see backprop launch --help)",
                        argv[*i]),
               -1;
    if (r == 0)
        return snprintf(err, len, "launch: unexpected argument '%s' (see backprop launch --help)",
                        argv[*i]),
               -1;
    return 0;
}

/* What comes after --: CONFIG and its --set options; --resume is the launcher's. */
static int parse_job(int argc, char **argv, int i, launch_args *a, char *err, size_t len)
{
    for (; i < argc; i++) {
        const char *v;
        int r = bp_arg_value(argc, argv, &i, "--set", &v);
        if (r < 0 || (r > 0 && a->nsets == MAX_SETS))
            return snprintf(err, len,
                            r < 0 ? "--set needs SECTION.KEY=VALUE" : "at most %d --set options",
                            MAX_SETS),
                   -1;
        if (r > 0)
            a->sets[a->nsets++] = v;
        else if (argv[i][0] == '-' || a->config)
            return snprintf(err, len,
                            "launch: unexpected argument '%s' after -- (CONFIG and --set only: "
                            "the launcher passes --resume auto)",
                            argv[i]),
                   -1;
        else
            a->config = argv[i];
    }
    return a->config ? 0 : (snprintf(err, len, "launch: missing CONFIG after --"), -1);
}

/* The options the launcher gives mpirun itself: the same ones among --mpirun-arg would
 * contradict them. */
static int mpirun_arg_allowed(const char *arg)
{
    /* Open MPI 4.1's spellings of the hosts, the rank count and the ranks per resource
     * (--map-by ppr:N:... sets a count too), and an app file, which replaces the command. */
    static const char *const own[] = {"--hostfile",
                                      "-hostfile",
                                      "--machinefile",
                                      "-machinefile",
                                      "--default-hostfile",
                                      "--host",
                                      "-host",
                                      "-H",
                                      "-np",
                                      "-n",
                                      "--np",
                                      "--n",
                                      "-c",
                                      "-N",
                                      "-npernode",
                                      "--npernode",
                                      "-npersocket",
                                      "--npersocket",
                                      "--app",
                                      "-app",
                                      "--add-host",
                                      "--add-hostfile"};
    for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
        if (strcmp(arg, own[i]) == 0)
            return 0;
    return strncmp(arg, "ppr:", 4) != 0;
}

static int parse_args(int argc, char **argv, launch_args *a, char *err, size_t len)
{
    memset(a, 0, sizeof(*a));
    a->min_hosts = 1, a->max_restarts = 10;
    a->backoff = 5, a->probe_every = 30, a->probe_timeout = 15;
    int i = 1;
    for (; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (parse_option(argc, argv, &i, a, err, len) < 0)
            return -1;
    if (!a->hostfile)
        return snprintf(err, len, "launch: missing --hostfile FILE (see backprop launch --help)"),
               -1;
    if (i == argc)
        return snprintf(err, len, "launch: missing -- CONFIG (see backprop launch --help)"), -1;
    for (int k = 0; k < a->nmpirun; k++)
        if (!mpirun_arg_allowed(a->mpirun_args[k]))
            return snprintf(err, len,
                            "--mpirun-arg %s: the launcher sets the hosts and the rank count "
                            "itself (from --hostfile)",
                            a->mpirun_args[k]),
                   -1;
    return parse_job(argc, argv, i + 1, a, err, len);
}

/* A host name mpirun takes as one host in `--host NAME:1` and never as an option. */
static int valid_host_name(const char *s)
{
    if (!isalnum((unsigned char)*s))
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '.' && *s != '-' && *s != '_')
            return 0;
    return 1;
}

/* One `slots=N` or `max_slots=N` (also max-slots) of a hostfile line into h. */
static int parse_host_field(char *field, host *h, char *err, size_t len)
{
    char *eq = strchr(field, '=');
    long v;
    if (eq)
        *eq = 0;
    long *to = !eq                                                                  ? NULL
               : strcmp(field, "slots") == 0                                        ? &h->slots
               : strcmp(field, "max_slots") == 0 || strcmp(field, "max-slots") == 0 ? &h->max_slots
                                                                                    : NULL;
    if (!to)
        return snprintf(err, len, "unexpected '%s%s' (expected slots=N or max_slots=N)", field,
                        eq ? "=..." : ""),
               -1;
    if (bp_arg_long(eq + 1, 1, 1 << 20, &v) < 0)
        return snprintf(err, len, "%s needs a positive integer, not '%s'", field, eq + 1), -1;
    *to = v;
    return 0;
}

/* One line of a hostfile into h; 0 for a host, 1 for a line without one, -1 with err. */
static int parse_host_line(char *text, host *h, char *err, size_t len)
{
    char *hash = strchr(text, '#');
    if (hash)
        *hash = 0;
    char *save = NULL, *name = strtok_r(text, " \t\r\n", &save);
    if (!name)
        return 1;
    if (!valid_host_name(name))
        return snprintf(err, len, "'%s' is not a host name", name), -1;
    memset(h, 0, sizeof(*h));
    for (char *f; (f = strtok_r(NULL, " \t\r\n", &save));)
        if (parse_host_field(f, h, err, len) < 0)
            return -1;
    if (h->max_slots && h->slots > h->max_slots)
        return snprintf(err, len, "slots=%ld is more than max_slots=%ld", h->slots, h->max_slots),
               -1;
    h->name = strdup(name);
    return h->name ? 0 : (snprintf(err, len, "out of memory"), -1);
}

/* The next line of f into text (without its newline): 1, 0 at the end, or -1 with why
 * for a line too long for text or one holding a NUL byte. Reads at most `budget` bytes of
 * the file in all (a hostfile is small; /dev/zero is not). */
static int next_line(FILE *f, char *text, size_t size, size_t *budget, char *why, size_t len)
{
    size_t n = 0;
    int c;
    while ((c = getc(f)) != EOF && c != '\n') {
        if (*budget == 0)
            return snprintf(why, len, "more than 1 MB: not a hostfile"), -1;
        --*budget;
        if (c == 0)
            return snprintf(why, len, "a NUL byte: not a text file"), -1;
        if (n + 1 >= size)
            return snprintf(why, len, "a line longer than %zu bytes", size - 1), -1;
        text[n++] = (char)c;
    }
    text[n] = 0;
    return n > 0 || c == '\n';
}

static int read_hostfile(launcher *L, char *err, size_t len)
{
    const char *path = L->a.hostfile;
    FILE *f = fopen(path, "r");
    if (!f)
        return snprintf(err, len, "--hostfile %s: %s", path, strerror(errno)), -1;
    char text[4096], why[512];
    size_t budget = 1 << 20;
    int lineno = 0, rc = 0, more;
    while (rc == 0 && (more = next_line(f, text, sizeof(text), &budget, why, sizeof(why))) != 0) {
        lineno++;
        host h;
        int got = more < 0 ? -1 : parse_host_line(text, &h, why, sizeof(why));
        for (int i = 0; got == 0 && i < L->nhosts; i++)
            if (strcmp(L->hosts[i].name, h.name) == 0) {
                snprintf(why, sizeof(why), "host %s is listed twice", h.name);
                free(h.name);
                got = -1;
            }
        host *grown = got == 0 ? realloc(L->hosts, (L->nhosts + 1) * sizeof(host)) : L->hosts;
        if (got < 0 || (got == 0 && !grown)) {
            snprintf(err, len, "%s:%d: %s", path, lineno, got < 0 ? why : "out of memory");
            rc = -1;
        } else if (got == 0) {
            L->hosts = grown;
            L->hosts[L->nhosts++] = h;
        }
    }
    if (rc == 0 && ferror(f))
        rc = (snprintf(err, len, "%s: %s", path, strerror(errno)), -1);
    fclose(f);
    if (rc == 0 && L->nhosts == 0)
        rc = (snprintf(err, len, "%s: no hosts", path), -1);
    return rc;
}

/* ---- child processes ---- */

/* Starts argv[0] from PATH in a process group of its own (so that a probe that overruns
 * is ended with all it started, and a Ctrl-C at the terminal reaches the launcher, which
 * stops the job as a job is stopped, not mpirun, which would abort it), stdin from
 * /dev/null, stderr into err_fd (-1: /dev/null, stdout too). The pid, or -1 with errno
 * when it could not be run. */
static pid_t spawn(char *const argv[], int err_fd)
{
    int report[2];
    if (pipe2(report, O_CLOEXEC) < 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        /* The launcher killed (SIGKILL: nothing else to do) leaves no job running
         * unwatched: mpirun gets SIGUSR1, the job stops with a checkpoint. */
        prctl(PR_SET_PDEATHSIG, SIGUSR1);
        setpgid(0, 0);
        int null = open("/dev/null", O_RDWR);
        if (null < 0 || dup2(null, 0) < 0 || (err_fd < 0 && dup2(null, 1) < 0) ||
            dup2(err_fd >= 0 ? err_fd : null, 2) < 0)
            _exit(127);
        execvp(argv[0], argv);
        int e = errno;
        (void)!write(report[1], &e, sizeof(e));
        _exit(127);
    }
    close(report[1]);
    int e = 0;
    if (pid > 0) {
        setpgid(pid, pid); /* also here: a kill(-pid) right after must find the group */
        if (read(report[0], &e, sizeof(e)) == (ssize_t)sizeof(e)) {
            waitpid(pid, NULL, 0);
            pid = -1;
        }
    }
    close(report[0]);
    if (pid < 0 && e)
        errno = e;
    return pid;
}

/* Ends an mpirun (the job's or a probe's) at once: its children first, each in a process
 * group of its own (the ranks on this host, which would otherwise outlive mpirun; the
 * job's rank 0 holds the run directory's lock), then its own group (its rsh agents: a
 * remote daemon whose connection ends ends its ranks). */
static void kill_mpirun(pid_t job)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)job, (int)job);
    FILE *f = fopen(path, "r");
    long child;
    while (f && fscanf(f, "%ld", &child) == 1) {
        kill(-(pid_t)child, SIGKILL); /* ESRCH for a child that leads no group */
        kill((pid_t)child, SIGKILL);
    }
    if (f)
        fclose(f);
    kill(-job, SIGKILL);
}

/* If child pid has ended: ends what is left of its process group (a probe's remote
 * daemon, an rsh agent), reaps it and returns 1 with its wait status; else 0. */
static int reap(pid_t pid, int *status)
{
    siginfo_t info;
    info.si_pid = 0;
    if (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) < 0 || info.si_pid == 0)
        return 0;
    kill(-pid, SIGKILL); /* still a zombie: the group cannot be another's yet */
    return waitpid(pid, status, 0) == pid;
}

static const char *mpirun_program(void)
{
    const char *p = getenv("BACKPROP_MPIRUN");
    return p && *p ? p : "mpirun";
}

/* ---- probes ---- */

static int start_probe(launcher *L, host *h)
{
    char target[300];
    snprintf(target, sizeof(target), "%s:1", h->name);
    const char *argv[300];
    int n = 0;
    argv[n++] = mpirun_program();
    argv[n++] = "--host", argv[n++] = target, argv[n++] = "-np", argv[n++] = "1";
    for (int i = 0; i < L->a.nmpirun; i++)
        argv[n++] = L->a.mpirun_args[i];
    argv[n++] = L->exe, argv[n++] = "--version", argv[n] = NULL;
    pid_t pid = spawn((char *const *)argv, -1);
    if (pid < 0) {
        bp_cli_error(0, "launch: cannot run %s: %s", argv[0], strerror(errno));
        return -1;
    }
    h->probe = PROBE_RUNNING, h->probe_pid = pid;
    h->probe_deadline = now_s() + L->a.probe_timeout;
    return 0;
}

/* Probes the hosts that are (dropped) or are not (!dropped) and are not being probed. */
static int probe_hosts(launcher *L, int dropped)
{
    for (int i = 0; i < L->nhosts; i++)
        if (L->hosts[i].dropped == dropped && L->hosts[i].probe != PROBE_RUNNING &&
            start_probe(L, &L->hosts[i]) < 0)
            return -1;
    return 0;
}

static void probe_ended(host *h, int status)
{
    h->probe_pid = 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        h->probe = PROBE_ANSWERED;
        return;
    }
    h->probe = PROBE_FAILED;
    if (WIFEXITED(status))
        snprintf(h->probe_why, sizeof(h->probe_why), "mpirun exit %d", WEXITSTATUS(status));
    else
        snprintf(h->probe_why, sizeof(h->probe_why), "mpirun killed by signal %d",
                 WTERMSIG(status));
}

/* Ends a probe that overran: what it started goes with it. */
static void probe_overran(launcher *L, host *h)
{
    kill_mpirun(h->probe_pid);
    int status;
    waitpid(h->probe_pid, &status, 0);
    h->probe_pid = 0;
    h->probe = PROBE_FAILED;
    snprintf(h->probe_why, sizeof(h->probe_why), "none within %g s", L->a.probe_timeout);
}

/* Ends h's probe, if one runs, and forgets its outcome. */
static void end_probe(host *h)
{
    if (h->probe == PROBE_RUNNING) {
        kill_mpirun(h->probe_pid);
        waitpid(h->probe_pid, NULL, 0);
    }
    h->probe = PROBE_IDLE;
}

static void kill_probes(launcher *L)
{
    for (int i = 0; i < L->nhosts; i++)
        end_probe(&L->hosts[i]);
}

static int probes_running(const launcher *L)
{
    for (int i = 0; i < L->nhosts; i++)
        if (L->hosts[i].probe == PROBE_RUNNING)
            return 1;
    return 0;
}

static int count_usable(const launcher *L)
{
    int n = 0;
    for (int i = 0; i < L->nhosts; i++)
        n += !L->hosts[i].dropped;
    return n;
}

/* Stops the job at its next step with a checkpoint: SIGUSR1 to mpirun, which forwards it
 * to every rank. Not before the ranks take it (before main blocks it, SIGUSR1 ends a
 * process): until the job's "started" record, the stop waits. */
static void request_stop(launcher *L)
{
    if (L->job <= 0)
        return;
    if (L->started)
        kill(L->job, SIGUSR1);
    else
        L->stop_pending = 1;
}

/* A dropped host answered while the job runs: stop the job with a checkpoint and start it
 * again with the host. */
static void take_back(launcher *L, host *h)
{
    if (L->job <= 0 || L->stop_signal)
        return;
    h->dropped = 0;
    if (!L->taking_back)
        request_stop(L);
    L->taking_back = 1;
    say("host %s answers again: stopping the job at its next step (with a checkpoint) to "
        "continue on %d hosts",
        h->name, count_usable(L));
}

/* ---- mpirun's stderr ---- */

/* The JSON string that starts at s (its opening quote) into out, escapes decoded (\\u as
 * '?'; the line is shown escaped anyway); past its closing quote, or NULL. */
static const char *json_text(const char *s, char *out, size_t len)
{
    size_t n = 0;
    for (s++; *s && *s != '"'; s++) {
        char c = *s;
        if (c == '\\' && s[1]) {
            c = *++s == 'u' ? '?' : *s == 'n' || *s == 't' || *s == 'r' ? ' ' : *s;
            for (int k = 0; *s == 'u' && k < 4 && isxdigit((unsigned char)s[1]); k++)
                s++;
        }
        if (n + 1 < len)
            out[n++] = c;
    }
    out[n] = 0;
    return *s == '"' ? s + 1 : NULL;
}

/* Where the value of "key" starts in a record, or NULL. */
static const char *json_value(const char *rec, const char *key)
{
    char pattern[64];
    snprintf(pattern, sizeof(pattern), "\"%s\":", key);
    const char *s = strstr(rec, pattern);
    return s ? s + strlen(pattern) : NULL;
}

/* The watchdog's record (docs/running.md, "The watchdog's record"): its first one says why
 * the job ended, for the line that names the hosts dropped. */
static void on_record(launcher *L, const char *rec)
{
    char what[256], hosts[200] = "", name[64];
    const char *v = json_value(rec, "event"), *step = json_value(rec, "step");
    if (v && strncmp(v, "\"started\"", 9) == 0) {
        L->started = 1;
        if (L->stop_pending && L->job > 0)
            kill(L->job, SIGUSR1);
        L->stop_pending = 0;
        return;
    }
    v = json_value(rec, "what");
    if (L->have_record || !v || *v != '"' || !json_text(v, what, sizeof(what)))
        return;
    long at = step ? strtol(step, NULL, 10) : -1;
    v = json_value(rec, "suspect_hosts");
    for (v = v && *v == '[' ? v + 1 : NULL; v && *v == '"'; v += *v == ',') {
        v = json_text(v, name, sizeof(name));
        size_t n = strlen(hosts);
        snprintf(hosts + n, sizeof(hosts) - n, "%s%s", n ? ", " : "", name);
    }
    int n = snprintf(L->reason, sizeof(L->reason), "the job timed out in %s", what);
    if (at >= 0 && step && isdigit((unsigned char)*step))
        n += snprintf(L->reason + n, sizeof(L->reason) - n, " at step %ld", at);
    if (hosts[0])
        snprintf(L->reason + n, sizeof(L->reason) - n, ", suspecting %s", hosts);
    L->have_record = 1;
}

/* A whole line kept: a record (kept, not shown), or an error line (shown, and the reason
 * when no record gives one). A record says the job is ending for a hung collective: the
 * usable hosts are probed now, while mpirun ends it (a lost host's daemon keeps it waiting
 * for seconds). */
static void on_kept_line(launcher *L)
{
    L->line[L->nline] = 0;
    if (strncmp(L->line, EVENT_PREFIX, strlen(EVENT_PREFIX)) == 0) {
        on_record(L, L->line + strlen(EVENT_PREFIX));
        if (L->have_record && !L->early && L->job > 0) { /* a timeout's, not "started" */
            probe_hosts(L, 0);
            L->early = 1;
        }
        return;
    }
    (void)!write(2, L->line, L->nline);
    if (!L->have_record) {
        snprintf(L->reason, sizeof(L->reason), "the job said: %s", L->line + strlen(ERROR_PREFIX));
        L->reason[strcspn(L->reason, "\r\n")] = 0;
    }
}

static int starts_as(const launcher *L, const char *prefix)
{
    size_t n = strlen(prefix);
    return strncmp(L->line, prefix, L->nline < n ? L->nline : n) == 0;
}

/* Whether the line so far may still be a record or an error line. */
static int may_keep(const launcher *L)
{
    return starts_as(L, EVENT_PREFIX) || starts_as(L, ERROR_PREFIX);
}

/* Shows the line so far as it is, and forgets it. */
static void show_line(launcher *L)
{
    (void)!write(2, L->line, L->nline);
    L->nline = 0;
}

/* Room for two more bytes of a line kept; 0 past LINE_MAX_KEPT or without memory. */
static int line_room(launcher *L)
{
    if (L->nline + 2 <= L->cap)
        return 1;
    size_t cap = L->cap ? 2 * L->cap : 256;
    char *grown = cap <= LINE_MAX_KEPT ? realloc(L->line, cap) : NULL;
    if (!grown)
        return 0;
    L->line = grown, L->cap = cap;
    return 1;
}

static void on_err_bytes(launcher *L, const char *buf, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (L->mode == LINE_PASS) {
            const char *nl = memchr(buf + i, '\n', n - i);
            size_t upto = nl ? (size_t)(nl - buf) + 1 : n;
            (void)!write(2, buf + i, upto - i);
            L->mode = nl ? LINE_UNDECIDED : LINE_PASS;
            i = upto;
            continue;
        }
        if (!line_room(L)) { /* too long to keep: shown as it comes */
            show_line(L);
            L->mode = LINE_PASS;
            continue;
        }
        char c = buf[i++];
        L->line[L->nline++] = c;
        if (c == '\n' && may_keep(L)) {
            on_kept_line(L);
            L->nline = 0;
        } else if (c == '\n') {
            show_line(L);
        } else if (!may_keep(L)) {
            show_line(L);
            L->mode = LINE_PASS;
        }
    }
}

/* Reads what mpirun's stderr holds now; at its end (or when drain and nothing is left),
 * closes it, showing a last line that had no newline. */
static void read_err(launcher *L, int drain)
{
    char buf[65536];
    for (;;) {
        ssize_t got = read(L->err_fd, buf, sizeof(buf));
        if (got > 0) {
            on_err_bytes(L, buf, (size_t)got);
            if (drain)
                continue;
            return;
        }
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0 && errno == EAGAIN && !drain)
            return;
        break;
    }
    show_line(L);
    L->mode = LINE_UNDECIDED;
    close(L->err_fd);
    L->err_fd = -1;
}

/* ---- the job ---- */

/* The usable hosts as a hostfile of the launcher's private directory, never an existing
 * file (O_EXCL). */
static int write_jobfile(launcher *L)
{
    if (L->jobfile[0])
        unlink(L->jobfile);
    snprintf(L->jobfile, sizeof(L->jobfile), "%s/hosts-%d", L->dir, L->attempt);
    int fd = open(L->jobfile, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        if (fd >= 0)
            close(fd);
        return bp_cli_error(0, "launch: cannot write %s: %s", L->jobfile, strerror(errno)), -1;
    }
    for (int i = 0; i < L->nhosts; i++) {
        const host *h = &L->hosts[i];
        if (h->dropped)
            continue;
        fprintf(f, "%s", h->name);
        if (h->slots)
            fprintf(f, " slots=%ld", h->slots);
        if (h->max_slots)
            fprintf(f, " max_slots=%ld", h->max_slots);
        fprintf(f, "\n");
    }
    if (fclose(f) != 0)
        return bp_cli_error(0, "launch: cannot write %s: %s", L->jobfile, strerror(errno)), -1;
    return 0;
}

/* "job N on K hosts: a, b, c" on stderr as each job starts: which hosts a run used when,
 * in the launcher's own words (a long list is cut). */
static void say_start(const launcher *L)
{
    char list[1024] = "";
    size_t at = 0;
    int k = 0;
    for (int i = 0; i < L->nhosts; i++) {
        if (L->hosts[i].dropped)
            continue;
        int w = snprintf(list + at, sizeof(list) - at, "%s%s", k ? ", " : "", L->hosts[i].name);
        at = w < 0 || (size_t)w >= sizeof(list) - at ? sizeof(list) - 1 : at + (size_t)w;
        k++;
    }
    if (at == sizeof(list) - 1)
        memcpy(list + sizeof(list) - 4, "...", 4);
    say("job %d on %d host%s: %s", L->attempt, k, k == 1 ? "" : "s", list);
}

static int start_job(launcher *L)
{
    L->attempt++;
    if (write_jobfile(L) < 0)
        return -1;
    const char *argv[256 + 2 * MAX_SETS + 16];
    int n = 0;
    argv[n++] = mpirun_program(), argv[n++] = "--hostfile", argv[n++] = L->jobfile;
    for (int i = 0; i < L->a.nmpirun; i++)
        argv[n++] = L->a.mpirun_args[i];
    argv[n++] = "-x", argv[n++] = "BACKPROP_EVENTS=1";
    argv[n++] = L->exe, argv[n++] = "train", argv[n++] = L->a.config;
    argv[n++] = "--resume", argv[n++] = "auto";
    for (int i = 0; i < L->a.nsets; i++)
        argv[n++] = "--set", argv[n++] = L->a.sets[i];
    argv[n] = NULL;
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return bp_cli_error(0, "launch: cannot make a pipe: %s", strerror(errno)), -1;
    L->job = spawn((char *const *)argv, p[1]);
    int e = errno;
    close(p[1]);
    if (L->job < 0) {
        close(p[0]);
        return bp_cli_error(0, "launch: cannot run %s: %s", argv[0], strerror(e)), -1;
    }
    fcntl(p[0], F_SETFL, fcntl(p[0], F_GETFL) | O_NONBLOCK);
    L->err_fd = p[0];
    L->mode = LINE_UNDECIDED, L->nline = 0;
    L->reason[0] = 0, L->have_record = 0, L->taking_back = 0, L->early = 0, L->killed = 0;
    L->started = 0, L->stop_pending = 0;
    L->next_takeback = now_s() + L->a.probe_every;
    say_start(L);
    return 0;
}

/* SIGUSR1, SIGTERM, SIGINT, SIGHUP or SIGQUIT: the job stops with a checkpoint. A third
 * passes two more SIGUSR1 on, so that the ranks see three and end at once, as a third
 * signal ends `train` (a job that cannot reach a step); not SIGTERM to mpirun, which
 * crashes Open MPI 4.1's mpirun in PMIx_Finalize when the ranks are already ending. */
static void on_signal(launcher *L, int signo)
{
    if (!L->stop_signal)
        L->stop_signal = signo;
    L->stop_count++;
    if (L->job > 0 && L->stop_count == 1 && !L->taking_back)
        request_stop(L);
    else if (L->job > 0 && L->stop_count == 3 && L->started)
        kill(L->job, SIGUSR1), kill(L->job, SIGUSR1);
}

static void on_children(launcher *L)
{
    int status;
    if (L->job > 0 && reap(L->job, &status)) {
        L->job = 0;
        L->job_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    for (int i = 0; i < L->nhosts; i++) {
        host *h = &L->hosts[i];
        if (h->probe == PROBE_RUNNING && reap(h->probe_pid, &status)) {
            probe_ended(h, status);
            if (h->dropped && h->probe == PROBE_ANSWERED)
                take_back(L, h);
        }
    }
}

/* The next moment something is due: a probe's deadline, the next probe of dropped hosts
 * while the job runs, or until. */
static double next_due(const launcher *L, double until)
{
    double t = until;
    for (int i = 0; i < L->nhosts; i++)
        if (L->hosts[i].probe == PROBE_RUNNING && L->hosts[i].probe_deadline < t)
            t = L->hosts[i].probe_deadline;
    if (L->job > 0 && count_usable(L) < L->nhosts && L->next_takeback < t)
        t = L->next_takeback;
    return t;
}

/* The job is ending for a hung collective (a record said so) and a probe found a usable
 * host lost: mpirun would wait for that host's daemon until its keepalives give up (tens
 * of seconds here, minutes with Linux's default TCP retries). The launcher ends it now. */
static void end_doomed_job(launcher *L)
{
    if (L->job <= 0 || !L->early || L->killed)
        return;
    int lost = 0;
    for (int i = 0; i < L->nhosts; i++) {
        const host *h = &L->hosts[i];
        if (!h->dropped && h->probe == PROBE_RUNNING)
            return;
        lost += !h->dropped && h->probe == PROBE_FAILED;
    }
    if (lost) {
        kill_mpirun(L->job);
        L->killed = 1;
    }
}

/* Waits for the next thing to happen (a signal, a child's end, mpirun's output, a deadline,
 * or until) and handles it. */
static void pump(launcher *L, double until)
{
    struct pollfd fds[2] = {{L->sigfd, POLLIN, 0}, {L->err_fd, POLLIN, 0}};
    double wait = next_due(L, until) - now_s();
    int ms = wait <= 0 ? 0 : wait > 3600 ? 3600000 : (int)(wait * 1000) + 1;
    if (poll(fds, L->err_fd >= 0 ? 2 : 1, ms) < 0 && errno != EINTR)
        return;
    struct signalfd_siginfo si;
    if (fds[0].revents & POLLIN)
        while (read(L->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
            if (si.ssi_signo != SIGCHLD)
                on_signal(L, (int)si.ssi_signo);
    if (L->err_fd >= 0 && (fds[1].revents & (POLLIN | POLLHUP | POLLERR)))
        read_err(L, 0);
    on_children(L);
    double t = now_s();
    for (int i = 0; i < L->nhosts; i++)
        if (L->hosts[i].probe == PROBE_RUNNING && L->hosts[i].probe_deadline <= t)
            probe_overran(L, &L->hosts[i]);
    end_doomed_job(L);
    if (L->job > 0 && !L->taking_back && count_usable(L) < L->nhosts && L->next_takeback <= t) {
        probe_hosts(L, 1);
        L->next_takeback = t + L->a.probe_every;
    }
}

/* Runs the job to its end; its exit status. What mpirun printed after its end is shown
 * (the pipe is drained, not waited on: a lost host's daemon may hold it open). */
static int run_job(launcher *L)
{
    for (int i = 0; i < L->nhosts; i++)
        if (L->hosts[i].probe != PROBE_RUNNING)
            L->hosts[i].probe = PROBE_IDLE;
    if (start_job(L) < 0)
        return -1;
    while (L->job > 0)
        pump(L, now_s() + 3600);
    if (L->err_fd >= 0)
        read_err(L, 1);
    return L->job_status;
}

/* Waits for the probes; the usable hosts that failed theirs, or -1 when a signal came. */
static int wait_probes(launcher *L)
{
    while (probes_running(L) && !L->stop_signal)
        pump(L, now_s() + 3600);
    if (L->stop_signal)
        return -1;
    int failed = 0;
    for (int i = 0; i < L->nhosts; i++)
        failed += !L->hosts[i].dropped && L->hosts[i].probe == PROBE_FAILED;
    return failed;
}

/* After the job failed: the hosts that did not answer a probe (of the round started while
 * the job ended, or of one now), dropped, with one line. The number dropped, or -1 when a
 * signal came. */
static int drop_lost(launcher *L)
{
    for (int i = 0; i < L->nhosts; i++)
        if (L->hosts[i].dropped)
            end_probe(&L->hosts[i]); /* taking it back is off */
    int failed = L->early ? wait_probes(L) : 0;
    if (failed == 0) {
        for (int i = 0; i < L->nhosts; i++)
            end_probe(&L->hosts[i]);
        probe_hosts(L, 0);
        failed = wait_probes(L);
    }
    if (failed <= 0)
        return failed;
    char names[1024] = "", why[160] = "";
    for (int i = 0; i < L->nhosts; i++) {
        host *h = &L->hosts[i];
        if (h->dropped || h->probe != PROBE_FAILED)
            continue;
        h->dropped = 1;
        size_t n = strlen(names);
        snprintf(names + n, sizeof(names) - n, "%s%s", n ? ", " : "", h->name);
        snprintf(why, sizeof(why), "%s", h->probe_why);
    }
    int left = count_usable(L);
    say("host%s %s dropped (no answer to a probe after the job ended: %s%s%s); %s %d host%s",
        failed > 1 ? "s" : "", names, why, L->reason[0] ? "; " : "", L->reason,
        left >= L->a.min_hosts ? "continuing on" : "left:", left, left == 1 ? "" : "s");
    return failed;
}

/* Waits seconds before a restart, or until a signal. */
static void back_off(launcher *L, double seconds)
{
    double until = now_s() + seconds;
    while (now_s() < until && !L->stop_signal)
        pump(L, until);
}

/* The job's status, restarting it after lost hosts and to take hosts back. */
static int supervise(launcher *L)
{
    long restarts = 0;
    double delay = L->a.backoff;
    for (;;) {
        int status = run_job(L);
        if (status < 0)
            return EXIT_FAILURE_DURING_WORK;
        if (status == EXIT_OK || status == EXIT_BAD_INPUT || L->stop_signal)
            return status <= EXIT_STOPPED ? status : EXIT_FAILURE_DURING_WORK;
        if (status == EXIT_STOPPED) {
            if (!L->taking_back)
                return status;
            delay = L->a.backoff; /* the hosts are well again */
            continue;
        }
        int dropped = drop_lost(L);
        if (dropped < 0)
            break;
        if (dropped == 0 && !L->have_record)
            return EXIT_FAILURE_DURING_WORK; /* every host answers: not a lost host */
        int left = count_usable(L);
        if (left == 0) {
            bp_cli_error(0, "launch: no host answers a probe: mpirun itself may be what fails "
                            "(check --mpirun-arg and BACKPROP_MPIRUN)");
            return EXIT_FAILURE_DURING_WORK;
        }
        if (dropped == 0) /* a collective timed out, yet every host answers: a link that
                           * flapped, a host that stalled; a retry can fix it */
            say("%s, and every host answers now: starting it again on all %d", L->reason, left);
        if (left < L->a.min_hosts) {
            bp_cli_error(0, "launch: %d host%s left, fewer than --min-hosts %ld", left,
                         left == 1 ? "" : "s", L->a.min_hosts);
            return EXIT_FAILURE_DURING_WORK;
        }
        if (restarts++ == L->a.max_restarts) {
            bp_cli_error(0, "launch: hosts were lost %ld times (--max-restarts %ld): giving up",
                         restarts, L->a.max_restarts);
            return EXIT_FAILURE_DURING_WORK;
        }
        back_off(L, delay);
        delay = 2 * delay < MAX_BACKOFF ? 2 * delay : MAX_BACKOFF;
        if (L->stop_signal)
            break;
    }
    say("stopped by SIG%s before the job started again; its last checkpoint is where it "
        "resumes",
        sigabbrev_np(L->stop_signal) ? sigabbrev_np(L->stop_signal) : "NAL");
    return EXIT_STOPPED;
}

/* ---- the command ---- */

/* The signals the launcher takes through its signalfd: blocked first thing, so that none
 * ends it by its default action while it reads its arguments. */
static void launcher_signals(sigset_t *set)
{
    static const int signals[] = {SIGCHLD, SIGUSR1, SIGTERM, SIGINT, SIGHUP, SIGQUIT};
    sigemptyset(set);
    for (size_t i = 0; i < sizeof(signals) / sizeof(signals[0]); i++)
        sigaddset(set, signals[i]);
}

static int setup(launcher *L, char *err, size_t len)
{
    ssize_t n = readlink("/proc/self/exe", L->exe, sizeof(L->exe) - 1);
    if (n <= 0 || (size_t)n >= sizeof(L->exe) - 1)
        return snprintf(err, len, "launch: cannot find this program's path: %s", strerror(errno)),
               -1;
    L->exe[n] = 0;
    const char *tmp = getenv("TMPDIR");
    snprintf(L->dir, sizeof(L->dir), "%s/backprop-launch.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(L->dir)) {
        snprintf(err, len, "launch: cannot make a directory in %s: %s", tmp && *tmp ? tmp : "/tmp",
                 strerror(errno));
        L->dir[0] = 0;
        return -1;
    }
    sigset_t set;
    launcher_signals(&set);
    signal(SIGPIPE, SIG_IGN);
    if ((L->sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK)) < 0)
        return snprintf(err, len, "launch: cannot take signals: %s", strerror(errno)), -1;
    return 0;
}

static void cleanup(launcher *L)
{
    kill_probes(L);
    if (L->job > 0) { /* only after an error of the launcher's own */
        kill_mpirun(L->job);
        waitpid(L->job, NULL, 0);
    }
    if (L->err_fd >= 0)
        close(L->err_fd);
    if (L->jobfile[0])
        unlink(L->jobfile);
    if (L->dir[0])
        rmdir(L->dir);
    for (int i = 0; i < L->nhosts; i++)
        free(L->hosts[i].name);
    free(L->hosts);
    free(L->line);
}

int bp_cmd_launch(int argc, char **argv)
{
    sigset_t set;
    launcher_signals(&set);
    sigprocmask(SIG_BLOCK, &set, NULL);
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(launch_usage, stdout);
            return EXIT_OK;
        }
    static launcher L;
    char err[2048];
    memset(&L, 0, sizeof(L));
    L.err_fd = -1, L.sigfd = -1;
    int status = EXIT_BAD_INPUT;
    if (parse_args(argc, argv, &L.a, err, sizeof(err)) < 0 ||
        read_hostfile(&L, err, sizeof(err)) < 0)
        goto fail;
    if (L.a.min_hosts > L.nhosts) {
        snprintf(err, sizeof(err), "--min-hosts %ld is more than the %d host%s of %s",
                 L.a.min_hosts, L.nhosts, L.nhosts == 1 ? "" : "s", L.a.hostfile);
        goto fail;
    }
    status = EXIT_FAILURE_DURING_WORK;
    if (setup(&L, err, sizeof(err)) < 0)
        goto fail;
    status = supervise(&L);
    cleanup(&L);
    return status;
fail:
    bp_cli_error(0, "%s", err);
    cleanup(&L);
    return status;
}
