/* Unit tests of the engine: forward values by hand, gradient checks over every
 * activation x output x cost combination, numerical safety, the update rule, and the
 * seed experiments trained through the library alone. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "backprop/backprop.h"
#include "blas.h"
#include "exchange.h"
#include "internal.h"
#include "lbfgs.h"

#ifdef BACKPROP_DOUBLE
#define FWD_TOL 1e-12
/* Centred differences in double: truncation O(eps^2) and rounding O(1e-16/eps) are both
 * ~1e-10 at eps = 1e-6. The bound is on each layer's gradient vector (||g - n|| / max(||g||,
 * ||n||)): a single entry of size 1e-5 carries ~1e-10 absolute rounding, 1e-5 relative,
 * however right the gradient is. */
#define GC_EPS 1e-5
#define GC_TOL 1e-7
#define GEMM_TOL 1e-12
#else
#define FWD_TOL 1e-6
/* The numeric side is double in either build; what is left is the float gradient's own
 * rounding (~1e-7 relative), while a wrong gradient (a dropped term, a sign) is off by
 * O(1). */
#define GC_EPS 1e-5
#define GC_TOL 1e-4
#define GEMM_TOL 1e-4
#endif

static void make_net(bp_net *net, int n, const int *sizes, bp_activation h, bp_activation o,
                     bp_cost c)
{
    assert_int_equal(bp_net_create(net, n, sizes, h, o, c), 0);
}

/* Seed 000's net as configs/xor.ini builds it: [2, 2, 2, 1], sigmoid, quadratic, seed 1. */
static void make_xor_seed_net(bp_net *net)
{
    int sizes[] = {2, 2, 2, 1};
    make_net(net, 4, sizes, BP_SIGMOID, BP_SIGMOID, BP_QUADRATIC);
    bp_rng rng;
    bp_rng_seed(&rng, 1);
    bp_net_init(net, BP_INIT_GAUSSIAN_SCALED, 0, &rng);
}

static void test_forward_by_hand(void **state)
{
    (void)state;
    bp_net net;
    int sizes[] = {2, 2, 1};
    make_net(&net, 3, sizes, BP_SIGMOID, BP_SIGMOID, BP_QUADRATIC);
    const bp_real W0[] = {0.1, 0.2, 0.3, 0.4}, b0[] = {0.5, -0.5}, W1[] = {1, -1}, b1[] = {0.25};
    memcpy(net.W[0], W0, sizeof(W0));
    memcpy(net.b[0], b0, sizeof(b0));
    memcpy(net.W[1], W1, sizeof(W1));
    memcpy(net.b[1], b1, sizeof(b1));
    bp_workspace ws;
    assert_int_equal(bp_workspace_create(&ws, &net, 2), 0);
    const bp_real X[] = {1, 2, 0, -1};
    const bp_real *out = bp_forward(&net, &ws, X, 2);
    /* x = (1, 2): z1 = (0.1+0.4+0.5, 0.3+0.8-0.5) = (1, 0.6); a1 = (s(1), s(0.6));
     * z2 = s(1) - s(0.6) + 0.25 = 0.335402272404210; a2 = s(z2). */
    assert_float_equal(ws.A[1][0], 0.731058578630005, FWD_TOL);
    assert_float_equal(ws.A[1][1], 0.645656306225795, FWD_TOL);
    assert_float_equal(ws.Z_out[0], 0.335402272404210, FWD_TOL);
    assert_float_equal(out[0], 0.583073249420918, FWD_TOL);
    /* x = (0, -1): z1 = (0.3, -0.9); a2 = s(s(0.3) - s(-0.9) + 0.25). */
    assert_float_equal(ws.A[1][2], 0.574442516811659, FWD_TOL);
    assert_float_equal(ws.A[1][3], 0.289050497374996, FWD_TOL);
    assert_float_equal(out[1], 0.630739834438162, FWD_TOL);
    /* Quadratic cost against y = (1, 0): 1/2 (1 - a)^2 + 1/2 a^2. */
    const bp_real Y[] = {1, 0};
    double want = 0.5 * pow(1 - 0.583073249420918, 2) + 0.5 * pow(0.630739834438162, 2);
    assert_float_equal(bp_cost_sum(&net, &ws, Y, 2), want, FWD_TOL);
    bp_workspace_free(&ws);
    bp_net_free(&net);
}

static void test_softmax_by_hand(void **state)
{
    (void)state;
    bp_net net;
    int sizes[] = {2, 3};
    make_net(&net, 2, sizes, BP_RELU, BP_SOFTMAX, BP_CROSS_ENTROPY);
    const bp_real W[] = {1, 0, 0, 1, 1, 1}, b[] = {0, 0.5, -1};
    memcpy(net.W[0], W, sizeof(W));
    memcpy(net.b[0], b, sizeof(b));
    bp_workspace ws;
    assert_int_equal(bp_workspace_create(&ws, &net, 1), 0);
    const bp_real X[] = {0.5, -0.5}, Y[] = {0, 0, 1};
    const bp_real *out = bp_forward(&net, &ws, X, 1);
    /* z = (0.5, 0, -1); softmax = e^z / sum e^z. */
    assert_float_equal(out[0], 0.546549387266180, FWD_TOL);
    assert_float_equal(out[1], 0.331498960424091, FWD_TOL);
    assert_float_equal(out[2], 0.121951652309729, FWD_TOL);
    assert_float_equal(bp_cost_sum(&net, &ws, Y, 1), 2.104130605336728, FWD_TOL);
    int label = 0;
    assert_int_equal(bp_count_correct(&net, &ws, &label, 1), 1);
    label = 2;
    assert_int_equal(bp_count_correct(&net, &ws, &label, 1), 0);
    bp_workspace_free(&ws);
    bp_net_free(&net);
}

/* Targets that suit the output: one-hot for softmax, (0,1) for sigmoid, any for linear. */
static void fill_targets(bp_rng *rng, bp_activation out, bp_real *Y, size_t m, size_t k)
{
    for (size_t r = 0; r < m; r++)
        for (size_t j = 0; j < k; j++) {
            bp_real *y = &Y[r * k + j];
            if (out == BP_SOFTMAX)
                *y = (j == r % k);
            else if (out == BP_SIGMOID)
                *y = (bp_real)(0.1 + 0.8 * bp_rng_uniform(rng));
            else
                *y = (bp_real)bp_rng_gaussian(rng);
        }
}

static double gradcheck_case(int depth, bp_activation h, bp_activation o, bp_cost c,
                             double *min_grad)
{
    int sizes[5] = {4};
    for (int i = 1; i <= depth; i++)
        sizes[i] = 5 - i % 2;
    sizes[depth + 1] = 3;
    bp_net net;
    make_net(&net, depth + 2, sizes, h, o, c);
    bp_rng rng;
    bp_rng_seed(&rng, 1234 + (uint64_t)depth * 100 + h * 10 + o * 3 + c);
    bp_net_init(&net, BP_INIT_GAUSSIAN_SCALED, 0, &rng);
    enum { M = 6 };
    bp_real X[M * 4], Y[M * 3];
    for (size_t i = 0; i < M * 4; i++)
        X[i] = (bp_real)bp_rng_gaussian(&rng);
    fill_targets(&rng, o, Y, M, 3);
    bp_gradcheck_layer res[4];
    /* lambda = 0.7 with n = 10: the L2 term is on and sizeable. */
    assert_int_equal(bp_gradcheck(&net, X, Y, M, 0.7, 10, GC_EPS, 1000, NULL, res), 0);
    double worst = 0;
    *min_grad = INFINITY;
    for (int l = 0; l <= depth; l++) {
        size_t total = (size_t)(sizes[l] * sizes[l + 1] + sizes[l + 1]);
        assert_int_equal(res[l].checked + res[l].kinks, total);
        assert_true(res[l].kinks * 10 <= total); /* a skip is the exception */
        worst = fmax(worst, res[l].rel_error);
        *min_grad = fmin(*min_grad, res[l].max_abs_grad);
    }
    bp_net_free(&net);
    return worst;
}

/* Every hidden x output x cost at 1-3 hidden layers, L2 on. relu's kink at 0: with
 * Gaussian data and weights no pre-activation lands within eps of 0 (probability ~eps),
 * so the centred difference never straddles it; tanh and sigmoid are smooth. */
