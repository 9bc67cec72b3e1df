/* The flight recorder: every rank keeps the phases of its last steps (its rows, forward,
 * backward, each bucket's exchange, the update, collectives, checkpoints) in a ring of
 * fixed size, always on, and writes them as a Chrome trace-event JSON (Perfetto,
 * chrome://tracing) at the end of a run, on a stop, and when the watchdog fires
 * (docs/running.md, "Traces").
 *
 * A ring is a header and `capacity` events, in memory the node's ranks share (src/comm.c
 * maps it): a rank's watchdog that fires reads the rings of all its node's ranks, the one
 * that stopped included. Each rank writes its own ring only, from any of its threads;
 * readers check each event's number before and after copying it, so an event being
 * rewritten is left out rather than read half-new. */
#ifndef BACKPROP_RECORDER_H
#define BACKPROP_RECORDER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum {
    BP__REC_DATA,       /* the step's rows, copied or read */
    BP__REC_FORWARD,    /* the forward pass and the cost */
    BP__REC_DELTAS,     /* any_scale: the deltas of the micro-shards */
    BP__REC_BACKWARD,   /* the backward pass (the weight gradients) */
    BP__REC_BUCKET,     /* a bucket's exchange, from its posting to its sum's arrival */
    BP__REC_CROSS,      /* a bucket's sum across nodes (on the exchange's thread, if any) */
    BP__REC_UPDATE,     /* the update of a bucket's parameters */
    BP__REC_COLLECTIVE, /* a collective of the comm layer, by the watchdog's name of it */
    BP__REC_EVALUATION, /* the validation and test sets' evaluation */
    BP__REC_CKPT_COPY,  /* the checkpoint's copy of the state, on the trainer's thread */
    BP__REC_CKPT_WRITE, /* the checkpoint's write, in the background */
    BP__REC_WAIT,       /* waiting for the node's ranks in the exchange (inside backward) */
    BP__REC_KINDS
};

#define BP__REC_NAME 44

typedef struct {
    _Atomic uint64_t seq;  /* 1 + the event's number in its ring; 0 while written */
    _Atomic int64_t t1_ns; /* its end (CLOCK_MONOTONIC); 0 while it lasts */
    _Atomic int64_t t0_ns; /* its start */
    _Atomic int64_t step;  /* the global step being computed */
    _Atomic uint16_t kind, arg;
    char name[BP__REC_NAME]; /* BP__REC_COLLECTIVE: what; else empty */
} bp__rec_event;

typedef struct bp__rec {
    uint32_t magic, capacity;
    int32_t rank; /* the comm's rank that writes it */
    uint32_t pad;
    char host[72];
    _Atomic uint64_t head; /* events begun */
    _Atomic int64_t step;  /* the step events are tagged with */
    char line_pad[256 - 104];
    bp__rec_event ev[];
} bp__rec;

_Static_assert(sizeof(bp__rec) == 256, "a ring's header is 256 bytes");

/* Bytes of a ring of capacity events. */
size_t bp__rec_bytes(size_t capacity);

/* A ring at r (bp__rec_bytes(capacity) bytes), empty, of rank on host. */
void bp__rec_init(bp__rec *r, size_t capacity, int rank, const char *host);

/* The step the next events belong to. */
static inline void bp__rec_set_step(bp__rec *r, int64_t step)
{
    if (r)
        atomic_store_explicit(&r->step, step, memory_order_relaxed);
}

/* An event begins now: its number, for bp__rec_end; -1 when r is NULL (the recorder off).
 * name: BP__REC_COLLECTIVE's words (copied, cut to fit), else NULL. */
int64_t bp__rec_begin(bp__rec *r, int kind, int arg, const char *name);

/* Event `id` ends now (nothing if it was overwritten meanwhile, or id is -1). */
void bp__rec_end(bp__rec *r, int64_t id);

/* A copy of r's events, oldest first, into out (room for r->capacity): those whole at the
 * time of the copy. Returns how many. */
size_t bp__rec_copy(const bp__rec *r, bp__rec_event *out);

/* One rank's events as a trace shows them: the ring's copy, its rank and host, and what
 * to add to its clock to reach the writer's. */
typedef struct {
    int rank;
    const char *host;
    const bp__rec_event *ev;
    size_t n;
    int64_t offset_ns;
} bp__rec_view;

/* What a trace says of itself. */
typedef struct {
    const char *written; /* "end", "stop", "watchdog" */
    const char *version;
    long steps;     /* N: the last steps it holds at most */
    int ranks;      /* the job's */
    int64_t now_ns; /* when it is written, on the writer's clock: unfinished events end
                       there */
} bp__rec_about;

/* The Chrome trace-event JSON of the views' events of their last about->steps steps into
 * f (docs/running.md has its layout). 0, or -1 when f failed. */
int bp__rec_write_json(FILE *f, const bp__rec_view *v, int n, const bp__rec_about *about);

/* The time events carry: CLOCK_MONOTONIC in nanoseconds. */
int64_t bp__rec_now(void);

#endif
