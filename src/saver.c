#define _GNU_SOURCE /* gettid */
#include <pthread.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "saver.h"

struct bp__saver {
    const bp_config *cfg;
    const char *config_text;
    /* The copy being written: the thread's alone from start until the write ends. */
    bp_net net;
    bp_real *velocity, *moment2; /* moment2 allocated at the first adam snapshot */
    bp_lbfgs_state lbfgs;        /* allocated at the first lbfgs snapshot */
    bp_optimizer_state opt;      /* of the copy: its buffers or NULL (zeros) */
    bp_train_state st;
    size_t metrics_cap;
    bp_real *best; /* early stopping's weights, allocated at the first snapshot with them */

    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int started; /* the thread runs */
    int pending; /* a copy waits for the thread or is being written */
    int quit;    /* the thread ends when nothing is pending */
    int status;  /* of the last write: 0 or a BP_E* code, until a wait takes it */
    char err[1024];
    long writes;
    double write_s;
};

/* A niceness for the writer: training threads come first where the cores are all busy,
 * and the writer takes the moments they wait (in the exchange, they yield). At 10 it still
 * gets about a tenth of a busy core, enough to finish W3's write well within 20 steps
 * (docs/checkpoints.md). */
#define WRITER_NICE 10

static void *writer(void *arg)
{
    bp__saver *s = arg;
    /* On Linux, nice is per thread; where it fails the writer keeps the default. */
    (void)setpriority(PRIO_PROCESS, (id_t)gettid(), WRITER_NICE);
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->pending && !s->quit)
            pthread_cond_wait(&s->cv, &s->mu);
        if (!s->pending)
            break;
        pthread_mutex_unlock(&s->mu);
        char err[sizeof(s->err)] = "";
        bp_run_snapshot snap = {&s->net, s->opt, &s->st, s->config_text};
        double began = bp__now_s();
        int rc = bp__rundir_write_checkpoint(s->cfg, &snap, err, sizeof(err));
        double took = bp__now_s() - began;
        pthread_mutex_lock(&s->mu);
        s->status = rc;
        memcpy(s->err, err, sizeof(err));
        s->writes++;
        s->write_s += took;
        s->pending = 0;
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

int bp__saver_create(bp__saver **out, const bp_config *cfg, const bp_net *net,
                     const char *config_text, char *err, size_t errlen)
{
    *out = NULL;
    bp__saver *s = bp__calloc(1, sizeof(*s));
    if (!s)
        return bp__fail(err, errlen, BP_ENOMEM, "out of memory for the checkpoint writer");
    s->cfg = cfg;
    s->config_text = config_text;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    int rc =
        bp_net_create(&s->net, net->nlayers + 1, net->sizes, net->hidden, net->output, net->cost);
    s->velocity = rc == 0 ? bp__calloc(net->nparams, sizeof(bp_real)) : NULL;
    if (s->velocity && pthread_create(&s->thread, NULL, writer, s) == 0)
        s->started = 1;
    if (!s->started) {
        bp__saver_free(s);
        return bp__fail(err, errlen, BP_ENOMEM,
                        "out of memory for the checkpoint writer's copy of %zu parameters",
                        net->nparams);
    }
    *out = s;
    return 0;
}

/* Waits with the lock held until nothing is pending. */
static void wait_idle(bp__saver *s)
{
    while (s->pending)
        pthread_cond_wait(&s->cv, &s->mu);
}

static int take_status(bp__saver *s, char *err, size_t errlen)
{
    int rc = s->status;
    if (rc < 0 && err && errlen)
        snprintf(err, errlen, "%s", s->err);
    s->status = 0;
    return rc;
}

/* The run state with its metrics table into the saver's own (the table only grows). */
static int copy_state(bp__saver *s, const bp_train_state *st)
{
    bp_metrics_row *rows = s->st.metrics;
    if (st->nmetrics > s->metrics_cap) {
        size_t cap = st->nmetrics + 16;
        bp_metrics_row *grown = bp__realloc(rows, cap, sizeof(*rows));
        if (!grown)
            return BP_ENOMEM;
        rows = grown;
        s->metrics_cap = cap;
    }
    s->st = *st;
    s->st.metrics = rows;
    if (st->nmetrics)
        memcpy(rows, st->metrics, st->nmetrics * sizeof(*rows));
    if (st->best_params && !s->best && !(s->best = bp__calloc(s->net.nparams, sizeof(bp_real))))
        return BP_ENOMEM;
    if (st->best_params)
        memcpy(s->best, st->best_params, s->net.nparams * sizeof(bp_real));
    s->st.best_params = st->best_params ? s->best : NULL;
    return 0;
}

int bp__saver_start(bp__saver *s, const bp_run_snapshot *snap, char *err, size_t errlen)
{
    pthread_mutex_lock(&s->mu);
    wait_idle(s);
    int rc = take_status(s, err, errlen);
    pthread_mutex_unlock(&s->mu);
    if (rc < 0)
        return rc;
    /* The thread is idle: the copy is ours until pending is set. */
    memcpy(s->net.params, snap->net->params, snap->net->nparams * sizeof(bp_real));
    size_t bytes = snap->net->nparams * sizeof(bp_real);
    if (snap->opt.moment2 && !s->moment2 &&
        !(s->moment2 = bp__calloc(snap->net->nparams, sizeof(bp_real))))
        return bp__fail(err, errlen, BP_ENOMEM, "out of memory for the copy of adam's moments");
    const bp_lbfgs_state *lbfgs = snap->opt.lbfgs;
    if (lbfgs && !s->lbfgs.history &&
        bp__lbfgs_alloc(&s->lbfgs, snap->net->nparams, lbfgs->history) < 0)
        return bp__fail(err, errlen, BP_ENOMEM, "out of memory for the copy of lbfgs's history");
    if (lbfgs)
        bp__lbfgs_copy(&s->lbfgs, lbfgs, snap->net->nparams);
    s->opt = (bp_optimizer_state){snap->opt.name, snap->opt.velocity ? s->velocity : NULL,
                                  snap->opt.moment2 ? s->moment2 : NULL, lbfgs ? &s->lbfgs : NULL};
    if (snap->opt.velocity)
        memcpy(s->velocity, snap->opt.velocity, bytes);
    if (snap->opt.moment2)
        memcpy(s->moment2, snap->opt.moment2, bytes);
    if (copy_state(s, snap->st) < 0)
        return bp__fail(err, errlen, BP_ENOMEM, "out of memory copying the run's state");
    pthread_mutex_lock(&s->mu);
    s->pending = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

int bp__saver_wait(bp__saver *s, char *err, size_t errlen)
{
    pthread_mutex_lock(&s->mu);
    wait_idle(s);
    int rc = take_status(s, err, errlen);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int bp__saver_failed(bp__saver *s)
{
    pthread_mutex_lock(&s->mu);
    int failed = !s->pending && s->status < 0;
    pthread_mutex_unlock(&s->mu);
    return failed;
}

void bp__saver_stats(bp__saver *s, long *writes, double *write_s)
{
    pthread_mutex_lock(&s->mu);
    *writes = s->writes;
    *write_s = s->write_s;
    pthread_mutex_unlock(&s->mu);
}

void bp__saver_free(bp__saver *s)
{
    if (!s)
        return;
    if (s->started) {
        pthread_mutex_lock(&s->mu);
        s->quit = 1;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL); /* after the write in flight */
    }
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    bp_net_free(&s->net);
    bp__free(s->velocity);
    bp__free(s->moment2);
    bp__lbfgs_free(&s->lbfgs);
    bp__free(s->best);
    bp__free(s->st.metrics);
    bp__free(s);
}
