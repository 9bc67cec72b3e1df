#define _GNU_SOURCE /* gettid */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "optimizer.h"
#include "saver.h"

struct bp__saver {
    const bp_config *cfg;
    const char *config_text;
    /* The copy being written: the thread's alone from start until the write ends. */
    bp_net net;
    /* The optimizer's items, each with a copy of its data (NULL: zeros) in buf[i], of
     * cap[i] bytes, which only grows. */
    bp_state_item items[BP__OPT_MAX_ITEMS];
    void *buf[BP__OPT_MAX_ITEMS];
    size_t cap[BP__OPT_MAX_ITEMS];
    bp_optimizer_state opt; /* of the copy */
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
    bp__rec *_Atomic rec; /* the flight recorder, or NULL */
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
        bp__rec *rec = atomic_load(&s->rec);
        int64_t id = bp__rec_begin(rec, BP__REC_CKPT_WRITE, 0, NULL);
        int rc = bp__rundir_write_checkpoint(s->cfg, &snap, err, sizeof(err));
        bp__rec_end(rec, id);
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

void bp__saver_set_recorder(bp__saver *s, bp__rec *rec)
{
    if (s)
        atomic_store(&s->rec, rec);
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
    if (rc == 0 && pthread_create(&s->thread, NULL, writer, s) == 0)
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

/* The optimizer's items into the saver's own buffers (allocated at the first snapshot that
 * has them: adam's moments, lbfgs's history); zeros stay NULL and cost no copy. */
static int copy_optimizer(bp__saver *s, const bp_optimizer_state *opt)
{
    if (opt->nitems > BP__OPT_MAX_ITEMS)
        return BP_ENOMEM;
    for (size_t i = 0; i < opt->nitems; i++) {
        const bp_state_item *from = &opt->items[i];
        size_t bytes = bp__state_item_bytes(from, s->net.nparams);
        if (from->data && bytes > s->cap[i]) {
            bp__free(s->buf[i]);
            s->cap[i] = 0;
            if (!(s->buf[i] = bp__calloc(1, bytes)))
                return BP_ENOMEM;
            s->cap[i] = bytes;
        }
        if (from->data)
            memcpy(s->buf[i], from->data, bytes);
        s->items[i] = *from;
        s->items[i].data = from->data ? s->buf[i] : NULL;
    }
    s->opt = (bp_optimizer_state){opt->name, opt->nitems, s->items};
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
    if (copy_optimizer(s, &snap->opt) < 0)
        return bp__fail(err, errlen, BP_ENOMEM, "out of memory for the copy of %s's state",
                        snap->opt.name);
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
    for (size_t i = 0; i < BP__OPT_MAX_ITEMS; i++)
        bp__free(s->buf[i]);
    bp__free(s->best);
    bp__free(s->st.metrics);
    bp__free(s);
}