static void test_gradcheck_all_combinations(void **state)
{
    (void)state;
    const bp_activation hidden[] = {BP_SIGMOID, BP_RELU, BP_TANH, BP_LINEAR};
    const bp_activation output[] = {BP_SIGMOID, BP_SOFTMAX, BP_LINEAR};
    const bp_cost costs[] = {BP_QUADRATIC, BP_CROSS_ENTROPY};
    int cases = 0;
    for (int d = 1; d <= 3; d++)
        for (int h = 0; h < 4; h++)
            for (int o = 0; o < 3; o++)
                for (int c = 0; c < 2; c++) {
                    if (output[o] == BP_LINEAR && costs[c] == BP_CROSS_ENTROPY)
                        continue; /* rejected: see test_rejects_invalid_nets */
                    double min_grad;
                    double err = gradcheck_case(d, hidden[h], output[o], costs[c], &min_grad);
                    if (err > GC_TOL)
                        print_error("depth %d %s/%s/%s: max relative error %g\n", d,
                                    bp_activation_name(hidden[h]), bp_activation_name(output[o]),
                                    bp_cost_name(costs[c]), err);
                    assert_true(err <= GC_TOL);
                    assert_true(min_grad > 1e-4); /* not trivially zero in any layer */
                    cases++;
                }
    assert_int_equal(cases, 3 * 4 * 5);
}

/* Seed 000's experiment (configs/xor.ini: 2-2-2-1 sigmoid, quadratic cost, seed 1): its
 * first layer's gradients are ~1e-4, which float differences of the cost cannot resolve
 * (6e-2 "error" before the numeric side went to double). */
static void test_gradcheck_resolves_small_gradients(void **state)
{
    (void)state;
    bp_net net;
    make_xor_seed_net(&net);
    const bp_real X[] = {0, 0, 0, 1, 1, 0, 1, 1}, Y[] = {0, 1, 1, 0};
    bp_gradcheck_layer res[3];
    assert_int_equal(bp_gradcheck(&net, X, Y, 4, 0, 4, GC_EPS, 100, NULL, res), 0);
    assert_true(res[0].max_abs_grad < 1e-3); /* the case in point: small gradients */
    assert_true(res[0].max_abs_grad > 1e-6); /* but not trivially zero */
    for (int l = 0; l < 3; l++) {
        if (res[l].rel_error > GC_TOL)
            print_error("layer %d: relative error %g\n", l, res[l].rel_error);
        assert_true(res[l].rel_error <= GC_TOL);
    }
    bp_net_free(&net);
}

static void test_gradcheck_detects_a_wrong_gradient(void **state)
{
    (void)state;
    int sizes[] = {3, 4, 2};
    bp_net net;
    make_net(&net, 3, sizes, BP_TANH, BP_SIGMOID, BP_CROSS_ENTROPY);
    bp_rng rng;
    bp_rng_seed(&rng, 7);
    bp_net_init(&net, BP_INIT_GAUSSIAN_SCALED, 0, &rng);
    bp_real X[6], Y[4] = {0.2, 0.9, 0.7, 0.1};
    for (int i = 0; i < 6; i++)
        X[i] = (bp_real)bp_rng_gaussian(&rng);
    bp_real *wrong = calloc(net.nparams, sizeof(bp_real)); /* zero: certainly wrong */
    bp_gradcheck_layer res[2];
    assert_int_equal(bp_gradcheck(&net, X, Y, 2, 0, 2, GC_EPS, 100, wrong, res), 0);
    assert_true(res[0].rel_error > 0.5);
    assert_true(res[1].rel_error > 0.5);
    /* The true gradient with 5 % too much on the output biases: caught in that layer only. */
    bp_gradcheck_layer truth[2];
    assert_int_equal(bp_gradcheck(&net, X, Y, 2, 0, 2, GC_EPS, 100, NULL, truth), 0);
    bp_workspace ws;
    assert_int_equal(bp_workspace_create(&ws, &net, 2), 0);
    memset(wrong, 0, net.nparams * sizeof(bp_real));
    bp_forward(&net, &ws, X, 2);
    bp_backward(&net, &ws, Y, 2, wrong, 1);
    for (size_t i = 0; i < net.nparams; i++)
        wrong[i] /= 2;
    for (int j = 0; j < 2; j++)
        wrong[bp_net_offset_b(&net, 1) + (size_t)j] *= (bp_real)1.05;
    assert_int_equal(bp_gradcheck(&net, X, Y, 2, 0, 2, GC_EPS, 100, wrong, res), 0);
    assert_true(truth[1].rel_error <= GC_TOL);
    assert_true(res[1].rel_error > 0.01);
    assert_true(res[0].rel_error <= GC_TOL);
    bp_workspace_free(&ws);
    free(wrong);
    bp_net_free(&net);
}

static void test_rejects_invalid_nets(void **state)
{
    (void)state;
    bp_net net;
    char why[200];
    int ok[] = {2, 3}, zero[] = {2, 0, 1};
    assert_int_equal(bp_net_validate(2, ok, BP_RELU, BP_LINEAR, BP_CROSS_ENTROPY, why, 200),
                     BP_EINVAL);
    assert_non_null(strstr(why, "cross_entropy"));
    assert_int_equal(bp_net_create(&net, 2, ok, BP_SOFTMAX, BP_SIGMOID, BP_QUADRATIC), BP_EINVAL);
    assert_int_equal(bp_net_create(&net, 3, zero, BP_RELU, BP_SIGMOID, BP_QUADRATIC), BP_EINVAL);
    assert_int_equal(bp_net_create(&net, 1, ok, BP_RELU, BP_SIGMOID, BP_QUADRATIC), BP_EINVAL);
    assert_null(net.params);
}

/* Outputs pushed to +-1000: costs, outputs and deltas stay finite. */
static void test_saturated_outputs_stay_finite(void **state)
{
    (void)state;
    const bp_activation outs[] = {BP_SOFTMAX, BP_SIGMOID};
    for (int t = 0; t < 2; t++) {
        int sizes[] = {1, 3};
        bp_net net;
        make_net(&net, 2, sizes, BP_RELU, outs[t], BP_CROSS_ENTROPY);
        const bp_real W[] = {1000, -1000, 0};
        memcpy(net.W[0], W, sizeof(W));
        bp_workspace ws;
        assert_int_equal(bp_workspace_create(&ws, &net, 2), 0);
        const bp_real X[] = {1, -1};
        /* The true class is the one driven to -1000 (or +1000 in row 2): log(0) territory. */
        const bp_real Y[] = {0, 1, 0, 1, 0, 0};
        const bp_real *out = bp_forward(&net, &ws, X, 2);
        for (int i = 0; i < 6; i++)
            assert_true(isfinite(out[i]));
        double cost = bp_cost_sum(&net, &ws, Y, 2);
        assert_true(isfinite(cost));
        /* Row 1: z = (1000, -1000, 0), true class 1. Softmax: -log p = 2000 (+ tiny);
         * sigmoid: softplus(1000) + softplus(1000) + softplus(0) ~ 2000 + log 2. */
        assert_true(cost >= 2000);
        bp_real *grad = calloc(net.nparams, sizeof(bp_real));
        bp_backward(&net, &ws, Y, 2, grad, 1);
        for (size_t i = 0; i < net.nparams; i++)
            assert_true(isfinite(grad[i]));
        free(grad);
        bp_workspace_free(&ws);
        bp_net_free(&net);
    }
}

