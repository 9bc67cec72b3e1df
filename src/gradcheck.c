/* Gradient checking by centred differences (Ng's course, CS231n): the test that backprop
 * computes the derivative of the cost it claims to. */
#include <math.h>
#include <string.h>

#include "agree.h"
#include "backprop/data.h"
#include "backprop/gradcheck.h"
#include "blas.h"
#include "comm.h"
#include "internal.h"

double bp_relative_error(double a, double b)
{
    double diff = fabs(a - b), scale = fmax(fabs(a), fabs(b));
    return scale < 1e-10 ? diff : diff / scale;
}

double bp_objective(const bp_net *net, bp_workspace *ws, const bp_real *X, const bp_real *Y,
                    size_t m, double lambda, double n)
{
    bp_forward(net, ws, X, m);
    return bp_cost_sum(net, ws, Y, m) / (double)m + bp_l2_term(net, lambda, n);
}

/* grad = sum of per-example gradients / m + lambda/n W. */
static void analytic_gradient(bp_net *net, bp_workspace *ws, const bp_real *X, const bp_real *Y,
                              size_t m, double lambda, double n, bp_real *grad)
{
    bp_forward(net, ws, X, m);
    bp_backward(net, ws, Y, m, grad, 0);
    for (size_t i = 0; i < net->nparams; i++)
        grad[i] /= (bp_real)m;
    for (int l = 0; l < net->nlayers; l++) {
        size_t o = bp_net_offset_W(net, l);
        size_t count = (size_t)net->sizes[l] * (size_t)net->sizes[l + 1];
        for (size_t i = 0; i < count; i++)
            grad[o + i] += (bp_real)(lambda / n) * net->params[o + i];
    }
}

/* ---- the numeric side, in double whatever the build ----
 * The objective that centred differences take is evaluated here by plain loops in double,
 * one example at a time: the reference next to the fast path. In float, J carries ~1e-7
 * relative rounding, which (J+ - J-) / 2 eps turns into errors larger than gradients of
 * ~1e-4 (configs/xor.ini's first layer: 1.8e-4, a 6 % "error"); in double the difference
 * resolves them, and the parameters can step by exactly eps. The analytic side stays the
 * library's own backward pass in the build's precision: that is what is being checked. */

static double activate(bp_activation f, double z)
{
    switch (f) {
    case BP_SIGMOID:
        return 1 / (1 + exp(-z));
    case BP_RELU:
        return z > 0 ? z : 0;
    case BP_TANH:
        return tanh(z);
    default: /* linear; softmax is applied to the whole output row */
        return z;
    }
}

/* One example's data cost from the output pre-activations z (k of them), as bp_cost_sum
 * defines it. a is scratch for the activations. */
static double example_cost(const bp_net *net, const double *z, double *a, const bp_real *y,
                           size_t k)
{
    double max = z[0], sum = 0, cost = 0;
    for (size_t j = 1; j < k; j++)
        max = z[j] > max ? z[j] : max;
    for (size_t j = 0; j < k; j++)
        sum += exp(z[j] - max);
    double lse = max + log(sum);
    for (size_t j = 0; j < k; j++)
        a[j] = net->output == BP_SOFTMAX ? exp(z[j] - lse) : activate(net->output, z[j]);
    for (size_t j = 0; j < k; j++) {
        double t = (double)y[j];
        if (net->cost == BP_QUADRATIC)
            cost += 0.5 * (a[j] - t) * (a[j] - t);
        else if (net->output == BP_SOFTMAX)
            cost -= t * (z[j] - lse);
        else /* per-unit binary cross-entropy */
            cost += t * bp__softplus(-z[j]) + (1 - t) * bp__softplus(z[j]);
    }
    return cost;
}

/* The reference: every example's activations and pre-activations at the unperturbed
 * parameters, in double. A step of one parameter of weight layer l changes one
 * pre-activation of the layer above per example, so only the layers from there up are
 * computed again. */
typedef struct {
    const bp_net *net;
    size_t m, width; /* examples; doubles one example's block takes */
    const bp_real *Y;
    double *p;       /* the parameters in double, laid out as net->params */
    double *act;     /* per example: a_0 (the input), a_1, ..., a_L, sizes[l] each */
    double *pre;     /* per example, laid out as act: z_1 .. z_L (the a_0 slot unused) */
    size_t *at;      /* where sizes[l]'s slot starts in an example's block */
    double *za, *zb; /* scratch, the widest layer each */
    double squares;  /* sum of every W^2 */
    double lambda, n;
} reference;

