/* The run directory on disk. One run owns it at a time (a lock file that rank 0 holds).
 * Nothing here is ever half-written under its final name: checkpoints and the metrics CSV
 * are published through bp__publish, latest.h5 is a hard link swapped in by rename, and a
 * metrics row is appended whole or not at all. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "h5util.h"
#include "internal.h"
#include "rundir.h"

static int mkdirs(const char *path)
{
    char buf[BP_PATH_MAX];
    if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
        return -1;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(buf, 0777) < 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(buf, 0777) < 0 && errno != EEXIST ? -1 : 0;
}

int bp__rundir_resolve(const bp_config *cfg, const char *resume, char *out, size_t outlen,
                       char *err, size_t errlen)
{
    if (strcmp(resume, "latest") != 0) {
        snprintf(out, outlen, "%s", resume);
        return 0;
    }
    snprintf(out, outlen, "%s/latest.h5", cfg->checkpoint_dir);
    if (access(out, F_OK) != 0)
        return bp__fail(err, errlen, BP_ENOENT, "no checkpoint in %s (%s not found)",
                        cfg->checkpoint_dir, out);
    return 0;
}

static int check_writable(const char *dir, char *err, size_t errlen)
{
    if (mkdirs(dir) < 0)
        return bp__fail(err, errlen, BP_EINVAL, "cannot create directory %s (%s)", dir,
                        strerror(errno));
    char probe[BP_PATH_MAX + 64];
    snprintf(probe, sizeof(probe), "%s/.backprop-probe.%ld", dir, (long)getpid());
    int fd = open(probe, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0)
        return bp__fail(err, errlen, BP_EINVAL, "directory %s is not writable (%s)", dir,
                        strerror(errno));
    close(fd);
    unlink(probe);
    return 0;
}

/* Data rows (lines after the header) of an existing metrics CSV; 0 if there is none. */
static long metrics_rows(const char *path)
{
    int fd = bp__input_open(path, NULL, NULL, 0);
    FILE *f = fd < 0 ? NULL : fdopen(fd, "r");
    if (!f) {
        if (fd >= 0)
            close(fd);
        return 0;
    }
    long lines = 0;
    for (int ch; (ch = fgetc(f)) != EOF;)
        lines += ch == '\n';
    fclose(f);
    return lines > 1 ? lines - 1 : 0;
}

/* The lock that makes this process the only run working with path: DIR/.backprop.lock for
 * a directory, .NAME.lock beside a file. */
static int take_lock(bp__lock *lk, const char *path, int is_dir, char *err, size_t errlen)
{
    char lockpath[BP__PATH_LEN], why[300];
    const char *slash = strrchr(path, '/');
    if (is_dir)
        snprintf(lockpath, sizeof(lockpath), "%s/.backprop.lock", path);
    else
        snprintf(lockpath, sizeof(lockpath), "%.*s.%s.lock", slash ? (int)(slash + 1 - path) : 0,
                 path, slash ? slash + 1 : path);
    int rc = bp__lock_take(lk, lockpath, why, sizeof(why));
    if (rc == BP_EINVAL)
        return bp__fail(err, errlen, BP_EINVAL,
                        "%s is in use by another run (%s; lock %s); wait for it to end, or set "
                        "another %s",
                        path, why, lockpath, is_dir ? "[checkpoint] dir" : "[log] metrics");
    if (rc < 0)
        return bp__fail(err, errlen, rc, "%s", why);
    return 0;
}

static int step_of(const char *name, long *step);

/* The names a run writes in [checkpoint] dir: checkpoints, latest.h5, the step times, the
 * trace (the watchdog's, when [log] trace is not set), the directory's lock, and
 * temporaries (which it also sweeps). */
static int is_run_name(const char *name)
{
    long step;
    return strcmp(name, "latest.h5") == 0 || strcmp(name, "step_times.csv") == 0 ||
           strcmp(name, "trace.json") == 0 || strcmp(name, ".backprop.lock") == 0 ||
           step_of(name, &step) == 0 || bp__is_temp_name(name);
}

/* The data files a run reads, with their keys, for the messages. */
#define NINPUTS 6
static void inputs_of(const bp_config *c, const char *paths[NINPUTS], const char *keys[NINPUTS])
{
    const char *p[NINPUTS] = {c->train, c->train_labels, c->validation, c->validation_labels,
                              c->test,  c->test_labels};
    const char *k[NINPUTS] = {"train", "train_labels", "validation", "validation_labels",
                              "test",  "test_labels"};
    memcpy(paths, p, sizeof(p));
    memcpy(keys, k, sizeof(k));
}

