/* optimizer = lbfgs behind the optimizer interface: the state machine of lbfgs.c, one cost
 * evaluation of the whole training set per step. begin moves the weights to the step's
 * trial; the step's whole sum goes to evaluated, which says whether the line search goes
 * on, the iteration (an epoch) ended, or the run converged. */
#include <stdio.h>
#include <string.h>

#include "lbfgs.h"

typedef struct {
    bp__lbfgs_state l;
    bp_real *g; /* scratch: the objective's gradient at the weights */
    /* The points and the objective as the checkpoint's attributes store them: filled by
     * items, read back by loaded. */
    double points[3][5], objective[2];
} lbfgs_opt;

/* /optimizer/lbfgs: the vectors as datasets, counters and points as attributes; the
 * velocity that every checkpoint has stays zeros. */
static const bp_state_item spec[] = {
    {"v", BP_STATE_PARAMS, 0, NULL},
    {"lbfgs/x0", BP_STATE_VECTORS, 0, NULL},
    {"lbfgs/g0", BP_STATE_VECTORS, 0, NULL},
    {"lbfgs/d", BP_STATE_VECTORS, 0, NULL},
    {"lbfgs/g_lo", BP_STATE_VECTORS, 0, NULL},
    {"lbfgs/s", BP_STATE_VECTORS, BP__AS_STORED, NULL},
    {"lbfgs/y", BP_STATE_VECTORS, BP__AS_STORED, NULL},
    {"lbfgs/history", BP_STATE_INTS, 0, NULL},
    {"lbfgs/pairs", BP_STATE_INTS, 0, NULL},
    {"lbfgs/newest", BP_STATE_INTS, 0, NULL},
    {"lbfgs/phase", BP_STATE_INTS, 0, NULL},
    {"lbfgs/evals", BP_STATE_INTS, 0, NULL},
    {"lbfgs/converged", BP_STATE_INTS, 0, NULL},
    {"lbfgs/x", BP_STATE_REALS, 5, NULL},
    {"lbfgs/lo", BP_STATE_REALS, 5, NULL},
    {"lbfgs/hi", BP_STATE_REALS, 5, NULL},
    {"lbfgs/alpha", BP_STATE_REALS, 0, NULL},
    {"lbfgs/objective", BP_STATE_REALS, 2, NULL},
    {"lbfgs/rho", BP_STATE_REALS, BP__AS_STORED, NULL},
};
#define NSPEC (sizeof(spec) / sizeof(spec[0]))
enum { X0 = 1, S = 5, Y, HISTORY, PAIRS, NEWEST, PHASE, EVALS, CONVERGED, RHO = 18 };

static int item_int(const bp_state_item *items, int i)
{
    return *(const int *)items[i].data;
}

/* Counters checked against what the code can reach, and the pairs' rows against history. */
static int check(const bp_state_item *it, size_t n, size_t nparams, char *why, size_t len)
{
    (void)n, (void)nparams;
    int h = item_int(it, HISTORY), pairs = item_int(it, PAIRS), newest = item_int(it, NEWEST);
    int phase = item_int(it, PHASE), evals = item_int(it, EVALS), conv = item_int(it, CONVERGED);
    if (h < 1 || h > 100 || pairs < 0 || pairs > h || newest < 0 || newest >= h ||
        phase < BP__LBFGS_FIRST || phase > BP__LBFGS_NEXT || evals < 0 || conv < 0 ||
        conv > BP_LBFGS_CONVERGED_NO_DECREASE) {
        snprintf(why, len, "/optimizer/lbfgs: counters out of range (file corrupted)");
        return -1;
    }
    if (it[S].count != (size_t)h || it[Y].count != (size_t)h || it[RHO].count != (size_t)h) {
        snprintf(why, len,
                 "/optimizer/lbfgs: %zu, %zu pairs and %zu of rho, but history %d "
                 "(file corrupted)",
                 it[S].count, it[Y].count, it[RHO].count, h);
        return -1;
    }
    return 0;
}

