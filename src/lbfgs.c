/* L-BFGS (Nocedal and Wright, Numerical Optimization, 2nd ed.: algorithm 7.4 for the
 * direction, algorithms 3.5 and 3.6 for the strong-Wolfe line search), driven one cost
 * evaluation at a time: the trainer evaluates the cost and gradient at the weights this
 * file leaves, sums them over the ranks, and hands them back. Every rank runs the same
 * arithmetic on the same sums, so the replicas stay bit-identical, and the whole state
 * lives in bp__lbfgs_state, which checkpoints store: a run stopped in the middle of a line
 * search resumes where it was. Between steps the weights are the iteration's start x0,
 * the best point known (what a checkpoint's /model holds); bp__lbfgs_begin moves them to
 * the trial x0 + alpha d for the step's evaluation.
 *
 * The objective is the seeds' regularised cost over the whole training set,
 *   f(x) = (1/n) sum_i C_i + lambda/(2n) sum W^2,   grad f = (1/n) sum_i dC_i + (lambda/n) W,
 * biases unregularised. Written by hand: Debian has no C L-BFGS library that takes its
 * evaluations from outside a callback (liblbfgs calls back into the caller for each one,
 * which cannot be stopped, checkpointed and resumed mid-search as a step of this trainer
 * can). */
#include <float.h>
#include <math.h>
#include <string.h>

#include "lbfgs.h"

/* Sufficient decrease and curvature constants of the strong Wolfe conditions: the usual
 * values for quasi-Newton methods (Nocedal and Wright, p. 142). */
#define C1 1e-4
#define C2 0.9
/* Evaluations one line search may take before it settles for the best point it found
 * (scipy's L-BFGS-B also allows 20). */
#define MAX_EVALS 20
/* A bracket narrower than this in parameter space, |hi - lo| * max |d|, cannot improve. */
#define MIN_WIDTH 1e-9

int bp__lbfgs_alloc(bp__lbfgs_state *st, size_t n, int history)
{
    memset(st, 0, sizeof(*st));
    st->history = history;
    st->phase = BP__LBFGS_FIRST;
    st->x0 = bp__calloc(n, sizeof(bp_real));
    st->g0 = bp__calloc(n, sizeof(bp_real));
    st->d = bp__calloc(n, sizeof(bp_real));
    st->g_lo = bp__calloc(n, sizeof(bp_real));
    st->s = bp__calloc(bp__mul(n, (size_t)history), sizeof(bp_real));
    st->y = bp__calloc(bp__mul(n, (size_t)history), sizeof(bp_real));
    st->rho = bp__calloc((size_t)history, sizeof(double));
    if (st->x0 && st->g0 && st->d && st->g_lo && st->s && st->y && st->rho)
        return 0;
    bp__lbfgs_free(st);
    return BP_ENOMEM;
}

void bp__lbfgs_free(bp__lbfgs_state *st)
{
    bp_real *bufs[] = {st->x0, st->g0, st->d, st->g_lo, st->s, st->y};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
        bp__free(bufs[i]);
    bp__free(st->rho);
    memset(st, 0, sizeof(*st));
}

void bp__lbfgs_copy(bp__lbfgs_state *dst, const bp__lbfgs_state *src, size_t n)
{
    size_t b = n * sizeof(bp_real), h = (size_t)src->history;
    bp_real *keep[] = {dst->x0, dst->g0, dst->d, dst->g_lo, dst->s, dst->y};
    double *rho = dst->rho;
    *dst = *src;
    dst->x0 = keep[0], dst->g0 = keep[1], dst->d = keep[2], dst->g_lo = keep[3];
    dst->s = keep[4], dst->y = keep[5], dst->rho = rho;
    memcpy(dst->x0, src->x0, b);
    memcpy(dst->g0, src->g0, b);
    memcpy(dst->d, src->d, b);
    memcpy(dst->g_lo, src->g_lo, b);
    memcpy(dst->s, src->s, b * h);
    memcpy(dst->y, src->y, b * h);
    memcpy(dst->rho, src->rho, h * sizeof(double));
}