/* out = W in + b for weight layer l (W is sizes[l+1] x sizes[l]). */
static void affine(const reference *r, int l, const double *in, double *out)
{
    size_t nin = (size_t)r->net->sizes[l], nout = (size_t)r->net->sizes[l + 1];
    const double *W = r->p + bp_net_offset_W(r->net, l), *b = r->p + bp_net_offset_b(r->net, l);
    for (size_t j = 0; j < nout; j++) {
        double sum = b[j];
        for (size_t i = 0; i < nin; i++)
            sum += W[j * nin + i] * in[i];
        out[j] = sum;
    }
}

/* With r->zb holding the pre-activations of sizes[l] (l >= 1): the example's data cost,
 * through every layer above. *pattern hashes which hidden relu units are on. */
static double cost_from(const reference *r, int l, const bp_real *y, uint64_t *pattern)
{
    const bp_net *net = r->net;
    for (; l < net->nlayers; l++) {
        for (int i = 0; i < net->sizes[l]; i++) {
            r->za[i] = activate(net->hidden, r->zb[i]);
            unsigned char on = r->zb[i] > 0;
            if (net->hidden == BP_RELU)
                *pattern = bp__hash(&on, 1, *pattern);
        }
        affine(r, l, r->za, r->zb);
    }
    return example_cost(net, r->zb, r->za, y, (size_t)net->sizes[net->nlayers]);
}

/* Allocates and fills the reference at net's parameters. 0 or BP_ENOMEM. */
static int reference_init(reference *r, const bp_net *net, const bp_real *X, const bp_real *Y,
                          size_t m, double lambda, double n)
{
    int L = net->nlayers, widest = 0;
    *r = (reference){.net = net, .m = m, .Y = Y, .lambda = lambda, .n = n};
    r->at = bp__calloc((size_t)L + 1, sizeof(size_t));
    if (!r->at)
        return BP_ENOMEM;
    for (int l = 0; l <= L; l++) {
        r->at[l] = r->width;
        r->width += (size_t)net->sizes[l];
        widest = net->sizes[l] > widest ? net->sizes[l] : widest;
    }
    r->p = bp__calloc(net->nparams, sizeof(double));
    r->act = bp__calloc(bp__mul(m, r->width), sizeof(double));
    r->pre = bp__calloc(bp__mul(m, r->width), sizeof(double));
    r->za = bp__calloc(2 * (size_t)widest, sizeof(double));
    if (!r->p || !r->act || !r->pre || !r->za)
        return BP_ENOMEM;
    r->zb = r->za + widest;
    for (size_t i = 0; i < net->nparams; i++)
        r->p[i] = (double)net->params[i];
    for (int l = 0; l < L; l++) {
        size_t o = bp_net_offset_W(net, l), count = (size_t)net->sizes[l] * net->sizes[l + 1];
        for (size_t i = 0; i < count; i++)
            r->squares += r->p[o + i] * r->p[o + i];
    }
    for (size_t e = 0; e < m; e++) {
        double *act = r->act + e * r->width, *pre = r->pre + e * r->width;
        for (int i = 0; i < net->sizes[0]; i++)
            act[i] = (double)X[e * (size_t)net->sizes[0] + (size_t)i];
        for (int l = 0; l < L; l++) {
            affine(r, l, act + r->at[l], pre + r->at[l + 1]);
            for (int i = 0; l + 1 < L && i < net->sizes[l + 1]; i++)
                act[r->at[l + 1] + (size_t)i] =
                    activate(net->hidden, pre[r->at[l + 1] + (size_t)i]);
        }
    }
    return 0;
}

static void reference_free(reference *r)
{
    bp__free(r->at);
    bp__free(r->p);
    bp__free(r->act);
    bp__free(r->pre);
    bp__free(r->za);
}

/* J at the parameters with entry `index` of weight layer l (row j; column i, or SIZE_MAX
 * for the bias b[j]) moved by delta. */
static double objective_moved(reference *r, int l, size_t j, size_t i, size_t index, double delta,
                              uint64_t *pattern)
{
    const bp_net *net = r->net;
    size_t k = (size_t)net->sizes[net->nlayers], out = (size_t)net->sizes[l + 1];
    double saved = r->p[index], total = 0;
    r->p[index] = saved + delta;
    *pattern = 1469598103934665603ULL;
    for (size_t e = 0; e < r->m; e++) {
        const double *act = r->act + e * r->width, *pre = r->pre + e * r->width;
        memcpy(r->zb, pre + r->at[l + 1], out * sizeof(double));
        r->zb[j] += i == SIZE_MAX ? delta : delta * act[r->at[l] + i];
        total += cost_from(r, l + 1, r->Y + e * k, pattern);
    }
    r->p[index] = saved;
    double squares = r->squares;
    if (i != SIZE_MAX)
        squares += (saved + delta) * (saved + delta) - saved * saved;
    return total / (double)r->m + r->lambda / (2 * r->n) * squares;
}

/* Checks up to max_checks evenly spaced entries of weight layer l's W (bias 0) or b
 * (bias 1). */
