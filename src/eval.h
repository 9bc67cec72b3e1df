/* Evaluation over a set in row order (src/eval.c): what the trainer's epochs, eval, predict
 * and plot share. */
#ifndef BACKPROP_EVAL_INTERNAL_H
#define BACKPROP_EVAL_INTERNAL_H

#include "backprop/data.h"
#include "backprop/eval.h"
#include "comm.h"
#include "source.h"

/* Rows a forward pass of an evaluation takes at a time: bounds a workspace, not a result.
 * The trainer sizes its workspace for it too. */
#define BP__EVAL_ROWS 256

/* Collective: sums over this rank's shard of a set of ds->n rows, read a workspace of rows
 * at a time (ws->max_rows) by read(ctx, ...), or from ds's own rows when read is NULL:
 * out[0] cost, out[1] correct, out[2] examples, out[3] ranks that could not read their
 * rows, then k*k confusion counts (true class row, predicted column) when confusion is
 * set; summed across ranks. out has BP__EVAL_OUT + k*k entries when confusion, else
 * BP__EVAL_OUT. Returns 0, BP_ECOMM, or the code of this rank's failed read (with err); a
 * rank that could not read still joins the sum, so out[3] > 0 tells every rank. */
enum { BP__EVAL_OUT = 4 };
int bp__evaluate(const bp_net *net, bp_workspace *ws, const bp_dataset *ds, bp_rows_fn read,
                 void *ctx, const bp_comm *comm, int confusion, double *out, char *err,
                 size_t errlen);

/* The same sums (no confusion) under reproducible = any_scale: the set cut into chunks of
 * BP__EVAL_ROWS rows at fixed places, each one forward pass (ws->max_rows >= BP__EVAL_ROWS),
 * ranks taking whole chunks, each chunk's cost rounded to fixed point (src/fixed.h) and
 * every sum an exact int64 one: the same bits at any rank count. */
int bp__evaluate_exact(const bp_net *net, bp_workspace *ws, const bp_dataset *ds, bp_rows_fn read,
                       void *ctx, const bp_comm *comm, double *out, char *err, size_t errlen);

#endif