static double per_param(const bp_config *c)
{
    /* the vectors (x0, g0, d, g_lo, scratch) and the pairs, and rank 0's copy of them */
    double h = (double)c->lbfgs_history;
    return 3 + (5 + 2 * h) + (5 + 2 * h);
}

static int create(bp__optimizer *o)
{
    lbfgs_opt *s = bp__calloc(1, sizeof(*s));
    o->s = s;
    if (!s || bp__lbfgs_alloc(&s->l, o->net->nparams, (int)o->cfg->lbfgs_history) < 0 ||
        !(s->g = bp__calloc(o->net->nparams, sizeof(bp_real))))
        return BP_ENOMEM;
    return 0;
}

static void destroy(bp__optimizer *o)
{
    lbfgs_opt *s = o->s;
    if (!s)
        return;
    bp__lbfgs_free(&s->l);
    bp__free(s->g);
    bp__free(s);
}

/* The whole training set in each step, and a resumed state that minimised the same cost
 * (its pairs and the cost at x0 belong to it). */
static int prepare(bp__optimizer *o, int resumed, char *err, size_t errlen)
{
    const bp_config *cfg = o->cfg;
    bp__lbfgs_state *l = &((lbfgs_opt *)o->s)->l;
    size_t n = (size_t)o->n_train;
    if ((size_t)cfg->batch_size < n)
        return bp__fail(err, errlen, BP_EINVAL,
                        "[train] optimizer = lbfgs takes the whole training set in each step, but "
                        "batch_size = %ld and it has %zu examples (set batch_size = %zu)",
                        cfg->batch_size, n, n);
    if (resumed && (l->lambda != cfg->lambda || l->n_train != o->n_train))
        return bp__fail(err, errlen, BP_EMISMATCH,
                        "the checkpoint's L-BFGS state minimised the cost with lambda = %g over "
                        "%.0f examples, but the config gives lambda = %g over %zu (start a new "
                        "run to change them)",
                        l->lambda, l->n_train, cfg->lambda, n);
    l->lambda = cfg->lambda;
    l->n_train = o->n_train;
    return 0;
}

static int fits(const bp__optimizer *o, const bp_checkpoint *ck, const char *path, char *err,
                size_t errlen)
{
    const bp_state_item *h = bp_checkpoint_item(ck, "lbfgs/history");
    int mine = ((lbfgs_opt *)o->s)->l.history, theirs = h ? *(const int *)h->data : 0;
    if (theirs != mine)
        return bp__fail(err, errlen, BP_EMISMATCH,
                        "%s keeps %d L-BFGS pairs but the config has lbfgs_history = %d (start a "
                        "new run to change it)",
                        path, theirs, mine);
    return 0;
}

static void unpack_point(bp__lbfgs_point *p, const double *v)
{
    *p = (bp__lbfgs_point){v[0], v[1], v[2], v[3], v[4]};
}

static void loaded(bp__optimizer *o)
{
    lbfgs_opt *s = o->s;
    unpack_point(&s->l.x, s->points[0]);
    unpack_point(&s->l.lo, s->points[1]);
    unpack_point(&s->l.hi, s->points[2]);
    s->l.lambda = s->objective[0];
    s->l.n_train = s->objective[1];
}

static void begin(bp__optimizer *o, bp_net *net)
{
    bp__lbfgs_begin(&((lbfgs_opt *)o->s)->l, net->params, net->nparams);
}

static int evaluated(bp__optimizer *o, bp_net *net, const bp_real *sum, double cost, double correct)
{
    lbfgs_opt *s = o->s;
    bp__lbfgs_setup setup = {
        .n_train = o->n_train, .lambda = o->cfg->lambda, .tolerance = o->cfg->lbfgs_tolerance};
    return bp__lbfgs_evaluated(&s->l, net, sum, cost, correct, &setup, s->g);
}