/* "[data] KEY = PATH" of the input that is the file st, or NULL. */
static const char *input_named(const bp_config *c, const struct stat *st, char *buf, size_t len)
{
    const char *paths[NINPUTS], *keys[NINPUTS];
    inputs_of(c, paths, keys);
    struct stat in;
    for (int i = 0; i < NINPUTS; i++)
        if (paths[i][0] && stat(paths[i], &in) == 0 && bp__same_file(&in, st)) {
            snprintf(buf, len, "[data] %s = %s", keys[i], paths[i]);
            return buf;
        }
    return NULL;
}

/* Whether the file at path is empty or starts with the metrics CSV's header: a file the
 * metrics may replace. */
static int is_metrics_csv(const char *path)
{
    char header[256], head[256];
    size_t len = 0;
    for (int i = 0; i < BP_METRIC_COLUMNS; i++)
        len += (size_t)snprintf(header + len, sizeof(header) - len, "%s%c", bp_metric_columns[i],
                                i + 1 < BP_METRIC_COLUMNS ? ',' : '\n');
    int fd = bp__input_open(path, NULL, NULL, 0);
    if (fd < 0)
        return 0;
    ssize_t got = pread(fd, head, len, 0);
    close(fd);
    return got == 0 || (got == (ssize_t)len && memcmp(head, header, len) == 0);
}

/* What [log] metrics and [log] trace (key, at path) both must be: not a name the run
 * writes in its directory (but `own`, the one the key may have there), and, when the file
 * exists, a regular file, not an input (under any name), not a checkpoint, not the step
 * times. 1 when it exists and may be looked into, 0 when it does not exist yet, or a
 * refusal. */
static int check_log_file(const bp_config *c, const char *key, const char *path, const char *own,
                          char *err, size_t errlen)
{
    char dir[BP_PATH_MAX], input[BP_PATH_MAX + 64], times[BP_PATH_MAX + 32];
    const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
    struct stat pd, cd, st, ts;
    bp__dir_of(path, dir, sizeof(dir));
    if (stat(dir, &pd) == 0 && stat(c->checkpoint_dir, &cd) == 0 && bp__same_file(&pd, &cd) &&
        is_run_name(base) && !(own && strcmp(base, own) == 0))
        return bp__fail(err, errlen, BP_EINVAL,
                        "[log] %s = %s is %s/%s, a file the run writes itself; name another file",
                        key, path, c->checkpoint_dir, base);
    if (lstat(path, &st) != 0)
        return 0;
    if (!S_ISREG(st.st_mode))
        return bp__fail(err, errlen, BP_EINVAL,
                        "[log] %s = %s is not a regular file; name a file to write", key, path);
    if (input_named(c, &st, input, sizeof(input)))
        return bp__fail(err, errlen, BP_EINVAL, "[log] %s = %s is the input %s; name another file",
                        key, path, input);
    if (bp__h5_is_checkpoint(path))
        return bp__fail(err, errlen, BP_EINVAL,
                        "[log] %s = %s is a checkpoint, which it would replace; name another file",
                        key, path);
    snprintf(times, sizeof(times), "%s/step_times.csv", c->checkpoint_dir);
    if (stat(times, &ts) == 0 && bp__same_file(&ts, &st))
        return bp__fail(err, errlen, BP_EINVAL,
                        "[log] %s = %s is %s, a file the run writes itself; name another file", key,
                        path, times);
    return 1;
}

/* The metrics CSV is rewritten and appended to in place: it must be a file of its own
 * (check_log_file), and nothing but a metrics CSV (a resume, too, replaces only what a run
 * wrote). */
static int check_metrics_path(const bp_config *c, char *err, size_t errlen)
{
    int rc = check_log_file(c, "metrics", c->metrics, NULL, err, errlen);
    if (rc == 1 && !is_metrics_csv(c->metrics))
        return bp__fail(err, errlen, BP_EINVAL,
                        "[log] metrics = %s exists and is not a metrics CSV (its first line is "
                        "not the header); name another file, or remove it",
                        c->metrics);
    return rc < 0 ? rc : 0;
}

/* Whether the file at path starts as the traces backprop writes (src/recorder.c), or is
 * empty: a file a trace may replace. */
