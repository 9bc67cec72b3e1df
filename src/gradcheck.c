/* Gradient checking by centred differences (Ng's course, CS231n): the test that backprop
 * computes the derivative of the cost it claims to. */
#include <math.h>
#include <string.h>

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

/* Which relu units are on, as a hash over the hidden activations of the last forward. */
static uint64_t relu_pattern(const bp_net *net, const bp_workspace *ws, size_t m)
{
    uint64_t h = 1469598103934665603ULL;
    for (int l = 1; l < net->nlayers; l++) {
        size_t count = m * (size_t)net->sizes[l];
        for (size_t i = 0; i < count; i++) {
            unsigned char on = ws->A[l][i] > 0;
            h = bp__hash(&on, 1, h);
        }
    }
    return h;
}

static void check_range(bp_net *net, bp_workspace *ws, const bp_real *X, const bp_real *Y, size_t m,
                        double lambda, double n, double eps, size_t first, size_t count,
                        size_t max_checks, const bp_real *grad, bp_gradcheck_layer *res,
                        double norms[3])
{
    size_t checks = count < max_checks ? count : max_checks;
    for (size_t c = 0; c < checks; c++) {
        size_t i = first + (checks == count ? c : c * count / checks);
        bp_real saved = net->params[i];
        net->params[i] = saved + (bp_real)eps;
        bp_real up = net->params[i];
        double j_plus = bp_objective(net, ws, X, Y, m, lambda, n);
        uint64_t pattern = net->hidden == BP_RELU ? relu_pattern(net, ws, m) : 0;
        net->params[i] = saved - (bp_real)eps;
        bp_real down = net->params[i];
        double j_minus = bp_objective(net, ws, X, Y, m, lambda, n);
        net->params[i] = saved;
        if (net->hidden == BP_RELU && relu_pattern(net, ws, m) != pattern) {
            res->kinks++;
            continue;
        }
        /* Divide by the step actually taken: in float, saved +- eps rounds. */
        double numeric = (j_plus - j_minus) / ((double)up - (double)down);
        double err = bp_relative_error((double)grad[i], numeric);
        res->max_rel_error = fmax(res->max_rel_error, err);
        res->max_abs_grad = fmax(res->max_abs_grad, fabs((double)grad[i]));
        norms[0] += ((double)grad[i] - numeric) * ((double)grad[i] - numeric);
        norms[1] += (double)grad[i] * (double)grad[i];
        norms[2] += numeric * numeric;
        res->checked++;
    }
}

int bp_gradcheck(bp_net *net, const bp_real *X, const bp_real *Y, size_t m, double lambda, double n,
                 double epsilon, size_t max_per_layer, const bp_real *analytic,
                 bp_gradcheck_layer *result)
{
    bp_workspace ws;
    bp_real *grad = NULL;
    int rc = bp_workspace_create(&ws, net, m);
    if (rc < 0)
        return rc;
    if (!analytic) {
        grad = bp__calloc(net->nparams, sizeof(bp_real));
        if (!grad) {
            rc = BP_ENOMEM;
            goto cleanup;
        }
        analytic_gradient(net, &ws, X, Y, m, lambda, n, grad);
        analytic = grad;
    }
    for (int l = 0; l < net->nlayers; l++) {
        bp_gradcheck_layer *res = &result[l];
        memset(res, 0, sizeof(*res));
        size_t nw = (size_t)net->sizes[l] * (size_t)net->sizes[l + 1];
        size_t nb = (size_t)net->sizes[l + 1];
        /* Share the budget between W and b in proportion, at least one bias. */
        size_t max_w = max_per_layer * nw / (nw + nb);
        size_t max_b = max_per_layer > max_w ? max_per_layer - max_w : 1;
        double norms[3] = {0, 0, 0}; /* ||g - n||^2, ||g||^2, ||n||^2 */
        check_range(net, &ws, X, Y, m, lambda, n, epsilon, bp_net_offset_W(net, l), nw,
                    max_w ? max_w : 1, analytic, res, norms);
        check_range(net, &ws, X, Y, m, lambda, n, epsilon, bp_net_offset_b(net, l), nb, max_b,
                    analytic, res, norms);
        double scale = sqrt(fmax(norms[1], norms[2]));
        res->rel_error = scale > 0 ? sqrt(norms[0]) / scale : 0;
    }
cleanup:
    bp__free(grad);
    bp_workspace_free(&ws);
    return rc;
}