static size_t items(bp__optimizer *o, bp_state_item *out)
{
    lbfgs_opt *s = o->s;
    bp__lbfgs_state *l = &s->l;
    const bp__lbfgs_point *pts[3] = {&l->x, &l->lo, &l->hi};
    for (int i = 0; i < 3; i++) {
        const double v[5] = {pts[i]->alpha, pts[i]->f, pts[i]->slope, pts[i]->cost,
                             pts[i]->correct};
        memcpy(s->points[i], v, sizeof(v));
    }
    s->objective[0] = l->lambda;
    s->objective[1] = l->n_train;
    void *data[NSPEC] = {NULL,         l->x0,     l->g0,         l->d,         l->g_lo,
                         l->s,         l->y,      &l->history,   &l->pairs,    &l->newest,
                         &l->phase,    &l->evals, &l->converged, s->points[0], s->points[1],
                         s->points[2], &l->alpha, s->objective,  l->rho};
    for (size_t i = 0; i < NSPEC; i++) {
        out[i] = spec[i];
        out[i].data = data[i];
    }
    out[S].count = out[Y].count = out[RHO].count = (size_t)l->history;
    return NSPEC;
}

static int nonfinite(const bp__optimizer *o, const bp_net *net, char *msg, size_t len)
{
    const bp__lbfgs_state *q = &((const lbfgs_opt *)o->s)->l;
    size_t np = net->nparams;
    const bp_real *vecs[] = {q->x0, q->g0, q->d, q->g_lo};
    for (size_t v = 0; v < sizeof(vecs) / sizeof(vecs[0]); v++)
        if (bp__nonfinite_params(net, vecs[v], "the L-BFGS vectors of ", msg, len))
            return 1;
    for (int r = 0; r < q->pairs; r++)
        if (bp__nonfinite_params(net, q->s + (size_t)r * np, "the L-BFGS pairs of ", msg, len) ||
            bp__nonfinite_params(net, q->y + (size_t)r * np, "the L-BFGS pairs of ", msg, len))
            return 1;
    return 0;
}

/* An iteration's metrics are those of the point it ends at. */
static void point(const bp__optimizer *o, double *cost, double *correct)
{
    const bp__lbfgs_state *l = &((const lbfgs_opt *)o->s)->l;
    *cost = l->x.cost;
    *correct = l->x.correct;
}

static int converged(const bp__optimizer *o)
{
    return ((const lbfgs_opt *)o->s)->l.converged;
}

static void describe(const bp_checkpoint *ck, char *buf, size_t len)
{
    const bp_state_item *it[6];
    static const char *const names[6] = {"lbfgs/history", "lbfgs/pairs",     "lbfgs/phase",
                                         "lbfgs/evals",   "lbfgs/converged", "lbfgs/x"};
    for (int i = 0; i < 6; i++)
        if (!(it[i] = bp_checkpoint_item(ck, names[i])))
            return;
    int h = *(int *)it[0]->data, pairs = *(int *)it[1]->data, phase = *(int *)it[2]->data;
    int evals = *(int *)it[3]->data, conv = *(int *)it[4]->data;
    if (phase == BP__LBFGS_BRACKET || phase == BP__LBFGS_ZOOM)
        snprintf(buf, len, " (%d of %d pairs held; in a line search, %s, after %d evaluations)",
                 pairs, h, phase == BP__LBFGS_ZOOM ? "zooming" : "bracketing", evals);
    else
        snprintf(buf, len, " (%d of %d pairs held; %s; objective %.6g)", pairs, h,
                 conv ? "converged" : "between iterations", ((double *)it[5]->data)[1]);
}

const bp__opt_backend bp__opt_lbfgs = {.name = "lbfgs",
                                       .whole_set = 1,
                                       .state_what = "lbfgs's history",
                                       .per_param = per_param,
                                       .spec = spec,
                                       .nspec = NSPEC,
                                       .check = check,
                                       .create = create,
                                       .destroy = destroy,
                                       .prepare = prepare,
                                       .fits = fits,
                                       .loaded = loaded,
                                       .begin = begin,
                                       .evaluated = evaluated,
                                       .items = items,
                                       .nonfinite = nonfinite,
                                       .point = point,
                                       .converged = converged,
                                       .describe = describe};
