/* libbackprop: fully-connected networks trained by backpropagation.
 *
 * Conventions: matrices are row-major; a mini-batch is (m, d) with one example per row;
 * a weight matrix is (out, in). Functions return 0 or a negative BP_E* code and leave
 * their outputs unchanged on error unless documented otherwise. */
#ifndef BACKPROP_BACKPROP_H
#define BACKPROP_BACKPROP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifdef BACKPROP_DOUBLE
typedef double bp_real;
#define BP_SCALAR_NAME "double"
#else
typedef float bp_real;
#define BP_SCALAR_NAME "float"
#endif

#define BP_VERSION "1.0.0"

enum {
    BP_OK = 0,
    BP_ENOMEM = -1,    /* allocation failed */
    BP_EINVAL = -2,    /* invalid argument or value */
    BP_EIO = -3,       /* file could not be read or written */
    BP_EFORMAT = -4,   /* file exists but its content is not what was expected */
    BP_EMISMATCH = -5, /* a checkpoint or data set does not fit the network */
    BP_EDIVERGED = -6, /* cost or parameters became NaN or infinite */
    BP_ECOMM = -7,     /* a collective operation failed or replicas disagree */
    BP_ESTOPPED = -8,  /* stopped on request (bp_request_stop), after a checkpoint */
    BP_EEXIST = -9,    /* an output exists that is replaced only when the caller says so (a
                        * file, a run in a run directory) */
    BP_ENOENT = -10,   /* what was asked to continue from does not exist (no latest.h5) */
};

/* Text for a BP_E* code; never NULL. */
const char *bp_strerror(int code);

typedef enum { BP_SIGMOID, BP_RELU, BP_TANH, BP_LINEAR, BP_SOFTMAX } bp_activation;
typedef enum { BP_QUADRATIC, BP_CROSS_ENTROPY } bp_cost;
typedef enum { BP_INIT_GAUSSIAN_SCALED, BP_INIT_UNIFORM, BP_INIT_XAVIER, BP_INIT_HE } bp_init;

/* Names as used in configs and checkpoints ("relu", "cross_entropy", ...). The parsers
 * return 0 and set *out, or BP_EINVAL for an unknown name. */
const char *bp_activation_name(bp_activation a);
const char *bp_cost_name(bp_cost c);
const char *bp_init_name(bp_init i);
int bp_activation_parse(const char *s, bp_activation *out);
int bp_cost_parse(const char *s, bp_cost *out);
int bp_init_parse(const char *s, bp_init *out);

/* ---- random numbers: xoshiro256**, whole state in four integers ---- */
typedef struct {
    uint64_t s[4];
} bp_rng;

void bp_rng_seed(bp_rng *rng, uint64_t seed);
uint64_t bp_rng_next(bp_rng *rng);
double bp_rng_uniform(bp_rng *rng);  /* [0, 1) */
double bp_rng_gaussian(bp_rng *rng); /* N(0, 1) */
/* The order of the n training examples in epoch `epoch`: a permutation derived from
 * (seed, epoch) alone, so every rank and every resumed run computes the same one. */
void bp_epoch_permutation(uint64_t seed, long epoch, size_t n, size_t *perm);

/* ---- the network ---- */
typedef struct {
    int nlayers; /* weight layers; sizes has nlayers + 1 entries */
    int *sizes;
    bp_activation hidden, output;
    bp_cost cost;
    size_t nparams;  /* all weights and biases */
    bp_real *params; /* ONE allocation: W0, b0, W1, b1, ... */
    bp_real **W;     /* W[l] is (sizes[l+1], sizes[l]), a view into params */
    bp_real **b;     /* b[l] is (sizes[l+1]) */
} bp_net;

/* Checks that the combination is one the library can train: at least two sizes, all
 * positive, hidden not softmax, and no cross-entropy on a linear output (its log terms
 * are undefined). Returns 0 or BP_EINVAL and writes a reason to why (may be NULL). */
int bp_net_validate(int nsizes, const int *sizes, bp_activation hidden, bp_activation output,
                    bp_cost cost, char *why, size_t whylen);

/* Builds a zeroed network. On error returns BP_EINVAL or BP_ENOMEM and *net is zeroed. */
int bp_net_create(bp_net *net, int nsizes, const int *sizes, bp_activation hidden,
                  bp_activation output, bp_cost cost);
void bp_net_free(bp_net *net);

/* Offsets of layer l's W and b inside a params-shaped buffer. */
size_t bp_net_offset_W(const bp_net *net, int l);
size_t bp_net_offset_b(const bp_net *net, int l);

/* Fills the parameters. gaussian_scaled: W ~ N(0,1)/sqrt(fan_in), b ~ N(0,1);
 * uniform: W, b ~ U(-epsilon, epsilon); xavier: W ~ U(+-sqrt(6/(fan_in+fan_out))), b = 0;
 * he: W ~ N(0,1)*sqrt(2/fan_in), b = 0. */
void bp_net_init(bp_net *net, bp_init init, double epsilon, bp_rng *rng);