static void test_sgd_step_matches_formula(void **state)
{
    (void)state;
    int sizes[] = {2, 1};
    bp_net net;
    make_net(&net, 2, sizes, BP_RELU, BP_LINEAR, BP_QUADRATIC);
    net.W[0][0] = 1, net.W[0][1] = -2, net.b[0][0] = 0.5;
    const bp_real grad[] = {4, 8, 2}; /* dW sums over m = 4 examples, then db */
    bp_sgd opt = {.learning_rate = 0.5, .lambda = 2, .momentum = 0, .n_train = 10};
    bp_sgd_step(&opt, &net, grad, NULL, 4);
    /* W <- (1 - 0.5*2/10) W - (0.5/4) dW = 0.9 W - 0.125 dW;  b <- b - 0.125 db. */
    assert_float_equal(net.W[0][0], 0.9 * 1 - 0.125 * 4, FWD_TOL);
    assert_float_equal(net.W[0][1], 0.9 * -2 - 0.125 * 8, FWD_TOL);
    assert_float_equal(net.b[0][0], 0.5 - 0.125 * 2, FWD_TOL);
    /* Momentum 0.5 from zero velocity: first step equals plain SGD, second adds 0.5 v. */
    bp_real v[3] = {0};
    net.W[0][0] = 1, net.W[0][1] = -2, net.b[0][0] = 0.5;
    opt.momentum = 0.5;
    bp_sgd_step(&opt, &net, grad, v, 4);
    assert_float_equal(v[0], -0.1 * 1 - 0.125 * 4, FWD_TOL);
    assert_float_equal(net.W[0][0], 0.4, FWD_TOL);
    bp_sgd_step(&opt, &net, grad, v, 4);
    double v0 = 0.5 * -0.6 - 0.125 * 4 - 0.1 * 0.4;
    assert_float_equal(v[0], v0, FWD_TOL);
    assert_float_equal(net.W[0][0], 0.4 + v0, FWD_TOL);
    assert_float_equal(net.b[0][0], 0.5 - 0.25 + 0.5 * -0.25 - 0.25, FWD_TOL);
    bp_net_free(&net);
}

/* Adam on a 1x1 net (W = 0.5, b = -0.2; gradient sums 0.2 and -0.4 over m = 2, so means
 * 0.1 and -0.2; lr 0.01, betas 0.9 and 0.999, eps 1e-8), worked by hand:
 *   t = 1: m = 0.1 g, v = 0.001 g^2, bias-corrected m^ = g, v^ = g^2: each parameter moves
 *          by lr g / (|g| + eps): W = 0.5 - 0.01 * 0.1/0.10000001 = 0.490000001;
 *          b = -0.2 + 0.01 * 0.2/0.20000001 = -0.1900000005.
 *   t = 2, same gradient: m^ = 0.019/0.19 = g and v^ = 1.999e-5/0.001999 = g^2 again:
 *          the same move: W = 0.480000002.
 * With lambda/n = 0.2, coupled: W's gradient is 0.1 + 0.2 * 0.5 = 0.2, so at t = 1 it
 * moves 0.01 * 0.2/0.20000001: W = 0.4900000005. Decoupled: the Adam move plus
 * 0.01 * 0.2 * 0.5: W = 0.5 - 0.009999999 - 0.001 = 0.489000001. Biases: no L2. */
static void test_adam_step_by_hand(void **state)
{
    (void)state;
    int sizes[] = {1, 1};
    bp_net net;
    make_net(&net, 2, sizes, BP_RELU, BP_LINEAR, BP_QUADRATIC);
    const bp_real grad[] = {0.2, -0.4};
    bp__adam opt = {.learning_rate = 0.01,
                    .lambda = 0,
                    .n_train = 10,
                    .beta1 = 0.9,
                    .beta2 = 0.999,
                    .epsilon = 1e-8};
    const double tol = sizeof(bp_real) == 4 ? 1e-7 : 1e-12;
    for (int mode = 0; mode < 3; mode++) { /* no L2, coupled, decoupled */
        bp_real m1[2] = {0}, m2[2] = {0};
        net.W[0][0] = 0.5, net.b[0][0] = -0.2;
        opt.lambda = mode ? 2 : 0, opt.decoupled = mode == 2;
        bp__adam_step_range(&opt, &net, grad, m1, m2, 2, 1, 0, net.nparams);
        const double want_W[] = {0.490000001, 0.4900000005, 0.489000001};
        assert_float_equal(net.W[0][0], want_W[mode], tol);
        assert_float_equal(net.b[0][0], -0.1900000005, tol);
        if (mode == 0) {
            assert_float_equal(m1[0], 0.01, tol);
            assert_float_equal(m2[0], 1e-5, tol * 1e-4);
            bp__adam_step_range(&opt, &net, grad, m1, m2, 2, 2, 0, net.nparams);
            assert_float_equal(m1[0], 0.019, tol);
            assert_float_equal(net.W[0][0], 0.480000002, tol);
        }
    }
    bp_net_free(&net);
}

/* A finite gradient g for which (1 - beta2) g * g overflows (1e21 in float, 1e156 in
 * double) makes the second moment infinite and the step
 * m1 / sqrt(m2) zero: the parameter stays finite, frozen. The update says so all the same,
 * and its arithmetic is unchanged (W and b as the step before the check computed them). A
 * gradient that fits is no verdict. */
static void test_adam_reports_overflowing_moments(void **state)
{
    (void)state;
    int sizes[] = {1, 1};
    bp_net net;
    make_net(&net, 2, sizes, BP_RELU, BP_LINEAR, BP_QUADRATIC);
    bp__adam opt = {
        .learning_rate = 0.01, .n_train = 10, .beta1 = 0.9, .beta2 = 0.999, .epsilon = 1e-8};
    bp_real big = sizeof(bp_real) == 4 ? (bp_real)1e21 : (bp_real)1e156;
    const bp_real grad[] = {big, 0.2};
    bp_real m1[2] = {0}, m2[2] = {0};
    net.W[0][0] = 0.5, net.b[0][0] = -0.2;
    assert_int_equal(bp__adam_step_range(&opt, &net, grad, m1, m2, 1, 1, 0, net.nparams), 1);
    assert_true(isinf(m2[0]));
    assert_true(isfinite(net.W[0][0]));
    assert_float_equal(net.W[0][0], 0.5, 0); /* 0.5 - 0.01 * (m1 / inf): unchanged */
    assert_float_equal(net.b[0][0], -0.21, 1e-6);
    /* Only the range that holds it: the bias alone is fine. */
    bp_real m1b[2] = {0}, m2b[2] = {0};
    assert_int_equal(bp__adam_step_range(&opt, &net, grad, m1b, m2b, 1, 1, 1, 2), 0);
    bp_net_free(&net);
}

/* L-BFGS driven by hand on quadratics of the two parameters of a 1x1 net (W, b), with
 * lambda 0 and n 1: the objective is the cost handed in, its gradient the sum handed in. */
typedef struct {
    double a, w0, c, b0, offset; /* F = a (W - w0)^2 + c (b - b0)^2 + offset */
} quad;

static int lbfgs_eval(bp__lbfgs_state *st, bp_net *net, const quad *q, double tol, bp_real *g)
{
    double W = net->params[0], b = net->params[1];
    double f = q->a * (W - q->w0) * (W - q->w0) + q->c * (b - q->b0) * (b - q->b0) + q->offset;
    bp_real sum[2] = {(bp_real)(2 * q->a * (W - q->w0)), (bp_real)(2 * q->c * (b - q->b0))};
    bp__lbfgs_setup setup = {.n_train = 1, .lambda = 0, .tolerance = tol};
    return bp__lbfgs_evaluated(st, net, sum, f, 0, &setup, g);
}

/* F = (W - 0.3)^2 + (b - 0.2)^2 - 0.09 from (0, 0), worked by hand: f0 = 0.04, gradient
 * (-0.6, -0.4), |g| = 0.72 < 1 so the first step is alpha = 1 along d = (0.6, 0.4), where
 * f = 0.04 again: too far for sufficient decrease, the bracket is [0, 1] with slopes
 * -0.52 and 0.52, and the cubic through it (here the parabola phi itself) has its minimum
 * at alpha = 0.5: (0.3, 0.2), the minimum, where the gradient vanishes: converged. */