/* Accumulated in double, in one order on every rank. */
static double dot(const bp_real *a, const bp_real *b, size_t n)
{
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)a[i] * (double)b[i];
    return sum;
}

/* NaN when a value is not a number. */
static double max_abs(const bp_real *a, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double v = fabs((double)a[i]);
        if (isnan(v))
            return v;
        m = v > m ? v : m;
    }
    return m;
}

/* params = x0 + alpha d */
static void move_to(const bp__lbfgs_state *st, bp_real *params, size_t n, double alpha)
{
    bp_real a = (bp_real)alpha;
    for (size_t i = 0; i < n; i++)
        params[i] = st->x0[i] + a * st->d[i];
}

/* The objective at params from the summed data cost and gradient: f returned, its
 * gradient into g. */
static double objective(const bp_net *net, const bp_real *params, const bp_real *grad_sum,
                        double cost_sum, const bp__lbfgs_setup *setup, bp_real *g)
{
    double m = setup->n_train, l2 = setup->lambda / m, w2 = 0;
    bp_real inv_m = (bp_real)(1 / m), l2r = (bp_real)l2;
    for (size_t i = 0; i < net->nparams; i++)
        g[i] = grad_sum[i] * inv_m;
    for (int l = 0; l < net->nlayers && l2 > 0; l++) {
        size_t o = bp_net_offset_W(net, l), k = (size_t)net->sizes[l] * (size_t)net->sizes[l + 1];
        for (size_t i = o; i < o + k; i++) {
            g[i] += l2r * params[i];
            w2 += (double)params[i] * (double)params[i];
        }
    }
    return cost_sum / m + l2 / 2 * w2;
}

/* The minimiser of the cubic through a and b with their values and slopes, clamped to
 * [lo, hi]; their middle when the cubic has none (or a value is not finite). */
static double cubic_min(const bp__lbfgs_point *a, const bp__lbfgs_point *b, double lo, double hi)
{
    double d1 = a->slope + b->slope - 3 * (a->f - b->f) / (a->alpha - b->alpha);
    double disc = d1 * d1 - a->slope * b->slope;
    if (!(disc >= 0) || !isfinite(disc))
        return (lo + hi) / 2;
    double d2 = sqrt(disc) * (b->alpha > a->alpha ? 1 : -1);
    double t =
        b->alpha - (b->alpha - a->alpha) * (b->slope + d2 - d1) / (b->slope - a->slope + 2 * d2);
    if (!isfinite(t))
        return (lo + hi) / 2;
    return t < lo ? lo : t > hi ? hi : t;
}

/* The next trial inside the bracket, at least a tenth of its width from either end. */
static double zoom_trial(const bp__lbfgs_state *st)
{
    double a = fmin(st->lo.alpha, st->hi.alpha), b = fmax(st->lo.alpha, st->hi.alpha);
    double margin = 0.1 * (b - a);
    if (!isfinite(st->hi.f) || !isfinite(st->hi.slope))
        return (st->lo.alpha + st->hi.alpha) / 2;
    return cubic_min(&st->lo, &st->hi, a + margin, b - margin);
}

/* The two-loop recursion: d = -H g0, H the inverse Hessian approximation built from the
 * pairs held, scaled by s.y / y.y of the newest (Nocedal and Wright, eq. 7.20). */