static int is_trace(const char *path)
{
    static const char head[] = "{\"displayTimeUnit\":\"ms\",\"otherData\":{\"backprop\":";
    char got[sizeof(head)];
    int fd = bp__input_open(path, NULL, NULL, 0);
    if (fd < 0)
        return 0;
    ssize_t n = pread(fd, got, sizeof(head) - 1, 0);
    close(fd);
    return n == 0 || (n == (ssize_t)sizeof(head) - 1 && memcmp(got, head, sizeof(head) - 1) == 0);
}

/* Whether paths a and b name one file, now or once written: the same file when both exist,
 * else the same name in the same directory (however either is spelled). */
static int same_target(const char *a, const char *b)
{
    struct stat sa, sb;
    if (stat(a, &sa) == 0 && stat(b, &sb) == 0)
        return bp__same_file(&sa, &sb);
    char da[BP_PATH_MAX], db[BP_PATH_MAX];
    const char *na = strrchr(a, '/'), *nb = strrchr(b, '/');
    bp__dir_of(a, da, sizeof(da));
    bp__dir_of(b, db, sizeof(db));
    return strcmp(na ? na + 1 : a, nb ? nb + 1 : b) == 0 && stat(da, &sa) == 0 &&
           stat(db, &sb) == 0 && bp__same_file(&sa, &sb);
}

/* [log] trace is replaced whole at the end of a run, on a stop and by the watchdog: its
 * directory writable, not the metrics (written or not yet), a file of its own
 * (check_log_file; in the run's directory, trace.json is its name), and nothing but a
 * trace. */
static int check_trace_path(const bp_config *c, char *err, size_t errlen)
{
    char dir[BP_PATH_MAX];
    bp__dir_of(c->trace, dir, sizeof(dir));
    int rc = check_writable(dir, err, errlen);
    if (rc < 0)
        return rc;
    if (same_target(c->trace, c->metrics))
        return bp__fail(err, errlen, BP_EINVAL,
                        "[log] trace = %s is the metrics file %s; name another file", c->trace,
                        c->metrics);
    rc = check_log_file(c, "trace", c->trace, "trace.json", err, errlen);
    if (rc == 1 && !is_trace(c->trace))
        return bp__fail(err, errlen, BP_EINVAL,
                        "[log] trace = %s exists and is not a backprop trace; name another file, "
                        "or remove it",
                        c->trace);
    return rc < 0 ? rc : 0;
}

/* The entry of [checkpoint] dir, among the names the run writes, replaces or sweeps, that is
 * the file st under any name, into path; 0 when there is none. */
static int run_entry_of(const bp_config *c, const struct stat *st, char *path, size_t len)
{
    DIR *d = opendir(c->checkpoint_dir);
    if (!d)
        return 0; /* check_writable made it: a directory that vanished fails at the write */
    struct dirent *e;
    int found = 0;
    while (!found && (e = readdir(d)) != NULL) {
        struct stat es;
        if (!is_run_name(e->d_name) || strcmp(e->d_name, ".backprop.lock") == 0)
            continue;
        snprintf(path, len, "%s/%s", c->checkpoint_dir, e->d_name);
        found = stat(path, &es) == 0 && bp__same_file(&es, st);
    }
    closedir(d);
    return found;
}

int bp__rundir_check_input(const bp_config *cfg, const char *path, const char *what, char *err,
                           size_t errlen)
{
    struct stat st;
    char entry[BP_PATH_MAX + 300];
    if (stat(path, &st) != 0 || !run_entry_of(cfg, &st, entry, sizeof(entry)))
        return 0;
    return bp__fail(err, errlen, BP_EINVAL,
                    "%s is %s, and the run %s; move the file out of [checkpoint] dir, or set "
                    "another dir",
                    entry, what,
                    bp__is_temp_name(strrchr(entry, '/') + 1)
                        ? "removes that name as a stale temporary"
                        : "writes that name");
}

/* What the run replaces in [checkpoint] dir (checkpoints, latest.h5, the step times) must
 * not be one of its inputs, under any name; the step times must be a file, and not a
 * checkpoint. */
