/* Element-wise parts of the network: activations, derivatives, costs, output deltas. */
#ifndef BACKPROP_ACTIVATION_H
#define BACKPROP_ACTIVATION_H

#include "internal.h"

/* Z += b row by row, then A = f(Z); Z, A are (rows, cols), b is (cols); A may alias Z. */
void bp__bias_activate(bp_activation f, bp_real *Z, const bp_real *b, bp_real *A, size_t rows,
                       size_t cols);

/* D *= f'(z) for n elements, with f' computed from the activations A = f(z). */
void bp__mul_derivative(bp_activation f, const bp_real *A, bp_real *D, size_t n);

/* Sum of per-example costs; A, Z, Y are (rows, k). Accumulated in double. */
double bp__cost_rows(bp_activation out, bp_cost cost, const bp_real *A, const bp_real *Z,
                     const bp_real *Y, size_t rows, size_t k);

/* dC/dz of the output layer, (rows, k). */
void bp__output_delta(bp_activation out, bp_cost cost, const bp_real *A, const bp_real *Y,
                      bp_real *D, size_t rows, size_t k);

#endif