/* Per-batch scratch memory: activations, deltas, targets, for up to max_rows examples. */
typedef struct {
    size_t max_rows;
    bp_real **A;    /* A[0] points at the last input, A[l+1] is the output of layer l */
    bp_real *Z_out; /* output layer pre-activations (rows, k), for finite log terms */
    bp_real **D;    /* D[l]: dC/dz of layer l, (rows, sizes[l+1]) */
    bp_real *ones;  /* max_rows ones, for bias gradients as a gemv */
    bp_real *mem;
    void *bf16; /* the library's: bf16 operands under [train] precision = bf16, else NULL */
} bp_workspace;

int bp_workspace_create(bp_workspace *ws, const bp_net *net, size_t max_rows);
void bp_workspace_free(bp_workspace *ws);

/* Forward pass over X (rows, sizes[0]); returns the output activations (rows, k), a view
 * into ws valid until the next call. rows <= ws->max_rows. */
const bp_real *bp_forward(const bp_net *net, bp_workspace *ws, const bp_real *X, size_t rows);

/* Sum over the rows of the per-example data cost of the last forward pass against the
 * targets Y (rows, k). Quadratic: 1/2 ||a - y||^2. Cross-entropy: per-unit binary
 * cross-entropy for sigmoid outputs, -sum y log a for softmax. Computed from the
 * pre-activations, so it stays finite however saturated the outputs are. */
double bp_cost_sum(const bp_net *net, const bp_workspace *ws, const bp_real *Y, size_t rows);

/* Number of rows whose largest output sits at the label's index. */
size_t bp_count_correct(const bp_net *net, const bp_workspace *ws, const int *labels, size_t rows);

/* Backward pass after bp_forward on the same rows: the summed gradients of the data cost
 * over the rows, written into grad (a params-shaped buffer), or added to it when
 * accumulate is set. No L2 term here. */
void bp_backward(const bp_net *net, bp_workspace *ws, const bp_real *Y, size_t rows, bp_real *grad,
                 int accumulate);

/* The L2 term lambda/(2n) * sum of squared weights (biases excluded). */
double bp_l2_term(const bp_net *net, double lambda, double n);

/* ---- the update ---- */
typedef struct {
    double learning_rate; /* eta */
    double lambda;        /* L2 strength */
    double momentum;      /* mu; 0 = plain SGD */
    double n_train;       /* n in lambda/n: size of the training set */
} bp_sgd;

/* Applies one step from the gradient sum grad over m examples:
 * plain:    W <- (1 - eta*lambda/n) W - (eta/m) dW,   b <- b - (eta/m) db
 * momentum: v <- mu v - eta (dW/m + lambda/n W),  W <- W + v  (biases without the L2 part)
 * velocity is params-shaped (may be NULL when momentum is 0). Allocates nothing. */
void bp_sgd_step(const bp_sgd *opt, bp_net *net, const bp_real *grad, bp_real *velocity, double m);

/* ---- gradient checking ---- */
typedef struct {
    double rel_error;     /* ||g - n|| / max(||g||, ||n||) over the checked entries */
    double max_rel_error; /* worst single entry, bp_relative_error(g_i, n_i) */
    double max_abs_grad;  /* largest analytic gradient seen: guards against all zeros */
    size_t checked;
    size_t kinks; /* entries skipped: their +-epsilon moved a relu across its kink */
} bp_gradcheck_layer;

/* Compares the analytic gradient of J = mean data cost over the m rows of (X, Y) plus
 * lambda/(2n) sum W^2 against centred differences (J(p+e) - J(p-e)) / 2e, where J is
 * evaluated in double whatever the build (a reference forward pass by plain loops: in
 * float, J's rounding over 2e would swamp gradients below ~1e-3). analytic is that
 * gradient, params-shaped, or NULL to compute it here with bp_backward. Checks every
 * parameter of a layer when it has at most max_per_layer of them, else an evenly spaced
 * subset of that many. An entry whose +-epsilon switches a relu unit on or off is skipped
 * (counted in kinks): the difference then straddles the kink and measures nothing.
 * result has net->nlayers entries. Returns 0, or BP_ENOMEM. The parameters are not
 * touched. */
int bp_gradcheck(bp_net *net, const bp_real *X, const bp_real *Y, size_t m, double lambda, double n,
                 double epsilon, size_t max_per_layer, const bp_real *analytic,
                 bp_gradcheck_layer *result);

/* The mean data cost over the m rows plus the L2 term: the J that bp_gradcheck
 * differences (which evaluates it in double), here in the build's precision. */
double bp_objective(const bp_net *net, bp_workspace *ws, const bp_real *X, const bp_real *Y,
                    size_t m, double lambda, double n);

/* Relative error |a - b| / max(|a|, |b|), or |a - b| when both are below 1e-10. */
double bp_relative_error(double a, double b);

/* FNV-1a hash of the parameters' bytes, to compare replicas across ranks. */
uint64_t bp_net_checksum(const bp_net *net);

#ifdef __cplusplus
}
#endif

#endif
