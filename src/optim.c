/* The update rule: one flat loop per layer over the parameter buffer. */
#include "internal.h"

BP__VECTORIZE static void step_range(bp_real *restrict p, const bp_real *restrict g,
                                     bp_real *restrict v, size_t n, double eta_m, double decay,
                                     double mu, double l2)
{
    if (!v) {
        bp_real d = (bp_real)decay, s = (bp_real)eta_m;
        for (size_t i = 0; i < n; i++)
            p[i] = d * p[i] - s * g[i];
        return;
    }
    bp_real m = (bp_real)mu, s = (bp_real)eta_m, w = (bp_real)l2;
    for (size_t i = 0; i < n; i++) {
        v[i] = m * v[i] - s * g[i] - w * p[i];
        p[i] += v[i];
    }
}

void bp_sgd_step(const bp_sgd *opt, bp_net *net, const bp_real *grad, bp_real *velocity, double m)
{
    double eta_m = opt->learning_rate / m;
    double l2 = opt->learning_rate * opt->lambda / opt->n_train; /* eta * lambda / n */
    bp_real *v = opt->momentum != 0 ? velocity : NULL;
    for (int l = 0; l < net->nlayers; l++) {
        size_t ow = bp_net_offset_W(net, l), ob = bp_net_offset_b(net, l);
        size_t nw = (size_t)net->sizes[l] * (size_t)net->sizes[l + 1];
        size_t nb = (size_t)net->sizes[l + 1];
        step_range(net->params + ow, grad + ow, v ? v + ow : NULL, nw, eta_m, 1.0 - l2,
                   opt->momentum, l2);
        step_range(net->params + ob, grad + ob, v ? v + ob : NULL, nb, eta_m, 1.0, opt->momentum,
                   0.0);
    }
}