static void test_lbfgs_zoom_by_hand(void **state)
{
    (void)state;
    int sizes[] = {1, 1};
    bp_net net;
    make_net(&net, 2, sizes, BP_RELU, BP_LINEAR, BP_QUADRATIC);
    net.params[0] = net.params[1] = 0;
    bp__lbfgs_state st;
    bp_real g[2];
    assert_int_equal(bp__lbfgs_alloc(&st, 2, 3), 0);
    const quad q = {1, 0.3, 1, 0.2, -0.09};
    const double tol = sizeof(bp_real) == 4 ? 1e-6 : 1e-14;
    assert_int_equal(lbfgs_eval(&st, &net, &q, 0, g), BP__LBFGS_GO_ON);
    assert_int_equal(st.phase, BP__LBFGS_NEXT);
    assert_float_equal(st.alpha, 1, 0);
    assert_float_equal(st.d[0], 0.6, tol);
    assert_float_equal(st.d[1], 0.4, tol);
    assert_float_equal(st.x.slope, -0.52, tol);
    bp__lbfgs_begin(&st, net.params, 2);
    assert_float_equal(net.params[0], 0.6, tol);
    assert_int_equal(lbfgs_eval(&st, &net, &q, 0, g), BP__LBFGS_GO_ON);
    assert_int_equal(st.phase, BP__LBFGS_ZOOM);
    assert_float_equal(st.hi.alpha, 1, 0);
    assert_float_equal(st.hi.slope, 0.52, tol);
    assert_float_equal(st.alpha, 0.5, tol);
    assert_float_equal(net.params[0], 0, 0); /* between steps: x0 */
    bp__lbfgs_begin(&st, net.params, 2);
    assert_float_equal(net.params[0], 0.3, tol);
    assert_float_equal(net.params[1], 0.2, tol);
    assert_int_equal(lbfgs_eval(&st, &net, &q, 1e-6, g), BP__LBFGS_DONE);
    assert_int_equal(st.converged, BP_LBFGS_CONVERGED_GRADIENT);
    assert_int_equal(st.pairs, 1); /* s = (0.3, 0.2), y = (0.6, 0.4): s.y = 0.26 */
    assert_float_equal(st.rho[st.newest], 1 / 0.26, 1e4 * tol);
    assert_float_equal(st.x.f, -0.09, tol);
    bp__lbfgs_free(&st);
    bp_net_free(&net);
}

/* F = 2 (W - 1)^2 + (b + 1)^2 / 2 from (0, 0): gradient (-4, 1), |g| = sqrt(17), so the
 * first step is alpha = 1/sqrt(17) along d = (4, -1); it meets both Wolfe conditions
 * (slope -1.2352 against -17). The pair is s = alpha d, y = g1 - g0 = (4 s_W, s_b), and the
 * next direction is -H g1 with H the BFGS update of (s.y / y.y) I by that pair, worked out
 * below in double. Then L-BFGS reaches the minimum (1, -1). */
static void test_lbfgs_direction_by_hand(void **state)
{
    (void)state;
    int sizes[] = {1, 1};
    bp_net net;
    make_net(&net, 2, sizes, BP_RELU, BP_LINEAR, BP_QUADRATIC);
    net.params[0] = net.params[1] = 0;
    bp__lbfgs_state st;
    bp_real g[2];
    assert_int_equal(bp__lbfgs_alloc(&st, 2, 2), 0);
    const quad q = {2, 1, 0.5, -1, 0};
    const double tol = sizeof(bp_real) == 4 ? 2e-6 : 1e-13;
    assert_int_equal(lbfgs_eval(&st, &net, &q, 1e-5, g), BP__LBFGS_GO_ON);
    double alpha = 1 / sqrt(17.0);
    assert_float_equal(st.alpha, alpha, tol);
    bp__lbfgs_begin(&st, net.params, 2);
    assert_int_equal(lbfgs_eval(&st, &net, &q, 1e-5, g), BP__LBFGS_ITERATED);
    double s[2] = {4 * alpha, -alpha}, y[2] = {4 * s[0], s[1]};
    double g1[2] = {4 * (s[0] - 1), s[1] + 1};
    double sy = s[0] * y[0] + s[1] * y[1], rho = 1 / sy;
    double gamma = sy / (y[0] * y[0] + y[1] * y[1]);
    /* H = (I - rho s y^T) gamma (I - rho y s^T) + rho s s^T */
    double V[2][2], H[2][2];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            V[i][j] = (i == j) - rho * y[i] * s[j];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            H[i][j] = gamma * (V[0][i] * V[0][j] + V[1][i] * V[1][j]) + rho * s[i] * s[j];
    for (int i = 0; i < 2; i++) {
        double want = -(H[i][0] * g1[0] + H[i][1] * g1[1]);
        assert_float_equal(st.d[i], want, tol * 10);
        assert_float_equal(st.g0[i], g1[i], tol);
    }
    assert_float_equal(st.rho[st.newest], rho, tol * 10);
    assert_float_equal(st.alpha, 1, 0);
    int outcome = BP__LBFGS_ITERATED, evals = 2;
    while (outcome != BP__LBFGS_DONE && evals < 30) {
        bp__lbfgs_begin(&st, net.params, 2);
        outcome = lbfgs_eval(&st, &net, &q, 1e-5, g);
        evals++;
    }
    assert_int_equal(outcome, BP__LBFGS_DONE);
    assert_int_equal(st.converged, BP_LBFGS_CONVERGED_GRADIENT);
    assert_true(evals <= 10);
    assert_float_equal(net.params[0], 1, 1e-5);
    assert_float_equal(net.params[1], -1, 1e-5);
    bp__lbfgs_free(&st);
    bp_net_free(&net);
}

/* A cost that never decreases (a trial with an infinite cost first: the next trial is the
 * bracket's middle): the bracket narrows to nothing and the run ends at x0. A cost that
 * decreases linearly forever: no cubic fits, so each next step is the middle of the
 * extrapolation's bounds [2 alpha - previous, 10 alpha]; after 20 trials the search
 * settles for the last; the gradient did not change, so the pair has no curvature and is
 * not kept. */
static void test_lbfgs_gives_up(void **state)
{
    (void)state;
    int sizes[] = {1, 1};
    bp_net net;
    make_net(&net, 2, sizes, BP_RELU, BP_LINEAR, BP_QUADRATIC);
    net.params[0] = 0.25, net.params[1] = -0.5;
    bp__lbfgs_state st;
    bp_real g[2], sum[2] = {-1, 0};
    assert_int_equal(bp__lbfgs_alloc(&st, 2, 4), 0);
    bp__lbfgs_setup setup = {.n_train = 1, .lambda = 0, .tolerance = 0};
    assert_int_equal(bp__lbfgs_evaluated(&st, &net, sum, 1, 0, &setup, g), BP__LBFGS_GO_ON);
    bp__lbfgs_begin(&st, net.params, 2);
    assert_int_equal(bp__lbfgs_evaluated(&st, &net, sum, INFINITY, 0, &setup, g), BP__LBFGS_GO_ON);
    assert_float_equal(st.alpha, 0.5, 0);
    int outcome = BP__LBFGS_GO_ON, evals = 1;
    while (outcome == BP__LBFGS_GO_ON && evals < 40) {
        outcome = bp__lbfgs_evaluated(&st, &net, sum, 2, 0, &setup, g);
        evals++;
    }
    assert_int_equal(outcome, BP__LBFGS_DONE);
    assert_true(evals < 20);
    assert_int_equal(st.converged, BP_LBFGS_CONVERGED_NO_DECREASE);
    assert_float_equal(net.params[0], 0.25, 0);
    assert_float_equal(net.params[1], -0.5, 0);
    bp__lbfgs_free(&st);

    assert_int_equal(bp__lbfgs_alloc(&st, 2, 4), 0);
    assert_int_equal(bp__lbfgs_evaluated(&st, &net, sum, 1, 0, &setup, g), BP__LBFGS_GO_ON);
    bp__lbfgs_begin(&st, net.params, 2);
    double alpha = 0, previous = 0;
    for (evals = 1; evals <= 20; evals++) {
        previous = alpha, alpha = st.alpha;
        outcome = bp__lbfgs_evaluated(&st, &net, sum, 1 - alpha, 0, &setup, g);
        if (evals < 20) {
            double want = (2 * alpha - previous + 10 * alpha) / 2;
            assert_int_equal(outcome, BP__LBFGS_GO_ON);
            assert_float_equal(st.alpha, want, want * 1e-12);
        }
    }
    assert_int_equal(outcome, BP__LBFGS_ITERATED);
    assert_int_equal(st.pairs, 0);
    assert_float_equal(st.x.alpha, 0, 0);
    assert_float_equal(st.x.f, 1 - alpha, alpha * 1e-12);
    bp__lbfgs_free(&st);

    /* No decrease with pairs held: they are forgotten and the search starts again along
     * steepest descent from x0 (the epoch goes on); only there does giving up end the run. */
    assert_int_equal(bp__lbfgs_alloc(&st, 2, 4), 0);
    assert_int_equal(bp__lbfgs_evaluated(&st, &net, sum, 1, 0, &setup, g), BP__LBFGS_GO_ON);
    st.pairs = 1, st.rho[0] = 1; /* as if a pair were held */
    for (evals = 0, outcome = BP__LBFGS_GO_ON; outcome == BP__LBFGS_GO_ON && st.pairs; evals++)
        outcome = bp__lbfgs_evaluated(&st, &net, sum, 2, 0, &setup, g);
    assert_int_equal(outcome, BP__LBFGS_GO_ON);
    assert_int_equal(st.phase, BP__LBFGS_NEXT);
    assert_int_equal(st.evals, 0);
    assert_float_equal(st.d[0], 1, 0);
    while (outcome == BP__LBFGS_GO_ON && evals < 60) {
        outcome = bp__lbfgs_evaluated(&st, &net, sum, 2, 0, &setup, g);
        evals++;
    }
    assert_int_equal(outcome, BP__LBFGS_DONE);
    assert_int_equal(st.converged, BP_LBFGS_CONVERGED_NO_DECREASE);
    bp__lbfgs_free(&st);

    /* The first evaluation's cost not finite: that is divergence; so is its gradient. */
    assert_int_equal(bp__lbfgs_alloc(&st, 2, 4), 0);
    assert_int_equal(bp__lbfgs_evaluated(&st, &net, sum, NAN, 0, &setup, g), BP__LBFGS_DIVERGED);
    bp__lbfgs_free(&st);
    assert_int_equal(bp__lbfgs_alloc(&st, 2, 4), 0);
    bp_real bad[2] = {NAN, 0};
    assert_int_equal(bp__lbfgs_evaluated(&st, &net, bad, 1, 0, &setup, g), BP__LBFGS_DIVERGED);
    bp__lbfgs_free(&st);
    bp_net_free(&net);
}