static int check_dir_outputs(const bp_config *c, char *err, size_t errlen)
{
    const char *paths[NINPUTS], *keys[NINPUTS];
    char what[BP_PATH_MAX + 64], times[BP_PATH_MAX + 32];
    struct stat st;
    inputs_of(c, paths, keys);
    for (int i = 0; i < NINPUTS; i++) {
        snprintf(what, sizeof(what), "the input [data] %s = %s", keys[i], paths[i]);
        int rc = paths[i][0] ? bp__rundir_check_input(c, paths[i], what, err, errlen) : 0;
        if (rc < 0)
            return rc;
    }
    snprintf(times, sizeof(times), "%s/step_times.csv", c->checkpoint_dir);
    if (stat(times, &st) == 0 && (!S_ISREG(st.st_mode) || bp__h5_is_checkpoint(times)))
        return bp__fail(err, errlen, BP_EINVAL,
                        "%s is %s, and the run replaces it with its step times; remove it, or "
                        "set another [checkpoint] dir",
                        times, S_ISREG(st.st_mode) ? "a checkpoint" : "not a regular file");
    return 0;
}

static int check_resume(const bp_config *c, const char *resume, char *err, size_t errlen);

int bp__rundir_prepare(const bp_config *c, const char *resume, bp__lock *dir_lock,
                       bp__lock *metrics_lock, char *err, size_t errlen)
{
    int rc = check_writable(c->checkpoint_dir, err, errlen);
    if (rc < 0)
        return rc;
    char metrics_dir[BP_PATH_MAX];
    bp__dir_of(c->metrics, metrics_dir, sizeof(metrics_dir));
    rc = check_writable(metrics_dir, err, errlen);
    if (rc == 0)
        rc = take_lock(dir_lock, c->checkpoint_dir, 1, err, errlen);
    /* The metrics file has a lock of its own even inside the directory: another run may
     * name it as its [log] metrics. */
    if (rc == 0)
        rc = take_lock(metrics_lock, c->metrics, 0, err, errlen);
    /* The same checks fresh or resumed: a resume writes the same files. */
    if (rc == 0)
        rc = check_metrics_path(c, err, errlen);
    if (rc == 0)
        rc = check_dir_outputs(c, err, errlen);
    if (rc == 0 && c->trace[0])
        rc = check_trace_path(c, err, errlen);
    if (rc < 0)
        return rc;
    if (resume)
        return check_resume(c, resume, err, errlen);
    char latest[BP_PATH_MAX + 16];
    snprintf(latest, sizeof(latest), "%s/latest.h5", c->checkpoint_dir);
    if (access(latest, F_OK) == 0)
        return bp__fail(err, errlen, BP_EEXIST, "%s already holds a run (%s)", c->checkpoint_dir,
                        latest);
    if (metrics_rows(c->metrics) > 0)
        return bp__fail(err, errlen, BP_EINVAL,
                        "%s already holds another run's metrics; set another [log] metrics, "
                        "or remove it",
                        c->metrics);
    return 0;
}

/* One row as the CSV holds it, into buf of CSV_ROW_MAX bytes; returns its length. */
#define CSV_ROW_MAX 512
static size_t csv_row(char *buf, const bp_metrics_row *r)
{
    const double v[] = {r->train_cost, r->train_accuracy, r->val_cost,      r->val_accuracy,
                        r->test_cost,  r->test_accuracy,  r->samples_per_s, r->elapsed_s};
    /* Two longs and eight %.9g fields take under 250 bytes: nothing is ever cut. */
    int n = snprintf(buf, CSV_ROW_MAX, "%ld,%ld", r->epoch, r->step);
    for (int i = 0; i < 8; i++)
        n += isnan(v[i]) ? snprintf(buf + n, CSV_ROW_MAX - (size_t)n, ",")
                         : snprintf(buf + n, CSV_ROW_MAX - (size_t)n, ",%.9g", v[i]);
    n += snprintf(buf + n, CSV_ROW_MAX - (size_t)n, "\n");
    return (size_t)n;
}

/* Publishes the header and the rows so far in place of the metrics file: a resumed run's
 * CSV holds each epoch once. */
static int rewrite_metrics(const bp_config *cfg, const bp_train_state *st, char *err, size_t errlen)
{
    char *text = bp__calloc(CSV_ROW_MAX * (st->nmetrics + 1), 1);
    if (!text)
        return bp__fail(err, errlen, BP_ENOMEM, "%s: out of memory", cfg->metrics);
    size_t len = 0;
    for (int i = 0; i < BP_METRIC_COLUMNS; i++)
        len += (size_t)snprintf(text + len, CSV_ROW_MAX, "%s%c", bp_metric_columns[i],
                                i + 1 < BP_METRIC_COLUMNS ? ',' : '\n');
    for (size_t i = 0; i < st->nmetrics; i++)
        len += csv_row(text + len, &st->metrics[i]);
    int rc = bp__publish(cfg->metrics, text, len, BP__OUT_REPLACE, err, errlen);
    bp__free(text);
    return rc;
}

