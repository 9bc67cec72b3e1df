/* Activations, their derivatives, and the costs: the element-wise parts of the network. */
#include <math.h>
#include <string.h>

#include "activation.h"

static const char *const activation_names[] = {"sigmoid", "relu", "tanh", "linear", "softmax"};
static const char *const cost_names[] = {"quadratic", "cross_entropy"};
static const char *const init_names[] = {"gaussian_scaled", "uniform", "xavier", "he"};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static int lookup(const char *s, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s, names[i]) == 0)
            return (int)i;
    return -1;
}

const char *bp_activation_name(bp_activation a)
{
    return (unsigned)a < COUNT(activation_names) ? activation_names[a] : "?";
}

const char *bp_cost_name(bp_cost c)
{
    return (unsigned)c < COUNT(cost_names) ? cost_names[c] : "?";
}

const char *bp_init_name(bp_init i)
{
    return (unsigned)i < COUNT(init_names) ? init_names[i] : "?";
}

int bp_activation_parse(const char *s, bp_activation *out)
{
    int i = lookup(s, activation_names, COUNT(activation_names));
    if (i < 0)
        return BP_EINVAL;
    *out = (bp_activation)i;
    return 0;
}

int bp_cost_parse(const char *s, bp_cost *out)
{
    int i = lookup(s, cost_names, COUNT(cost_names));
    if (i < 0)
        return BP_EINVAL;
    *out = (bp_cost)i;
    return 0;
}

int bp_init_parse(const char *s, bp_init *out)
{
    int i = lookup(s, init_names, COUNT(init_names));
    if (i < 0)
        return BP_EINVAL;
    *out = (bp_init)i;
    return 0;
}

/* Z is (rows, cols): Z += b on every row (Z keeps the pre-activation), then A = f(Z).
 * A may alias Z, which is how hidden layers run in place. One pass per row. */
BP__VECTORIZE void bp__bias_activate(bp_activation f, bp_real *Z, const bp_real *b, bp_real *A,
                                     size_t rows, size_t cols)
{
    for (size_t r = 0; r < rows; r++) {
        bp_real *z = Z + r * cols;
        bp_real *a = A + r * cols;
        for (size_t j = 0; j < cols; j++)
            z[j] += b[j];
        switch (f) {
        case BP_SIGMOID:
            /* exp overflows to inf for very negative z, giving exactly 0: no NaN. */
            for (size_t j = 0; j < cols; j++)
                a[j] = (bp_real)1 / ((bp_real)1 + BP__EXP(-z[j]));
            break;
        case BP_RELU:
            for (size_t j = 0; j < cols; j++)
                a[j] = z[j] > 0 ? z[j] : 0;
            break;
        case BP_TANH:
            for (size_t j = 0; j < cols; j++)
                a[j] = BP__TANH(z[j]);
            break;
        case BP_LINEAR:
            if (a != z)
                memcpy(a, z, cols * sizeof(bp_real));
            break;
        case BP_SOFTMAX: {
            bp_real max = z[0], sum = 0;
            for (size_t j = 1; j < cols; j++)
                max = z[j] > max ? z[j] : max;
            for (size_t j = 0; j < cols; j++) {
                a[j] = BP__EXP(z[j] - max);
                sum += a[j];
            }
            for (size_t j = 0; j < cols; j++)
                a[j] /= sum;
            break;
        }
        }
    }
}

/* D *= f'(z), with f' written in terms of the activation a = f(z). A, D are (n) flat. */
BP__VECTORIZE void bp__mul_derivative(bp_activation f, const bp_real *A, bp_real *D, size_t n)
{
    switch (f) {
    case BP_SIGMOID:
        for (size_t i = 0; i < n; i++)
            D[i] *= A[i] * ((bp_real)1 - A[i]);
        break;
    case BP_RELU:
        /* The kink at 0 takes derivative 0, as PyTorch does. */
        for (size_t i = 0; i < n; i++)
            D[i] = A[i] > 0 ? D[i] : 0;
        break;
    case BP_TANH:
        for (size_t i = 0; i < n; i++)
            D[i] *= (bp_real)1 - A[i] * A[i];
        break;
    case BP_LINEAR:
    case BP_SOFTMAX: /* softmax is never a hidden activation */
        break;
    }
}

double bp__softplus(double x)
{
    return (x > 0 ? x : 0) + log1p(exp(-fabs(x)));
}

double bp__cost_rows(bp_activation out, bp_cost cost, const bp_real *A, const bp_real *Z,
                     const bp_real *Y, size_t rows, size_t k)
{
    double total = 0;
    for (size_t r = 0; r < rows; r++) {
        const bp_real *a = A + r * k, *z = Z + r * k, *y = Y + r * k;
        if (cost == BP_QUADRATIC) {
            for (size_t j = 0; j < k; j++) {
                double d = (double)a[j] - (double)y[j];
                total += 0.5 * d * d;
            }
        } else if (out == BP_SOFTMAX) {
            /* -sum y (z - logsumexp z): finite for any z. */
            double max = z[0];
            for (size_t j = 1; j < k; j++)
                max = z[j] > max ? z[j] : max;
            double sum = 0;
            for (size_t j = 0; j < k; j++)
                sum += exp((double)z[j] - max);
            double lse = max + log(sum);
            for (size_t j = 0; j < k; j++)
                if (y[j] != 0)
                    total -= (double)y[j] * ((double)z[j] - lse);
        } else {
            /* -y log s(z) - (1-y) log(1 - s(z)) = y softplus(-z) + (1-y) softplus(z). */
            for (size_t j = 0; j < k; j++)
                total += (double)y[j] * bp__softplus(-(double)z[j]) +
                         (1.0 - (double)y[j]) * bp__softplus((double)z[j]);
        }
    }
    return total;
}

BP__VECTORIZE void bp__output_delta(bp_activation out, bp_cost cost, const bp_real *A,
                                    const bp_real *Y, bp_real *D, size_t rows, size_t k)
{
    size_t n = rows * k;
    for (size_t i = 0; i < n; i++)
        D[i] = A[i] - Y[i];
    /* Sigmoid or softmax with cross-entropy: the derivative cancels, delta = a - y. */
    if (cost == BP_CROSS_ENTROPY || out == BP_LINEAR)
        return;
    if (out == BP_SIGMOID) {
        bp__mul_derivative(BP_SIGMOID, A, D, n);
        return;
    }
    /* Softmax with the quadratic cost: delta_j = a_j (g_j - sum_i g_i a_i), g = a - y. */
    for (size_t r = 0; r < rows; r++) {
        const bp_real *a = A + r * k;
        bp_real *d = D + r * k;
        bp_real dot = 0;
        for (size_t j = 0; j < k; j++)
            dot += d[j] * a[j];
        for (size_t j = 0; j < k; j++)
            d[j] = a[j] * (d[j] - dot);
    }
}