#ifndef BACKPROP_DOUBLE
/* bf16 rounding is to nearest, ties to even, like the hardware's: worked by hand from the
 * bit patterns (bf16 keeps float's top 16 bits: 8 significant bits). */
static void test_bf16_rounding(void **state)
{
    (void)state;
    const float in[] = {1.0f,
                        1.0f + 0x1p-8f,            /* halfway between 1 and 1 + 2^-7: even, 1 */
                        1.0f + 3 * 0x1p-8f,        /* halfway to 1 + 2^-6 (even) */
                        1.0f + 0x1p-8f + 0x1p-20f, /* just above half: up */
                        -2.5f,
                        INFINITY,
                        3.4028235e38f, /* the largest float rounds to infinity */
                        0x1p-130f,     /* a subnormal, 2^-126 * 2^-4: mantissa bit 19 */
                        -0.0f,
                        -1.0f - 0x1p-8f, /* a negative tie: to even, -1 */
                        NAN};
    const bp_bf16 want[] = {0x3f80, 0x3f80, 0x3f82, 0x3f81, 0xc020,
                            0x7f80, 0x7f80, 0x0008, 0x8000, 0xbf80};
    bp_bf16 out[11];
    bp__to_bf16(out, in, 11);
    for (int i = 0; i < 10; i++)
        assert_int_equal(out[i], want[i]);
    assert_true((out[10] & 0x7f80) == 0x7f80 && (out[10] & 0x7f) != 0); /* still a NaN */
    /* A signalling NaN whose payload is all in the low half: rounding would make it
     * infinity; it comes out a quiet NaN. */
    uint32_t snan_bits = 0x7f800001u;
    float snan;
    memcpy(&snan, &snan_bits, sizeof(snan));
    bp__to_bf16(out, &snan, 1);
    assert_int_equal(out[0], 0x7fc0);
    const bp_bf16 h[2] = {0x3f81, 0xc020};
    bp_real wide[2] = {0, 1};
    bp__bf16_widen(wide, h, 2);
    assert_true(wide[0] == 1.0078125f && wide[1] == -2.5f);
    bp__bf16_add(wide, h, 2);
    assert_true(wide[0] == 2.015625f && wide[1] == -5.0f);
}

/* A product in bf16 against the exact one (double, from the float operands). Each operand
 * rounds to bf16 with relative error at most u = 2^-8, so a term a_i b_i is off by at most
 * (2u + u^2)|a_i b_i| (its product of two 8-bit significands is exact in f32); summing k
 * terms in f32 adds at most gamma = (k-1) 2^-24 / (1 - (k-1) 2^-24) of their absolute sum,
 * in any order (oneDNN's split partial sums included). So |C - C_exact| <=
 * ((2u + u^2)(1 + gamma) + gamma) S, S = sum |a_i||b_i|, element by element. The bound
 * holds for operands in float's normal range, as these are (the bf16 instructions flush
 * subnormals to zero). The error must also exceed what float operands could give: the
 * operands were rounded to bf16 on the way in. */
static void check_bf16_product(int ta, int tb, int m, int n, int k, bp_rng *rng)
{
    size_t a_len = (size_t)m * (size_t)k, b_len = (size_t)k * (size_t)n;
    float *A = malloc(a_len * sizeof(float)), *B = malloc(b_len * sizeof(float));
    float *C = malloc((size_t)m * (size_t)n * sizeof(float));
    bp_bf16 *Ah = malloc(a_len * sizeof(bp_bf16)), *Bh = malloc(b_len * sizeof(bp_bf16));
    for (size_t i = 0; i < a_len; i++)
        A[i] = (float)(bp_rng_gaussian(rng) * (i % 7 == 0 ? 100 : 1));
    for (size_t i = 0; i < b_len; i++)
        B[i] = (float)bp_rng_gaussian(rng);
    bp__to_bf16(Ah, A, a_len);
    bp__to_bf16(Bh, B, b_len);
    int lda = ta ? m : k, ldb = tb ? k : n; /* row-major A is m x k, or k x m when ta */
    assert_int_equal(bp__gemm_bf16(ta, tb, m, n, k, Ah, lda, Bh, ldb, C, n), 0);
    double u = 0x1p-8, g = (k - 1) * 0x1p-24 / (1 - (k - 1) * 0x1p-24);
    double factor = (2 * u + u * u) * (1 + g) + g, worst = 0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double exact = 0, S = 0;
            for (int p = 0; p < k; p++) {
                double a = ta ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p];
                double b = tb ? B[(size_t)j * ldb + p] : B[(size_t)p * ldb + j];
                exact += a * b;
                S += fabs(a * b);
            }
            double err = fabs(C[(size_t)i * n + j] - exact);
            if (err > factor * S)
                fail_msg("bf16 %dx%dx%d (%d%d) at %d,%d: error %g over the bound %g", m, n, k, ta,
                         tb, i, j, err, factor * S);
            worst = fmax(worst, err / S);
        }
    assert_true(worst > 1e-4); /* f32 products would be within ~k 2^-24 */
    free(A), free(B), free(C), free(Ah), free(Bh);
}

static void test_bf16_products_within_bound(void **state)
{
    (void)state;
    char why[256];
    if (bp__bf16_check(why, sizeof(why)) < 0) {
        /* The other path, on a CPU without bf16: refused with the reason, never emulated. */
        assert_true(strstr(why, "no bf16 instructions") || strstr(why, "has no oneDNN"));
        return;
    }
    bp_rng rng;
    bp_rng_seed(&rng, 11);
    check_bf16_product(0, 1, 37, 53, 61, &rng);    /* forward: A W^T */
    check_bf16_product(1, 0, 64, 100, 128, &rng);  /* weight gradient: D^T A */
    check_bf16_product(0, 0, 128, 256, 300, &rng); /* delta back: D W */
}

/* BACKPROP_BF16=off answers as a CPU without bf16 does, so that path is tested here too. */
static void test_bf16_refused_without_instructions(void **state)
{
    (void)state;
    char why[256] = "";
    setenv("BACKPROP_BF16", "off", 1);
    assert_int_equal(bp__bf16_check(why, sizeof(why)), -1);
    unsetenv("BACKPROP_BF16");
    if (strstr(why, "has no oneDNN")) /* a build without it refuses before asking the CPU */
        return;
    assert_string_equal(why, "this CPU has no bf16 instructions (neither AVX512_BF16 nor "
                             "AMX-BF16 in cpuid): use precision = float");
}
#endif

/* Two nets of one shape, a random gradient and two velocities: for an update taken two ways
 * that must agree to the bit. */
typedef struct {
    bp_net a, b;
    bp_real *grad, *va, *vb;
    size_t n;
} update_pair;