static void direction(bp__lbfgs_state *st, size_t n)
{
    double a[100]; /* history is at most 100: config.c */
    int h = st->history;
    bp_real *q = st->d;
    for (size_t i = 0; i < n; i++)
        q[i] = -st->g0[i];
    for (int j = 0; j < st->pairs; j++) { /* newest first */
        int r = (st->newest - j + h) % h;
        const bp_real *s = st->s + (size_t)r * n, *y = st->y + (size_t)r * n;
        a[j] = st->rho[r] * dot(s, q, n);
        bp_real aj = (bp_real)a[j];
        for (size_t i = 0; i < n; i++)
            q[i] -= aj * y[i];
    }
    if (st->pairs > 0) {
        const bp_real *y = st->y + (size_t)st->newest * n;
        bp_real gamma = (bp_real)(1 / (st->rho[st->newest] * dot(y, y, n)));
        for (size_t i = 0; i < n; i++)
            q[i] *= gamma;
    }
    for (int j = st->pairs - 1; j >= 0; j--) { /* oldest first */
        int r = (st->newest - j + h) % h;
        const bp_real *s = st->s + (size_t)r * n, *y = st->y + (size_t)r * n;
        bp_real c = (bp_real)(a[j] - st->rho[r] * dot(y, q, n));
        for (size_t i = 0; i < n; i++)
            q[i] += c * s[i];
    }
}

/* An iteration starts at x0 with gradient g0 (point x's f, cost and correct set): the
 * convergence test, the direction, the first trial step. Steepest descent when there
 * are no pairs yet or the recursion's direction does not descend (rounding). */
static int start_iteration(bp__lbfgs_state *st, size_t n, const bp__lbfgs_setup *setup)
{
    st->phase = BP__LBFGS_NEXT;
    if (max_abs(st->g0, n) <= setup->tolerance) {
        st->converged = BP_LBFGS_CONVERGED_GRADIENT;
        return BP__LBFGS_DONE;
    }
    direction(st, n);
    double slope = dot(st->g0, st->d, n);
    if (!(slope < 0) || st->pairs == 0) {
        st->pairs = 0;
        for (size_t i = 0; i < n; i++)
            st->d[i] = -st->g0[i];
        slope = -dot(st->g0, st->g0, n);
        st->alpha = fmin(1, 1 / sqrt(-slope)); /* a first step of length at most 1 */
    } else {
        st->alpha = 1;
    }
    st->x.alpha = 0;
    st->x.slope = slope;
    st->lo = st->x;
    memcpy(st->g_lo, st->g0, n * sizeof(bp_real));
    st->evals = 0;
    return BP__LBFGS_ITERATED;
}

/* The iteration ends at params with gradient g (point p): the pair (s, y) is kept when its
 * curvature is positive, and the next iteration starts there. */
static int accept(bp__lbfgs_state *st, bp_real *params, size_t n, const bp_real *g,
                  const bp__lbfgs_point *p, const bp__lbfgs_setup *setup)
{
    int h = st->history, r = (st->newest + 1) % h;
    double sy = 0, yy = 0; /* first: a rejected pair must not overwrite the oldest */
    for (size_t i = 0; i < n; i++) {
        bp_real si = params[i] - st->x0[i], yi = g[i] - st->g0[i];
        sy += (double)si * (double)yi;
        yy += (double)yi * (double)yi;
    }
    if (sy > DBL_EPSILON * yy) {
        bp_real *s = st->s + (size_t)r * n, *y = st->y + (size_t)r * n;
        for (size_t i = 0; i < n; i++) {
            s[i] = params[i] - st->x0[i];
            y[i] = g[i] - st->g0[i];
        }
        st->rho[r] = 1 / sy;
        st->newest = r;
        st->pairs += st->pairs < h;
    }
    memcpy(st->x0, params, n * sizeof(bp_real));
    memcpy(st->g0, g, n * sizeof(bp_real));
    st->x = *p;
    return start_iteration(st, n, setup);
}

void bp__lbfgs_begin(bp__lbfgs_state *st, bp_real *params, size_t n)
{
    if (st->phase == BP__LBFGS_FIRST || st->converged)
        return;
    move_to(st, params, n, st->alpha);
    if (st->phase == BP__LBFGS_NEXT)
        st->phase = BP__LBFGS_BRACKET;
}

