/* The run directory on disk. Nothing here is ever half-written under its final name:
 * checkpoints go through bp_checkpoint_write's temp-fsync-rename, latest.h5 is a hard
 * link swapped in by rename, the metrics CSV is rewritten the same way on resume. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "rundir.h"

#define CSV_HEADER                                                                                 \
    "epoch,step,train_cost,train_accuracy,val_cost,val_accuracy,test_cost,test_accuracy,"          \
    "samples_per_s,elapsed_s\n"

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

static void parent_dir(const char *path, char *out, size_t len)
{
    snprintf(out, len, "%s", path);
    char *slash = strrchr(out, '/');
    if (!slash)
        snprintf(out, len, ".");
    else if (slash == out)
        slash[1] = 0;
    else
        *slash = 0;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int bp_rundir_resolve(const bp_config *cfg, const char *resume, char *out, size_t outlen, char *err,
                      size_t errlen)
{
    if (strcmp(resume, "latest") != 0) {
        snprintf(out, outlen, "%s", resume);
        return 0;
    }
    snprintf(out, outlen, "%s/latest.h5", cfg->checkpoint_dir);
    if (access(out, F_OK) != 0)
        return bp__fail(err, errlen, BP_EINVAL,
                        "--resume latest: no checkpoint in %s (%s not found)", cfg->checkpoint_dir,
                        out);
    return 0;
}

int bp_rundir_resume(bp_trainer *t, const char *path, char *err, size_t errlen)
{
    bp_checkpoint ck;
    int rc = bp_checkpoint_read(path, &ck, err, errlen);
    if (rc < 0)
        return rc;
    rc = bp_checkpoint_match(&ck, &t->net, err, errlen);
    if (rc == 0) {
        memcpy(t->net.params, ck.net.params, t->net.nparams * sizeof(bp_real));
        memcpy(t->velocity, ck.velocity, t->net.nparams * sizeof(bp_real));
        t->st = ck.state; /* takes over the metrics array */
        ck.state.metrics = NULL;
        ck.state.nmetrics = 0;
        t->last_ckpt_step = t->st.global_step;
        t->resumed = 1;
    }
    bp_checkpoint_free(&ck);
    return rc;
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
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    long lines = 0;
    for (int ch; (ch = fgetc(f)) != EOF;)
        lines += ch == '\n';
    fclose(f);
    return lines > 1 ? lines - 1 : 0;
}

int bp_rundir_prepare(const bp_trainer *t, int resuming, char *err, size_t errlen)
{
    const bp_config *c = t->cfg;
    int rc = check_writable(c->checkpoint_dir, err, errlen);
    if (rc < 0)
        return rc;
    char metrics_dir[BP_PATH_MAX];
    parent_dir(c->metrics, metrics_dir, sizeof(metrics_dir));
    rc = check_writable(metrics_dir, err, errlen);
    if (rc < 0)
        return rc;
    char latest[BP_PATH_MAX + 16];
    snprintf(latest, sizeof(latest), "%s/latest.h5", c->checkpoint_dir);
    if (!resuming && access(latest, F_OK) == 0)
        return bp__fail(err, errlen, BP_EINVAL,
                        "%s already holds a run (%s); continue it with --resume latest, or "
                        "set another [checkpoint] dir",
                        c->checkpoint_dir, latest);
    if (!resuming && metrics_rows(c->metrics) > 0)
        return bp__fail(err, errlen, BP_EINVAL,
                        "%s already holds another run's metrics; set another [log] metrics, "
                        "or remove it",
                        c->metrics);
    return 0;
}

static void csv_field(FILE *f, double v, int last)
{
    if (!isnan(v))
        fprintf(f, "%.9g", v);
    fputc(last ? '\n' : ',', f);
}

static void csv_row(FILE *f, const bp_metrics_row *r)
{
    fprintf(f, "%ld,%ld,", r->epoch, r->step);
    const double v[] = {r->train_cost, r->train_accuracy, r->val_cost,      r->val_accuracy,
                        r->test_cost,  r->test_accuracy,  r->samples_per_s, r->elapsed_s};
    for (int i = 0; i < 8; i++)
        csv_field(f, v[i], i == 7);
}

/* Writes the header and the rows so far to a temporary file, then renames it over the
 * metrics file: a resumed run's CSV holds each epoch once. */