/* Whether two runs' states can be one run's: the same seed, and the rows of the epochs both
 * have the same (bit for bit: timings included, which no two runs share). */
static int consistent(const bp_train_state *a, const bp_train_state *b)
{
    size_t common = a->nmetrics < b->nmetrics ? a->nmetrics : b->nmetrics;
    return a->seed == b->seed &&
           (common == 0 || memcmp(a->metrics, b->metrics, common * sizeof(bp_metrics_row)) == 0);
}

static size_t common_rows(const bp_train_state *a, const bp_train_state *b)
{
    return a->nmetrics < b->nmetrics ? a->nmetrics : b->nmetrics;
}

/* Whether path names a file in dir (by the directory's identity, not its spelling). */
static int in_dir(const char *path, const char *dir)
{
    char parent[BP_PATH_MAX];
    struct stat a, b;
    bp__dir_of(path, parent, sizeof(parent));
    return stat(parent, &a) == 0 && stat(dir, &b) == 0 && bp__same_file(&a, &b);
}

/* A resume's metrics CSV: nothing, the header alone, or rows whose first epochs, at least
 * one, are the run's history h as the CSV writes it (rows after h's are this run's later
 * epochs, from before a rewind or a stop between a row and its checkpoint). A history of
 * no epoch (a checkpoint from inside the first) proves nothing either way: then the rows
 * are taken only in the run's own directory, whose latest.h5 check_resume has matched. */
static int check_resume_metrics(const bp_config *c, const bp_train_state *h, char *err,
                                size_t errlen)
{
    int fd = bp__input_open(c->metrics, NULL, NULL, 0);
    FILE *f = fd < 0 ? NULL : fdopen(fd, "r");
    if (!f) {
        if (fd >= 0)
            close(fd);
        return 0; /* absent: check_metrics_path refused anything but a missing file */
    }
    char *line = NULL, want[CSV_ROW_MAX];
    size_t cap = 0, rows = 0, matched = 0;
    ssize_t len = getline(&line, &cap, f); /* the header, checked by check_metrics_path */
    while (len > 0 && (len = getline(&line, &cap, f)) > 0) {
        if (rows < h->nmetrics && rows == matched &&
            (size_t)len == csv_row(want, &h->metrics[rows]) && memcmp(line, want, (size_t)len) == 0)
            matched++;
        rows++;
    }
    free(line);
    fclose(f);
    if (rows > 0 && h->nmetrics == 0 && in_dir(c->metrics, c->checkpoint_dir))
        return 0;
    if (rows > 0 && (matched == 0 || matched < (rows < h->nmetrics ? rows : h->nmetrics)))
        return bp__fail(err, errlen, BP_EINVAL,
                        "%s already holds another run's metrics (its rows are not the "
                        "checkpoint's history); set another [log] metrics, or remove it",
                        c->metrics);
    return 0;
}

/* A resume continues one run in [checkpoint] dir: the one in it already (latest.h5), when
 * there is one. The resumed checkpoint is that run's when it is latest.h5 itself, or its
 * state is consistent with latest.h5's and either it is a file of the directory or their
 * histories share at least one epoch. Then the CSV must hold the longer history's rows. */
static int check_resume(const bp_config *c, const char *resume, char *err, size_t errlen)
{
    char from[BP_PATH_MAX + 32], latest[BP_PATH_MAX + 16], why[1024];
    int rc = bp__rundir_resolve(c, resume, from, sizeof(from), err, errlen);
    if (rc < 0)
        return rc;
    bp_train_state mine, theirs;
    memset(&theirs, 0, sizeof(theirs));
    rc = bp__checkpoint_read_state(from, &mine, err, errlen);
    if (rc < 0)
        return rc;
    const bp_train_state *history = &mine;
    struct stat fs, ls;
    snprintf(latest, sizeof(latest), "%s/latest.h5", c->checkpoint_dir);
    if (stat(latest, &ls) == 0 && !(stat(from, &fs) == 0 && bp__same_file(&fs, &ls))) {
        int read = bp__checkpoint_read_state(latest, &theirs, why, sizeof(why)) == 0;
        if (read && consistent(&mine, &theirs) &&
            (in_dir(from, c->checkpoint_dir) || common_rows(&mine, &theirs) > 0))
            history = theirs.nmetrics > mine.nmetrics ? &theirs : &mine;
        else
            rc = bp__fail(err, errlen, BP_EINVAL,
                          "%s already holds a run (%s), and %s is not a checkpoint of it (%s); "
                          "resume that run from its own checkpoints, or set another "
                          "[checkpoint] dir",
                          c->checkpoint_dir, latest, from,
                          !read ? why
                          : !consistent(&mine, &theirs)
                              ? "another seed or other metrics"
                              : "no epoch in common, and not a file of the directory");
    }
    if (rc == 0)
        rc = check_resume_metrics(c, history, err, errlen);
    bp__free(mine.metrics);
    bp__free(theirs.metrics);
    return rc;
}