static void check_range(reference *r, int l, int bias, double eps, size_t max_checks,
                        const bp_real *grad, bp_gradcheck_layer *res, double norms[3])
{
    const bp_net *net = r->net;
    size_t in = (size_t)net->sizes[l], out = (size_t)net->sizes[l + 1];
    size_t count = bias ? out : in * out;
    size_t first = bias ? bp_net_offset_b(net, l) : bp_net_offset_W(net, l);
    size_t checks = count < max_checks ? count : max_checks;
    for (size_t c = 0; c < checks; c++) {
        size_t e = checks == count ? c : c * count / checks, idx = first + e;
        size_t j = bias ? e : e / in, i = bias ? SIZE_MAX : e % in;
        uint64_t on_plus, on_minus;
        double j_plus = objective_moved(r, l, j, i, idx, eps, &on_plus);
        double j_minus = objective_moved(r, l, j, i, idx, -eps, &on_minus);
        if (on_plus != on_minus) { /* +-eps moved a relu across its kink */
            res->kinks++;
            continue;
        }
        double numeric = (j_plus - j_minus) / (2 * eps), g = (double)grad[idx];
        res->max_rel_error = fmax(res->max_rel_error, bp_relative_error(g, numeric));
        res->max_abs_grad = fmax(res->max_abs_grad, fabs(g));
        norms[0] += (g - numeric) * (g - numeric);
        norms[1] += g * g;
        norms[2] += numeric * numeric;
        res->checked++;
    }
}

int bp_gradcheck(bp_net *net, const bp_real *X, const bp_real *Y, size_t m, double lambda, double n,
                 double epsilon, size_t max_per_layer, const bp_real *analytic,
                 bp_gradcheck_layer *result)
{
    bp_workspace ws = {0};
    bp_real *grad = NULL;
    reference r;
    int rc = reference_init(&r, net, X, Y, m, lambda, n);
    if (rc == 0 && !analytic) {
        grad = bp__calloc(net->nparams, sizeof(bp_real));
        rc = grad ? bp_workspace_create(&ws, net, m) : BP_ENOMEM;
        if (rc == 0) {
            analytic_gradient(net, &ws, X, Y, m, lambda, n, grad);
            analytic = grad;
        }
    }
    for (int l = 0; rc == 0 && l < net->nlayers; l++) {
        bp_gradcheck_layer *res = &result[l];
        memset(res, 0, sizeof(*res));
        size_t nw = (size_t)net->sizes[l] * (size_t)net->sizes[l + 1];
        size_t nb = (size_t)net->sizes[l + 1];
        /* Share the budget between W and b in proportion, at least one bias. */
        size_t max_w = max_per_layer * nw / (nw + nb);
        size_t max_b = max_per_layer > max_w ? max_per_layer - max_w : 1;
        double norms[3] = {0, 0, 0}; /* ||g - n||^2, ||g||^2, ||n||^2 */
        check_range(&r, l, 0, epsilon, max_w ? max_w : 1, analytic, res, norms);
        check_range(&r, l, 1, epsilon, max_b, analytic, res, norms);
        double scale = sqrt(fmax(norms[1], norms[2]));
        res->rel_error = scale > 0 ? sqrt(norms[0]) / scale : 0;
    }
    reference_free(&r);
    bp__free(grad);
    bp_workspace_free(&ws);
    return rc;
}

/* ---- a config's gradient, checked across ranks (backprop/gradcheck.h) ---- */

void bp_gradcheck_report_free(bp_gradcheck_report *report)
{
    bp__free(report->layers);
    memset(report, 0, sizeof(*report));
}

/* The analytic gradient of J, as training computes it: each rank backpropagates its shard
 * of the m examples, one sum over the ranks, then / m and the L2 term. */
static int distributed_gradient(const bp_comm *comm, bp_net *net, const bp_dataset *ds, size_t m,
                                double lambda, double n, bp_real *grad)
{
    bp_workspace ws;
    size_t lo, hi;
    bp__shard(m, comm->rank, comm->size, &lo, &hi);
    if (bp_workspace_create(&ws, net, hi - lo) < 0)
        return BP_ENOMEM;
    memset(grad, 0, net->nparams * sizeof(bp_real));
    if (hi > lo) {
        bp_forward(net, &ws, ds->X + lo * ds->d, hi - lo);
        bp_backward(net, &ws, ds->Y + lo * ds->k, hi - lo, grad, 0);
    }
    bp_workspace_free(&ws);
    if (bp_comm_sum(comm, grad, net->nparams) < 0)
        return BP_ECOMM;
    for (size_t i = 0; i < net->nparams; i++)
        grad[i] /= (bp_real)m;
    for (int l = 0; l < net->nlayers; l++) {
        size_t o = bp_net_offset_W(net, l), count = (size_t)net->sizes[l] * net->sizes[l + 1];
        for (size_t i = 0; i < count; i++)
            grad[o + i] += (bp_real)(lambda / n) * net->params[o + i];
    }
    return 0;
}