static int rewrite_metrics(const bp_trainer *t, char *err, size_t errlen)
{
    const char *path = t->cfg->metrics;
    char tmp[BP_PATH_MAX + 32];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f)
        return bp__fail(err, errlen, BP_EIO, "%s: cannot write (%s)", tmp, strerror(errno));
    fputs(CSV_HEADER, f);
    for (size_t i = 0; i < t->st.nmetrics; i++)
        csv_row(f, &t->st.metrics[i]);
    int bad = fflush(f) != 0;
    bad |= fclose(f) != 0;
    if (bad) {
        unlink(tmp);
        return bp__fail(err, errlen, BP_EIO, "%s: cannot write (%s)", tmp, strerror(errno));
    }
    if (bp__commit_file(tmp, path) < 0) /* fsync, rename, fsync the directory */
        return bp__fail(err, errlen, BP_EIO, "%s: cannot write (%s)", path, strerror(errno));
    return 0;
}

static void remove_stale_temps(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[BP_PATH_MAX + 300];
    while ((e = readdir(d)) != NULL) {
        /* Temporaries of a run killed mid-write: ".<name>.tmp.<pid>". */
        if (e->d_name[0] == '.' && strstr(e->d_name, ".h5.tmp.")) {
            snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
            unlink(path);
        }
    }
    closedir(d);
}

int bp_rundir_start(bp_trainer *t, char *err, size_t errlen)
{
    remove_stale_temps(t->cfg->checkpoint_dir);
    return rewrite_metrics(t, err, errlen);
}

int bp_rundir_append_metrics(const bp_trainer *t, const bp_metrics_row *row, char *err,
                             size_t errlen)
{
    FILE *f = fopen(t->cfg->metrics, "a");
    if (!f)
        return bp__fail(err, errlen, BP_EIO, "%s: cannot append (%s)", t->cfg->metrics,
                        strerror(errno));
    csv_row(f, row);
    int bad = fflush(f) != 0;
    bad |= fclose(f) != 0;
    if (bad)
        return bp__fail(err, errlen, BP_EIO, "%s: write failed (%s)", t->cfg->metrics,
                        strerror(errno));
    return 0;
}

/* latest.h5 becomes a second name of the newest checkpoint: link to a temporary name,
 * rename over latest.h5. Where hard links are not supported, a full copy is written. */
static int update_latest(const bp_trainer *t, const char *ckpt, char *err, size_t errlen)
{
    const char *dir = t->cfg->checkpoint_dir;
    char latest[BP_PATH_MAX + 16], tmp[BP_PATH_MAX + 48];
    snprintf(latest, sizeof(latest), "%s/latest.h5", dir);
    snprintf(tmp, sizeof(tmp), "%s/.latest.h5.tmp.%ld", dir, (long)getpid());
    unlink(tmp);
    if (link(ckpt, tmp) == 0) {
        if (rename(tmp, latest) == 0) {
            fsync_dir(dir);
            return 0;
        }
        unlink(tmp);
        return bp__fail(err, errlen, BP_EIO, "%s: cannot rename (%s)", latest, strerror(errno));
    }
    return bp_checkpoint_write(latest, &t->net, t->velocity, &t->st, t->config_text, err, errlen);
}

static int step_of(const char *name, long *step)
{
    int used = 0;
    if (sscanf(name, "ckpt-%ld.h5%n", step, &used) == 1 && name[used] == 0)
        return 0;
    return -1;
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

static int write_checkpoint_files(bp_trainer *t, char *err, size_t errlen)
{
    char path[BP_PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/ckpt-%ld.h5", t->cfg->checkpoint_dir, t->st.global_step);
    int rc = bp_checkpoint_write(path, &t->net, t->velocity, &t->st, t->config_text, err, errlen);
    if (rc == 0)
        rc = update_latest(t, path, err, errlen);
    if (rc == 0)
        prune(t->cfg->checkpoint_dir, t->cfg->keep);
    return rc;
}

int bp_rundir_checkpoint(bp_trainer *t, char *err, size_t errlen)
{
    size_t bytes = t->net.nparams * sizeof(bp_real);
    uint64_t h = bp__hash(t->velocity, bytes, bp_net_checksum(&t->net));
    if (!bp_comm_same(&t->comm, h))
        return bp__fail(err, errlen, BP_ECOMM,
                        "replicas differ at step %ld: the ranks' weights are no longer "
                        "bit-identical",
                        t->st.global_step);
    t->st.elapsed_s = bp_trainer_elapsed(t);
    t->st.ranks = t->comm.size;
    int rc = t->comm.rank == 0 ? write_checkpoint_files(t, err, errlen) : 0;
    int who;
    if (bp_comm_agree(&t->comm, rc < 0, &who) != 0)
        return rc < 0 ? rc : BP_EIO;
    t->last_ckpt_step = t->st.global_step;
    return 0;
}