/* Temporaries of a run killed mid-write (".<name>.tmp.<pid>"): this run owns the directory,
 * so no other process is still writing them. */
static void remove_stale_temps(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[BP_PATH_MAX + 300];
    while ((e = readdir(d)) != NULL) {
        if (bp__is_temp_name(e->d_name)) {
            snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
            unlink(path);
        }
    }
    closedir(d);
}

int bp__rundir_start(const bp_config *cfg, const bp_train_state *st, char *err, size_t errlen)
{
    remove_stale_temps(cfg->checkpoint_dir);
    return rewrite_metrics(cfg, st, err, errlen);
}

int bp__rundir_append_metrics(const bp_config *cfg, const bp_metrics_row *row, char *err,
                              size_t errlen)
{
    char line[CSV_ROW_MAX];
    size_t len = csv_row(line, row);
    return bp__append(cfg->metrics, line, len, err, errlen);
}

/* latest.h5 becomes a second name of the newest checkpoint; where hard links are not
 * supported, a full copy is written. */
static int update_latest(const bp_config *cfg, const bp_run_snapshot *s, const char *ckpt,
                         char *err, size_t errlen)
{
    char latest[BP_PATH_MAX + 16];
    snprintf(latest, sizeof(latest), "%s/latest.h5", cfg->checkpoint_dir);
    int rc = bp__publish_link(ckpt, latest, err, errlen);
    if (rc != 1)
        return rc;
    return bp_checkpoint_write(latest, s->net, &s->opt, s->st, s->config_text, err, errlen);
}

/* The step of "ckpt-<step>.h5" written as backprop writes it (no sign, no leading zeros):
 * prune deletes by the name it rebuilds, which must be the same file. */
static int step_of(const char *name, long *step)
{
    int used = 0;
    char canonical[64];
    if (sscanf(name, "ckpt-%ld.h5%n", step, &used) != 1 || name[used] != 0 || *step < 0)
        return -1;
    snprintf(canonical, sizeof(canonical), "ckpt-%ld.h5", *step);
    return strcmp(canonical, name) == 0 ? 0 : -1;
}

/* Removes the oldest ckpt-<step>.h5 beyond `keep` (0 keeps all). */
static void prune(const char *dir, long keep)
{
    if (keep <= 0)
        return;
    DIR *d = opendir(dir);
    if (!d)
        return;
    long *steps = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    long step;
    while ((e = readdir(d)) != NULL) {
        if (step_of(e->d_name, &step) < 0)
            continue;
        if (n == cap) {
            long *grown = bp__realloc(steps, cap = cap ? 2 * cap : 16, sizeof(long));
            if (!grown)
                break;
            steps = grown;
        }
        steps[n++] = step;
    }
    closedir(d);
    while (n > (size_t)keep) { /* drop the smallest step, n - keep times */
        size_t min = 0;
        for (size_t i = 1; i < n; i++)
            min = steps[i] < steps[min] ? i : min;
        char path[BP_PATH_MAX + 32];
        snprintf(path, sizeof(path), "%s/ckpt-%ld.h5", dir, steps[min]);
        unlink(path);
        steps[min] = steps[--n];
    }
    bp__free(steps);
}

int bp__rundir_write_checkpoint(const bp_config *cfg, const bp_run_snapshot *s, char *err,
                                size_t errlen)
{
    char path[BP_PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/ckpt-%ld.h5", cfg->checkpoint_dir, s->st->global_step);
    int rc = bp_checkpoint_write(path, s->net, &s->opt, s->st, s->config_text, err, errlen);
    if (rc == 0)
        rc = update_latest(cfg, s, path, err, errlen);
    if (rc == 0)
        prune(cfg->checkpoint_dir, cfg->keep);
    return rc;
}