int bp__lbfgs_evaluated(bp__lbfgs_state *st, const bp_net *net, const bp_real *grad_sum,
                        double cost_sum, double correct, const bp__lbfgs_setup *setup, bp_real *g)
{
    size_t n = net->nparams;
    bp_real *params = net->params;
    double f = objective(net, params, grad_sum, cost_sum, setup, g);
    bp__lbfgs_point p = {st->alpha, f, 0, cost_sum, correct};
    if (st->phase == BP__LBFGS_FIRST) {
        if (!isfinite(f) || !isfinite(dot(g, g, n)))
            return BP__LBFGS_DIVERGED;
        memcpy(st->x0, params, n * sizeof(bp_real));
        memcpy(st->g0, g, n * sizeof(bp_real));
        st->x = p;
        int rc = start_iteration(st, n, setup);
        return rc == BP__LBFGS_DONE ? rc : BP__LBFGS_GO_ON; /* no iteration yet */
    }
    p.slope = dot(g, st->d, n);
    st->evals++;
    int too_far = !isfinite(f) || !isfinite(p.slope) || f > st->x.f + C1 * p.alpha * st->x.slope;
    int wolfe = !too_far && fabs(p.slope) <= -C2 * st->x.slope;
    double next;
    if (st->phase == BP__LBFGS_BRACKET) {
        bp__lbfgs_point prev = st->lo;
        if (too_far || (prev.alpha > 0 && f >= prev.f)) {
            st->hi = p;
            st->phase = BP__LBFGS_ZOOM;
        } else if (wolfe) {
            return accept(st, params, n, g, &p, setup);
        } else {
            st->lo = p;
            memcpy(st->g_lo, g, n * sizeof(bp_real));
            if (p.slope >= 0) {
                st->hi = prev;
                st->phase = BP__LBFGS_ZOOM;
            }
        }
        /* Still descending: a longer step, by the cubic through the last two points, at
         * least twice as far from the last as that was from the one before. */
        next = st->phase == BP__LBFGS_ZOOM
                   ? zoom_trial(st)
                   : cubic_min(&prev, &p, 2 * p.alpha - prev.alpha, 10 * p.alpha);
    } else {
        if (too_far || f >= st->lo.f) {
            st->hi = p;
        } else {
            if (wolfe)
                return accept(st, params, n, g, &p, setup);
            if (p.slope * (st->hi.alpha - st->lo.alpha) >= 0)
                st->hi = st->lo;
            st->lo = p;
            memcpy(st->g_lo, g, n * sizeof(bp_real));
        }
        next = zoom_trial(st);
    }
    int narrow = st->phase == BP__LBFGS_ZOOM &&
                 fabs(st->hi.alpha - st->lo.alpha) * max_abs(st->d, n) < MIN_WIDTH;
    if (st->evals < MAX_EVALS && !narrow) {
        st->alpha = next;
        memcpy(params, st->x0, n * sizeof(bp_real)); /* begin moves to the trial */
        return BP__LBFGS_GO_ON;
    }
    /* The search gave up: the best point it found, if it is below the start. */
    if (st->lo.alpha > 0) {
        move_to(st, params, n, st->lo.alpha);
        bp__lbfgs_point lo = st->lo;
        memcpy(g, st->g_lo, n * sizeof(bp_real));
        return accept(st, params, n, g, &lo, setup);
    }
    memcpy(params, st->x0, n * sizeof(bp_real));
    /* None: the pairs may be stale. As L-BFGS-B does, forget them and search again along
     * steepest descent; only a failure there ends the run. */
    if (st->pairs > 0) {
        st->pairs = 0;
        return start_iteration(st, n, setup) == BP__LBFGS_DONE ? BP__LBFGS_DONE : BP__LBFGS_GO_ON;
    }
    st->converged = BP_LBFGS_CONVERGED_NO_DECREASE;
    st->phase = BP__LBFGS_NEXT;
    return BP__LBFGS_DONE;
}