/* What the caller asked for, before any work: a step of zero (or NaN) divides by zero and
 * no examples averages over none, and either would report NaN errors that no tolerance
 * refuses. */
static int check_opts(const bp_gradcheck_run_opts *o, char *err, size_t errlen)
{
    if (!o)
        return bp__fail(err, errlen, BP_EINVAL, "a gradient check needs its options (none given)");
    if (!(o->epsilon > 0) || !isfinite(o->epsilon))
        return bp__fail(err, errlen, BP_EINVAL,
                        "a gradient check's step epsilon must be a finite number > 0, not %g",
                        o->epsilon);
    if (o->examples < 1)
        return bp__fail(err, errlen, BP_EINVAL,
                        "a gradient check needs at least one example, not %ld", o->examples);
    return 0;
}

/* The network and the training set, as train builds and loads them; then the ranks agree
 * that they run one config, one set of options and one data set (by contents). */
static int gradcheck_setup(const bp_comm *comm, const bp_config *cfg,
                           const bp_gradcheck_run_opts *o, bp_net *net, bp_dataset *ds, char *err,
                           size_t errlen)
{
    int threads = cfg->threads ? cfg->threads : bp__auto_threads(comm); /* as train takes it */
    int rc = check_opts(o, err, errlen);
    if (rc == 0)
        rc = bp__blas_setup(&threads, err, errlen);
    if (rc == 0 && (rc = bp_net_create(net, cfg->nsizes, cfg->sizes, cfg->hidden, cfg->output,
                                       cfg->cost)) == 0)
        rc = bp_dataset_load(ds, cfg->train, cfg->train_labels[0] ? cfg->train_labels : NULL,
                             cfg->sizes[cfg->nsizes - 1], cfg->seed, err, errlen);
    if (rc == 0)
        rc = bp_dataset_check(ds, cfg->sizes[0], cfg->sizes[cfg->nsizes - 1], cfg->train, err,
                              errlen);
    rc = bp__agree(comm, rc, err, errlen);
    if (rc == 0)
        rc = bp__config_agree(comm, cfg, err, errlen);
    if (rc == 0 && o->options)
        rc = bp__lines_agree(comm, o->options, o->options_what, o->options_hint, err, errlen);
    if (rc == 0)
        rc = bp__data_agree(comm, ds, NULL, NULL, "[data] train", cfg->train, err, errlen);
    return rc;
}

int bp_gradcheck_run(const bp_comm *comm, const bp_config *cfg, const bp_gradcheck_run_opts *opts,
                     bp_gradcheck_report *report, char *err, size_t errlen)
{
    bp_net net = {0};
    bp_dataset ds = {0};
    bp_real *grad = NULL;
    memset(report, 0, sizeof(*report));
    int rc = gradcheck_setup(comm, cfg, opts, &net, &ds, err, errlen);
    if (rc == 0) {
        report->during_work = 1;
        bp_rng rng;
        bp_rng_seed(&rng, cfg->seed);
        bp_net_init(&net, cfg->init, cfg->init_epsilon, &rng);
        size_t m = (size_t)opts->examples < ds.n ? (size_t)opts->examples : ds.n;
        /* n in lambda/n is the training set's size, as in training. */
        size_t n_train = cfg->limit && (size_t)cfg->limit < ds.n ? (size_t)cfg->limit : ds.n;
        if ((size_t)cfg->validation_split < n_train)
            n_train -= (size_t)cfg->validation_split;
        double n = (double)n_train;
        grad = bp__calloc(net.nparams, sizeof(bp_real));
        report->layers = bp__calloc((size_t)net.nlayers, sizeof(*report->layers));
        rc = grad && report->layers ? distributed_gradient(comm, &net, &ds, m, cfg->lambda, n, grad)
                                    : BP_ENOMEM;
        if (rc == 0)
            rc = bp_gradcheck(&net, ds.X, ds.Y, m, cfg->lambda, n, opts->epsilon, 5000, grad,
                              report->layers);
        if (rc < 0)
            bp__fail(err, errlen, rc, "%s", bp_strerror(rc));
        rc = bp__agree(comm, rc, err, errlen);
        report->nlayers = net.nlayers;
        memcpy(report->sizes, net.sizes, (size_t)(net.nlayers + 1) * sizeof(int));
    }
    if (rc < 0) {
        int during_work = report->during_work;
        bp_gradcheck_report_free(report);
        report->during_work = during_work;
    }
    bp__free(grad);
    bp_dataset_free(&ds);
    bp_net_free(&net);
    return rc;
}