static void pair_create(update_pair *p, const int *sizes, uint64_t seed, bp_rng *rng)
{
    make_net(&p->a, 3, sizes, BP_RELU, BP_SOFTMAX, BP_CROSS_ENTROPY);
    make_net(&p->b, 3, sizes, BP_RELU, BP_SOFTMAX, BP_CROSS_ENTROPY);
    p->n = p->a.nparams;
    p->grad = calloc(p->n, sizeof(bp_real));
    p->va = calloc(p->n, sizeof(bp_real));
    p->vb = calloc(p->n, sizeof(bp_real));
    assert_non_null(p->grad);
    assert_non_null(p->va);
    assert_non_null(p->vb);
    bp_rng_seed(rng, seed);
    for (size_t i = 0; i < p->n; i++)
        p->grad[i] = (bp_real)bp_rng_gaussian(rng);
}

static void pair_free(update_pair *p)
{
    free(p->grad);
    free(p->va);
    free(p->vb);
    bp_net_free(&p->a);
    bp_net_free(&p->b);
}

#ifdef _OPENMP
/* The update shared between threads writes exactly what one thread writes, with and
 * without momentum, for odd sizes whose slices end mid-line, at several thread counts. */
static void test_shared_update_matches_one_thread(void **state)
{
    (void)state;
    int sizes[] = {301, 257, 7}; /* 79,264 parameters: above the sharing threshold */
    update_pair p;
    bp_rng rng;
    pair_create(&p, sizes, 5, &rng);
    bp_net one = p.a, many = p.b;
    bp_real *v1 = p.va, *v2 = p.vb, *grad = p.grad;
    size_t n = p.n;
    int saved = omp_get_max_threads();
    for (int threads = 2; threads <= 5; threads++) {
        for (int momentum = 0; momentum < 2; momentum++) {
            bp_rng_seed(&rng, 9);
            bp_net_init(&one, BP_INIT_HE, 0, &rng);
            memcpy(many.params, one.params, n * sizeof(bp_real));
            memset(v1, 0, n * sizeof(bp_real));
            memset(v2, 0, n * sizeof(bp_real));
            bp_sgd opt = {
                .learning_rate = 0.3, .lambda = 5, .momentum = momentum ? 0.9 : 0, .n_train = 1000};
            for (int step = 0; step < 3; step++) {
                omp_set_num_threads(1);
                bp_sgd_step(&opt, &one, grad, v1, 16);
                omp_set_num_threads(threads);
                bp_sgd_step(&opt, &many, grad, v2, 16);
            }
            assert_memory_equal(one.params, many.params, n * sizeof(bp_real));
            assert_memory_equal(v1, v2, n * sizeof(bp_real));
            /* and the step did move every parameter block, the last biases included */
            assert_true(one.b[1][6] != 0);
        }
    }
    omp_set_num_threads(saved);
    pair_free(&p);
}
#endif

/* An update taken in pieces (the trainer applies each bucket's as its sum arrives) is the
 * update taken whole, bit for bit: ranges that cut a layer's weights, its biases, and the
 * boundary between them. */
static void test_update_in_ranges_matches_whole(void **state)
{
    (void)state;
    int sizes[] = {37, 29, 5};
    update_pair p;
    bp_rng rng;
    pair_create(&p, sizes, 3, &rng);
    bp_net whole = p.a, parts = p.b;
    bp_real *v1 = p.va, *v2 = p.vb, *grad = p.grad;
    size_t n = p.n;
    bp_net_init(&whole, BP_INIT_HE, 0, &rng);
    memcpy(parts.params, whole.params, n * sizeof(bp_real));
    bp_sgd opt = {.learning_rate = 0.3, .lambda = 5, .momentum = 0.9, .n_train = 100};
    /* from the end back, as buckets arrive: inside W[1], across W[1]/b[1], inside W[0] */
    size_t cuts[] = {n,
                     bp_net_offset_b(&whole, 1) + 2,
                     bp_net_offset_W(&whole, 1) + 17,
                     bp_net_offset_b(&whole, 0) + 1,
                     100,
                     0};
    for (int step = 0; step < 2; step++) {
        bp_sgd_step(&opt, &whole, grad, v1, 8);
        for (int c = 0; c + 1 < 6; c++)
            bp__sgd_step_range(&opt, &parts, grad, v2, 8, cuts[c + 1], cuts[c]);
    }
    assert_memory_equal(whole.params, parts.params, n * sizeof(bp_real));
    assert_memory_equal(v1, v2, n * sizeof(bp_real));
    pair_free(&p);
}

/* bp__backward_ready: each call says grad[from ..] is final, from the last layer back to 0,
 * in row blocks of bp__grad_block_rows; what it calls final is what the whole pass ends
 * with, and the whole pass is bp_backward's. A layer of 2^20 weights makes 4 blocks. */
typedef struct {
    const bp_real *grad, *final;
    size_t n, last_from;
    int calls, wrong;
} ready_log;

static void log_ready(void *ctx, size_t from)
{
    ready_log *r = ctx;
    r->wrong |= from >= r->last_from;
    r->wrong |= memcmp(r->grad + from, r->final + from, (r->n - from) * sizeof(bp_real)) != 0;
    r->last_from = from;
    r->calls++;
}

static void test_backward_reports_final_parts(void **state)
{
    (void)state;
    int sizes[] = {1024, 1024, 4};
    bp_net net;
    make_net(&net, 3, sizes, BP_RELU, BP_SOFTMAX, BP_CROSS_ENTROPY);
    bp_rng rng;
    bp_rng_seed(&rng, 4);
    bp_net_init(&net, BP_INIT_HE, 0, &rng);
    size_t rows = 3, n = net.nparams;
    bp_real *X = calloc(rows * 1024, sizeof(bp_real)), Y[12] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1};
    bp_real *final = calloc(n, sizeof(bp_real)), *grad = calloc(n, sizeof(bp_real));
    assert_non_null(X);
    assert_non_null(final);
    assert_non_null(grad);
    for (size_t i = 0; i < rows * 1024; i++)
        X[i] = (bp_real)bp_rng_gaussian(&rng);
    bp_workspace ws;
    assert_int_equal(bp_workspace_create(&ws, &net, rows), 0);
    bp_forward(&net, &ws, X, rows);
    bp_backward(&net, &ws, Y, rows, final, 0);
    bp_forward(&net, &ws, X, rows);
    ready_log r = {grad, final, n, SIZE_MAX, 0, 0};
    bp__backward_ready(&net, &ws, Y, rows, grad, 0, log_ready, &r);
    assert_false(r.wrong);
    assert_int_equal(r.last_from, 0);
    size_t blocks = 0;
    for (int l = 0; l < 2; l++) {
        size_t b = bp__grad_block_rows(&net, l);
        assert_true(b * (size_t)sizes[l] <= (size_t)1 << 18); /* a block is at most 2^18 */
        blocks += ((size_t)sizes[l + 1] + b - 1) / b;
    }
    assert_int_equal(r.calls, blocks);
    assert_true(blocks >= 5); /* 2^20 weights in layer 0: 4 blocks, and layer 1 */
    assert_memory_equal(grad, final, n * sizeof(bp_real));
    bp_workspace_free(&ws);
    free(X);
    free(final);
    free(grad);
    bp_net_free(&net);
}

/* The exchange's buckets (one rank: the sum is the buffer): in the order the backward pass
 * completes them, from the end of the buffer back to 0 without a gap, each at most
 * bucket_mb unless one row block is larger, the last one the first block alone; one bucket
 * with overlap off, or when the whole buffer fits in one. */
static void test_exchange_buckets(void **state)
{
    (void)state;
    int sizes[] = {1024, 1024, 4};
    bp_net net;
    make_net(&net, 3, sizes, BP_RELU, BP_SOFTMAX, BP_CROSS_ENTROPY);
    bp_comm one = {0, 1, 1, NULL};
    size_t n = net.nparams + 2, block = bp__grad_block_rows(&net, 0) * 1024;
    double mb = 2.5 * (double)(block * sizeof(bp_real)) / 1e6; /* two and a half blocks */
    for (int overlap = 0; overlap < 3; overlap++) {
        bp__exchange *x;
        char err[256] = "";
        double size = overlap == 2 ? (double)(n * sizeof(bp_real)) / 1e6 : mb; /* all fits */
        assert_int_equal(
            bp__exchange_create(&x, &one, &net, n, size, overlap > 0, n, 0, 0, err, sizeof(err)),
            0);
        bp_real *buf = bp__exchange_buffer(x);
        for (size_t i = 0; i < n; i++)
            buf[i] = (bp_real)i;
        bp__exchange_begin(x);
        bp__exchange_ready(x, 0);
        size_t lo, hi, expect_hi = n, count = 0;
        const bp_real *sum;
        while (bp__exchange_next(x, &lo, &hi, &sum) == 1) {
            assert_int_equal(hi, expect_hi);
            assert_true(lo < hi);
            assert_true(overlap != 1 || (double)(hi - lo) * sizeof(bp_real) <= mb * 1e6 ||
                        hi - lo <= block + 4 + 2);
            assert_true(sum[lo] == (bp_real)lo && sum[hi - 1] == (bp_real)(hi - 1));
            expect_hi = lo;
            count++;
        }
        assert_int_equal(expect_hi, 0);
        if (overlap == 1) {
            assert_int_equal(lo, 0);
            assert_int_equal(hi, block); /* the last bucket: the first block alone */
            assert_true(count >= 3);
        } else {
            assert_int_equal(count, 1);
        }
        bp__exchange_free(x);
    }
    bp_net_free(&net);
}

