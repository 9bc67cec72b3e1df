/* optimizer = nesterov: Nesterov's momentum in the form of Sutskever et al. (2013) and
 * PyTorch's SGD(nesterov=True), with the seeds' coupled L2 as sgd has it. Per element, with
 * u = (eta/m) g + (eta lambda/n) W the plain step (biases take no L2):
 *   v = mu v - u
 *   p = p + mu v - u       (the new v: the step looks ahead along the velocity)
 * which is PyTorch's update with lr eta, weight_decay lambda/n on the mean gradient and its
 * buffer b = -v/eta (docs/optimizers.md). The velocity is always kept and written. */
#include "optimizer.h"

/* 1 when some updated parameter is not finite (a non-finite gradient or velocity always
 * leaves one: the learning rate is > 0). */
BP__VECTORIZE static int nesterov_range(bp_real *restrict p, const bp_real *restrict g,
                                        bp_real *restrict v, size_t n, bp_real s, bp_real w,
                                        bp_real mu)
{
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        bp_real u = s * g[i] + w * p[i];
        bp_real vi = mu * v[i] - u;
        v[i] = vi;
        bp_real x = p[i] + (mu * vi - u);
        p[i] = x;
        bad |= bp__not_finite(x);
    }
    return bad;
}

typedef struct {
    bp_real *p, *v;
    const bp_real *g;
    bp_real eta_m, l2, mu;
} nesterov_ctx;

static int segment(const void *ctx, size_t o, size_t n, int weights)
{
    const nesterov_ctx *c = ctx;
    return nesterov_range(c->p + o, c->g + o, c->v + o, n, c->eta_m, weights ? c->l2 : 0, c->mu);
}

static const bp_state_item spec[] = {{"v", BP_STATE_PARAMS, 0, NULL}};

static double per_param(const bp_config *c)
{
    (void)c;
    return 3; /* weights, gradient, velocity */
}

static int create(bp__optimizer *o)
{
    o->s = bp__calloc(o->net->nparams, sizeof(bp_real));
    return o->s ? 0 : BP_ENOMEM;
}

static void destroy(bp__optimizer *o)
{
    bp__free(o->s);
}

static int apply(bp__optimizer *o, bp_net *net, const bp_real *sum, double m, size_t from,
                 size_t to)
{
    double eta = o->learning_rate;
    nesterov_ctx c = {net->params,
                      o->s,
                      sum,
                      (bp_real)(eta / m),
                      (bp_real)(eta * o->cfg->lambda / o->n_train),
                      (bp_real)o->cfg->momentum};
    return bp__opt_for_range(net, from, to, segment, &c);
}

static size_t items(bp__optimizer *o, bp_state_item *out)
{
    out[0] = spec[0];
    out[0].data = o->s;
    return 1;
}

static int nonfinite(const bp__optimizer *o, const bp_net *net, char *msg, size_t len)
{
    return bp__nonfinite_params(net, o->s, "the velocities of ", msg, len);
}

const bp__opt_backend bp__opt_nesterov = {.name = "nesterov",
                                          .state_what = "momentum",
                                          .per_param = per_param,
                                          .spec = spec,
                                          .nspec = sizeof(spec) / sizeof(spec[0]),
                                          .create = create,
                                          .destroy = destroy,
                                          .apply = apply,
                                          .items = items,
                                          .nonfinite = nonfinite};
