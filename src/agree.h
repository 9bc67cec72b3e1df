/* Agreement across ranks (src/agree.c): the one way a rank's outcome becomes every rank's,
 * and the checks that every rank runs rank 0's config, data and weights. */
#ifndef BACKPROP_AGREE_H
#define BACKPROP_AGREE_H

#include <stddef.h>
#include <stdint.h>

#include "backprop/backprop.h"
#include "backprop/config.h"
#include "backprop/data.h"
#include "comm.h"
#include "source.h" /* bp_rows_fn */

/* Collective: every rank's outcome becomes everyone's, the worst code, reported by one rank.
 * Returns the agreed code; err is kept only on the rank that reports it (among those with
 * the worst code, one that has a message, the lowest), and emptied on the others. */
int bp__agree(const bp_comm *comm, int rc, char *err, size_t errlen);

/* Collective: 1 when this rank's `bytes` of mine differ from rank 0's, which land in rank0;
 * 0 when they are the same (every rank's, when all are: then rank0 is untouched), or
 * BP_ECOMM. */
int bp__differs_from_rank0(const bp_comm *comm, const void *mine, void *rank0, size_t bytes);

/* The network and the weights it holds, whatever the checkpoint it came from is called;
 * with the velocity when there is one. */
uint64_t bp__net_hash(const bp_net *net, const bp_real *velocity);

/* Collective, before any collective that depends on the config: every rank's effective
 * config is rank 0's, but for the keys that may differ between ranks (file paths, whose
 * files are compared by their contents instead; threads; progress). 0, or BP_EMISMATCH on
 * every rank, with err on the lowest rank that differs naming its first differing key and
 * both values. */
int bp__config_agree(const bp_comm *comm, const bp_config *cfg, char *err, size_t errlen);

/* Collective: the same for any text of "KEY = VALUE\n" lines, mine (NULL: out of memory), a
 * command's own options: `what` names them in the message ("command line"), `hint` says
 * what to check. 0, or BP_EMISMATCH (BP_ENOMEM) on every rank, err on the one that
 * reports. */
int bp__lines_agree(const bp_comm *comm, const char *mine, const char *what, const char *hint,
                    char *err, size_t errlen);

/* Collective: every rank's ds has rank 0's shape and values, whatever its file (path) is
 * called: every value when they are in memory, else the labels and 64 rows spread over the
 * set, read through read(ctx, ...). name says which set ("[data] train"). 0, or
 * BP_EMISMATCH (or a failed read's code) on every rank, err on the one that reports. */
int bp__data_agree(const bp_comm *comm, const bp_dataset *ds, bp_rows_fn read, void *ctx,
                   const char *name, const char *path, char *err, size_t errlen);

/* Collective: every rank's net has rank 0's layers and weights (one checkpoint read under
 * different names, path on this rank). 0, or BP_EMISMATCH on every rank. */
int bp__weights_agree(const bp_comm *comm, const bp_net *net, const char *path, char *err,
                      size_t errlen);

#endif