/* bp__gemm against a double-precision loop, on every path it takes: OpenBLAS below a
 * million multiply-adds, and in oneDNN builds the matmul primitives (NT, cached per shape)
 * and dnnl_sgemm (NN, TN) above. Leading dimensions wider than the matrices check the
 * strides; shapes repeat, in another order, to hit the primitives kept from before. */
static void test_gemm_paths_match_reference(void **state)
{
    (void)state;
    const int shapes[][3] = {{64, 256, 784}, {8, 30, 40},    {512, 10, 256},
                             {96, 256, 784}, {64, 256, 784}, {200, 300, 100}};
    const enum CBLAS_TRANSPOSE T[2] = {CblasNoTrans, CblasTrans};
    bp_rng rng;
    bp_rng_seed(&rng, 3);
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
        int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2], pad = 3;
        for (int ta = 0; ta < 2; ta++) {
            for (int tb = 0; tb < 2; tb++) {
                int ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
                int lda = ac + pad, ldb = bc + pad, ldc = n + pad;
                bp_real *A = calloc((size_t)ar * lda, sizeof(bp_real));
                bp_real *B = calloc((size_t)br * ldb, sizeof(bp_real));
                bp_real *C = calloc((size_t)m * ldc, sizeof(bp_real));
                assert_non_null(A);
                assert_non_null(B);
                assert_non_null(C);
                for (int i = 0; i < ar * lda; i++)
                    A[i] = (bp_real)bp_rng_gaussian(&rng);
                for (int i = 0; i < br * ldb; i++)
                    B[i] = (bp_real)bp_rng_gaussian(&rng);
                bp__gemm(T[ta], T[tb], m, n, k, 1, A, lda, B, ldb, 0, C, ldc);
                double worst = 0;
                for (int i = 0; i < m; i++) {
                    for (int j = 0; j < n; j++) {
                        double want = 0;
                        for (int p = 0; p < k; p++)
                            want += (double)(ta ? A[p * lda + i] : A[i * lda + p]) *
                                    (double)(tb ? B[j * ldb + p] : B[p * ldb + j]);
                        double err = fabs((double)C[i * ldc + j] - want) / sqrt((double)k);
                        worst = err > worst ? err : worst;
                    }
                }
                /* k products of unit normals summed: rounding ~ eps sqrt(k); a wrong stride
                 * or transpose is off by O(1) */
                if (getenv("GEMM_TEST_PRINT"))
                    print_message("%d %d %d %d %d: %g\n", m, n, k, ta, tb, worst);
                assert_true(worst < GEMM_TOL);
                free(A);
                free(B);
                free(C);
            }
        }
    }
}

static void test_l2_term_weights_only(void **state)
{
    (void)state;
    int sizes[] = {2, 1};
    bp_net net;
    make_net(&net, 2, sizes, BP_RELU, BP_LINEAR, BP_QUADRATIC);
    net.W[0][0] = 3, net.W[0][1] = 4, net.b[0][0] = 100;
    /* lambda/(2n) * (9 + 16) with lambda = 2, n = 5: 0.2 * 25 = 5; the bias is excluded. */
    assert_float_equal(bp_l2_term(&net, 2, 5), 5.0, 1e-12);
    bp_net_free(&net);
}

static void test_init_statistics(void **state)
{
    (void)state;
    int sizes[] = {400, 300};
    bp_net net;
    make_net(&net, 2, sizes, BP_RELU, BP_LINEAR, BP_QUADRATIC);
    const bp_init kinds[] = {BP_INIT_GAUSSIAN_SCALED, BP_INIT_UNIFORM, BP_INIT_XAVIER, BP_INIT_HE};
    /* Expected standard deviations of W: 1/sqrt(400); 0.12/sqrt(3); sqrt(6/700)/sqrt(3);
     * sqrt(2/400). */
    const double want_sd[] = {0.05, 0.12 / sqrt(3), sqrt(6.0 / 700) / sqrt(3), sqrt(2.0 / 400)};
    for (int k = 0; k < 4; k++) {
        bp_rng rng;
        bp_rng_seed(&rng, 42);
        bp_net_init(&net, kinds[k], 0.12, &rng);
        double s = 0, s2 = 0, n = 120000;
        for (size_t i = 0; i < 120000; i++)
            s += net.W[0][i], s2 += net.W[0][i] * net.W[0][i];
        double sd = sqrt(s2 / n - (s / n) * (s / n));
        assert_true(fabs(s / n) < 4 * want_sd[k] / sqrt(n));
        assert_true(fabs(sd / want_sd[k] - 1) < 0.02);
        if (kinds[k] == BP_INIT_UNIFORM)
            for (size_t i = 0; i < net.nparams; i++)
                assert_true(fabs(net.params[i]) <= 0.12);
    }
    /* Same seed, same weights: the RNG state alone determines them. */
    bp_rng a, b;
    bp_rng_seed(&a, 9);
    bp_rng_seed(&b, 9);
    bp_net_init(&net, BP_INIT_HE, 0, &a);
    uint64_t first = bp_net_checksum(&net);
    bp_net_init(&net, BP_INIT_HE, 0, &b);
    assert_true(first == bp_net_checksum(&net));
    bp_net_free(&net);
}

/* The replica check's hash: equal bytes hash equal, and one changed bit anywhere (in any
 * lane of the words, or in the tail) changes it, at every length around the word blocks. */
static void test_hash_words_sees_every_byte(void **state)
{
    (void)state;
    unsigned char a[80], b[80];
    for (size_t i = 0; i < sizeof(a); i++)
        a[i] = (unsigned char)(i * 37 + 11);
    for (size_t n = 0; n <= sizeof(a); n++) {
        memcpy(b, a, n);
        uint64_t h = bp__hash_words(a, n, 5);
        assert_true(h == bp__hash_words(b, n, 5));
        assert_true(h != bp__hash_words(a, n, 6)); /* the seed chains hashes */
        for (size_t i = 0; i < n; i++) {
            b[i] ^= 0x10;
            assert_true(h != bp__hash_words(b, n, 5));
            b[i] ^= 0x10;
        }
    }
}

/* Each learning-rate schedule at points worked out by hand. */
static void test_learning_rate_schedules(void **state)
{
    (void)state;
    bp_config c;
    memset(&c, 0, sizeof(c));
    c.learning_rate = 0.5, c.lr_step_epochs = 3, c.lr_gamma = 0.1, c.lr_min = 0.1;
    c.lr_power = 0.5;
    c.lr_schedule = BP_LR_CONSTANT;
    assert_true(bp__learning_rate(&c, 7, 123, 1000, 99) == 0.5); /* exactly: no rounding */
    c.lr_schedule = BP_LR_STEP;
    assert_float_equal(bp__learning_rate(&c, 0, 0, 100, 99), 0.5, 1e-15);
    assert_float_equal(bp__learning_rate(&c, 2, 0, 100, 99), 0.5, 1e-15);
    assert_float_equal(bp__learning_rate(&c, 3, 0, 100, 99), 0.05, 1e-15);
    assert_float_equal(bp__learning_rate(&c, 7, 0, 100, 99), 0.005, 1e-15);
    c.lr_schedule = BP_LR_COSINE; /* 0.1 + 0.4 (1 + cos(pi t/T)) / 2 */
    assert_float_equal(bp__learning_rate(&c, 0, 0, 100, 99), 0.5, 1e-15);
    assert_float_equal(bp__learning_rate(&c, 0, 25, 100, 99), 0.1 + 0.2 * (1 + sqrt(0.5)), 1e-15);
    assert_float_equal(bp__learning_rate(&c, 0, 50, 100, 99), 0.3, 1e-15);
    assert_float_equal(bp__learning_rate(&c, 0, 100, 100, 99), 0.1, 1e-15);
    c.lr_schedule = BP_LR_INVERSE_SCALING; /* 0.5 / (99 e + 1)^0.5 */
    assert_float_equal(bp__learning_rate(&c, 0, 0, 100, 99), 0.5, 1e-15);
    assert_float_equal(bp__learning_rate(&c, 1, 0, 100, 99), 0.05, 1e-15);
    assert_float_equal(bp__learning_rate(&c, 2, 0, 100, 99), 0.5 / sqrt(199), 1e-15);
}

