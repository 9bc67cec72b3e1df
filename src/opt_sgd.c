/* optimizer = sgd: stochastic gradient descent with classical momentum and the seeds' L2,
 *   v = mu v - (eta/m) g - (eta lambda/n) W,   p = p + v
 * (biases take no L2); with momentum 0, p = (1 - eta lambda/n) p - (eta/m) g and the
 * velocity is never touched. */
#include <string.h>

#include "optimizer.h"

/* Each value the update stores is tested with bp__not_finite, on a value already in a
 * register. A non-finite gradient or velocity always leaves a non-finite parameter behind
 * it (the learning rate is > 0), so the parameter's test covers them (not so Adam's:
 * opt_adam.c). */

/* 1 when some updated parameter is not finite. */
BP__VECTORIZE static int step_range(bp_real *restrict p, const bp_real *restrict g,
                                    bp_real *restrict v, size_t n, double eta_m, double decay,
                                    double mu, double l2)
{
    int bad = 0;
    if (!v) {
        bp_real d = (bp_real)decay, s = (bp_real)eta_m;
        for (size_t i = 0; i < n; i++) {
            bp_real x = d * p[i] - s * g[i];
            p[i] = x;
            bad |= bp__not_finite(x);
        }
        return bad;
    }
    bp_real m = (bp_real)mu, s = (bp_real)eta_m, w = (bp_real)l2;
    for (size_t i = 0; i < n; i++) {
        v[i] = m * v[i] - s * g[i] - w * p[i];
        bp_real x = p[i] + v[i];
        p[i] = x;
        bad |= bp__not_finite(x);
    }
    return bad;
}

typedef struct {
    bp_real *p, *v;
    const bp_real *g;
    double eta_m, l2, mu;
} sgd_ctx;

static int sgd_segment(const void *ctx, size_t o, size_t n, int weights)
{
    const sgd_ctx *c = ctx;
    return step_range(c->p + o, c->g + o, c->v ? c->v + o : NULL, n, c->eta_m,
                      weights ? 1.0 - c->l2 : 1.0, c->mu, weights ? c->l2 : 0.0);
}

int bp__sgd_step_range(const bp_sgd *opt, bp_net *net, const bp_real *grad, bp_real *velocity,
                       double m, size_t from, size_t to)
{
    sgd_ctx c = {net->params,
                 opt->momentum != 0 ? velocity : NULL,
                 grad,
                 opt->learning_rate / m,
                 opt->learning_rate * opt->lambda / opt->n_train, /* eta * lambda / n */
                 opt->momentum};
    return bp__opt_for_range(net, from, to, sgd_segment, &c);
}

typedef struct {
    bp_real *v;
    /* momentum 0 and no velocity resumed: it stays zeros, and checkpoints neither hash nor
     * copy nor write it */
    int zero;
} sgd_state;

static const bp_state_item spec[] = {{"v", BP_STATE_PARAMS, 0, NULL}};

static double per_param(const bp_config *c)
{
    (void)c;
    return 3; /* weights, gradient, velocity */
}

static int create(bp__optimizer *o)
{
    sgd_state *s = bp__calloc(1, sizeof(*s));
    o->s = s;
    if (!s || !(s->v = bp__calloc(o->net->nparams, sizeof(bp_real))))
        return BP_ENOMEM;
    return 0;
}

static void destroy(bp__optimizer *o)
{
    sgd_state *s = o->s;
    if (s)
        bp__free(s->v);
    bp__free(s);
}

static int prepare(bp__optimizer *o, int resumed, char *err, size_t errlen)
{
    (void)resumed, (void)err, (void)errlen;
    sgd_state *s = o->s;
    int zero = o->cfg->momentum == 0;
    for (size_t i = 0; zero && i < o->net->nparams; i++)
        zero = s->v[i] == 0;
    s->zero = zero;
    return 0;
}

static int apply(bp__optimizer *o, bp_net *net, const bp_real *sum, double m, size_t from,
                 size_t to)
{
    bp_sgd opt = {.learning_rate = o->learning_rate,
                  .lambda = o->cfg->lambda,
                  .momentum = o->cfg->momentum,
                  .n_train = o->n_train};
    return bp__sgd_step_range(&opt, net, sum, ((sgd_state *)o->s)->v, m, from, to);
}

static size_t items(bp__optimizer *o, bp_state_item *out)
{
    sgd_state *s = o->s;
    out[0] = spec[0];
    out[0].data = s->zero ? NULL : s->v;
    return 1;
}

static int nonfinite(const bp__optimizer *o, const bp_net *net, char *msg, size_t len)
{
    return bp__nonfinite_params(net, ((sgd_state *)o->s)->v, "the velocities of ", msg, len);
}

const bp__opt_backend bp__opt_sgd = {.name = "sgd",
                                     .state_what = "momentum",
                                     .per_param = per_param,
                                     .spec = spec,
                                     .nspec = sizeof(spec) / sizeof(spec[0]),
                                     .create = create,
                                     .destroy = destroy,
                                     .prepare = prepare,
                                     .apply = apply,
                                     .items = items,
                                     .nonfinite = nonfinite};