static void test_epoch_permutation(void **state)
{
    (void)state;
    enum { N = 1000 };
    size_t p1[N], p2[N], p3[N];
    bp_epoch_permutation(5, 3, N, p1);
    bp_epoch_permutation(5, 3, N, p2);
    bp_epoch_permutation(5, 4, N, p3);
    assert_memory_equal(p1, p2, sizeof(p1));
    assert_memory_not_equal(p1, p3, sizeof(p1));
    int seen[N] = {0};
    for (int i = 0; i < N; i++)
        seen[p1[i]]++;
    for (int i = 0; i < N; i++)
        assert_int_equal(seen[i], 1);
}

/* Full-batch or per-example gradient descent through the library alone. */
static void train(bp_net *net, const bp_real *X, const bp_real *Y, size_t n, size_t batch,
                  double eta, long epochs)
{
    size_t d = (size_t)net->sizes[0], k = (size_t)net->sizes[net->nlayers];
    bp_workspace ws;
    assert_int_equal(bp_workspace_create(&ws, net, batch), 0);
    bp_real *grad = calloc(net->nparams, sizeof(bp_real));
    bp_sgd opt = {.learning_rate = eta, .lambda = 0, .n_train = (double)n};
    for (long e = 0; e < epochs; e++)
        for (size_t s = 0; s < n; s += batch) {
            size_t m = n - s < batch ? n - s : batch;
            bp_forward(net, &ws, X + s * d, m);
            bp_backward(net, &ws, Y + s * k, m, grad, 0);
            bp_sgd_step(&opt, net, grad, NULL, (double)m);
        }
    free(grad);
    bp_workspace_free(&ws);
}

static void assert_fits(bp_net *net, const bp_real *X, const bp_real *Y, size_t n, double tol)
{
    bp_workspace ws;
    assert_int_equal(bp_workspace_create(&ws, net, n), 0);
    const bp_real *out = bp_forward(net, &ws, X, n);
    for (size_t i = 0; i < n; i++)
        assert_true(fabs(out[i] - Y[i]) < tol);
    bp_workspace_free(&ws);
}

/* Seed 000: XOR with [2, 2, 2, 1], sigmoid everywhere, quadratic cost, full batch. */
/* The large products' library by CPU family (src/blas.c): oneDNN with AVX-512, OpenBLAS on
 * AVX2 alone, where oneDNN 2.6's kernels ran W3 at 0.56x; BACKPROP_GEMM overrides. */
static void test_gemm_choice_by_cpu(void **state)
{
    (void)state;
    assert_int_equal(bp__large_on_onednn(NULL, 1), 1);
    assert_int_equal(bp__large_on_onednn(NULL, 0), 0);
    assert_int_equal(bp__large_on_onednn("auto", 0), 0);
    assert_int_equal(bp__large_on_onednn("openblas", 1), 0);
    assert_int_equal(bp__large_on_onednn("onednn", 0), 1);
}

static void test_seed_xor_sigmoid(void **state)
{
    (void)state;
    const bp_real X[] = {0, 0, 0, 1, 1, 0, 1, 1}, Y[] = {0, 1, 1, 0};
    bp_net net;
    make_xor_seed_net(&net);
    train(&net, X, Y, 4, 4, 4.0, 10000);
    assert_fits(&net, X, Y, 4, 0.1);
    bp_net_free(&net);
}

/* Seed 002: inputs +-1, targets (1, 0, 0, 1), relu hidden, linear output, one example
 * per step. Two relu units solve it, but from about two thirds of random starts a unit
 * dies or both settle on the same half-plane (20 seeds tried: 6 converge at eta 0.05);
 * seed 6 is one that converges, as the seed's own run was one fixed seed. */
static void test_seed_xor_relu(void **state)
{
    (void)state;
    const bp_real X[] = {1, 1, -1, 1, 1, -1, -1, -1}, Y[] = {1, 0, 0, 1};
    int sizes[] = {2, 2, 1};
    bp_net net;
    make_net(&net, 3, sizes, BP_RELU, BP_LINEAR, BP_QUADRATIC);
    bp_rng rng;
    bp_rng_seed(&rng, 6);
    bp_net_init(&net, BP_INIT_GAUSSIAN_SCALED, 0, &rng);
    train(&net, X, Y, 4, 1, 0.05, 2000);
    assert_fits(&net, X, Y, 4, 0.1);
    bp_net_free(&net);
}

/* Seed 004: y = 4 + 3x + 0.3 N(0,1), x ~ U[0,2); a single linear unit recovers 3 and 4. */
static void test_seed_line_fit(void **state)
{
    (void)state;
    enum { N = 1000 };
    bp_real *X = malloc(N * sizeof(bp_real)), *Y = malloc(N * sizeof(bp_real));
    bp_rng rng;
    bp_rng_seed(&rng, 3);
    for (int i = 0; i < N; i++) {
        X[i] = (bp_real)(2 * bp_rng_uniform(&rng));
        Y[i] = (bp_real)(4 + 3 * X[i] + 0.3 * bp_rng_gaussian(&rng));
    }
    int sizes[] = {1, 1};
    bp_net net;
    make_net(&net, 2, sizes, BP_LINEAR, BP_LINEAR, BP_QUADRATIC);
    bp_net_init(&net, BP_INIT_GAUSSIAN_SCALED, 0, &rng);
    train(&net, X, Y, N, N, 0.5, 2000);
    assert_float_equal(net.W[0][0], 3.0, 0.1);
    assert_float_equal(net.b[0][0], 4.0, 0.1);
    free(X);
    free(Y);
    bp_net_free(&net);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_by_hand),
        cmocka_unit_test(test_softmax_by_hand),
        cmocka_unit_test(test_gradcheck_all_combinations),
        cmocka_unit_test(test_gradcheck_resolves_small_gradients),
        cmocka_unit_test(test_gradcheck_detects_a_wrong_gradient),
        cmocka_unit_test(test_rejects_invalid_nets),
        cmocka_unit_test(test_saturated_outputs_stay_finite),
        cmocka_unit_test(test_gemm_paths_match_reference),
        cmocka_unit_test(test_sgd_step_matches_formula),
        cmocka_unit_test(test_adam_step_by_hand),
        cmocka_unit_test(test_adam_reports_overflowing_moments),
        cmocka_unit_test(test_lbfgs_zoom_by_hand),
        cmocka_unit_test(test_lbfgs_direction_by_hand),
        cmocka_unit_test(test_lbfgs_gives_up),
#ifndef BACKPROP_DOUBLE
        cmocka_unit_test(test_bf16_rounding),
        cmocka_unit_test(test_bf16_products_within_bound),
        cmocka_unit_test(test_bf16_refused_without_instructions),
#endif
        cmocka_unit_test(test_update_in_ranges_matches_whole),
        cmocka_unit_test(test_backward_reports_final_parts),
        cmocka_unit_test(test_exchange_buckets),
#ifdef _OPENMP
        cmocka_unit_test(test_shared_update_matches_one_thread),
#endif
        cmocka_unit_test(test_l2_term_weights_only),
        cmocka_unit_test(test_init_statistics),
        cmocka_unit_test(test_epoch_permutation),
        cmocka_unit_test(test_hash_words_sees_every_byte),
        cmocka_unit_test(test_learning_rate_schedules),
        cmocka_unit_test(test_gemm_choice_by_cpu),
        cmocka_unit_test(test_seed_xor_sigmoid),
        cmocka_unit_test(test_seed_xor_relu),
        cmocka_unit_test(test_seed_line_fit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
