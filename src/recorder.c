/* The flight recorder's rings and its trace file (src/recorder.h). */
#include <string.h>
#include <time.h>

#include "comm.h"
#include "recorder.h"

#define RING_MAGIC 0x52464250u /* "PBFR" */

int64_t bp__rec_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

size_t bp__rec_bytes(size_t capacity)
{
    return sizeof(bp__rec) + capacity * sizeof(bp__rec_event);
}

void bp__rec_init(bp__rec *r, size_t capacity, int rank, const char *host)
{
    memset(r, 0, bp__rec_bytes(capacity));
    r->magic = RING_MAGIC;
    r->capacity = (uint32_t)capacity;
    r->rank = rank;
    snprintf(r->host, sizeof(r->host), "%s", host ? host : "");
}

int64_t bp__rec_begin(bp__rec *r, int kind, int arg, const char *name)
{
    if (!r)
        return -1;
    uint64_t id = atomic_fetch_add_explicit(&r->head, 1, memory_order_relaxed);
    bp__rec_event *e = &r->ev[id % r->capacity];
    /* Readers skip it until its number says it is whole again. */
    atomic_store_explicit(&e->seq, 0, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&e->t1_ns, 0, memory_order_relaxed);
    atomic_store_explicit(&e->step, atomic_load_explicit(&r->step, memory_order_relaxed),
                          memory_order_relaxed);
    atomic_store_explicit(&e->kind, (uint16_t)kind, memory_order_relaxed);
    atomic_store_explicit(&e->arg,
                          (uint16_t)(arg < 0       ? 0
                                     : arg > 65535 ? 65535
                                                   : arg),
                          memory_order_relaxed);
    if (name) {
        size_t len = strnlen(name, BP__REC_NAME - 1);
        memcpy(e->name, name, len);
        e->name[len] = 0;
    } else {
        e->name[0] = 0;
    }
    atomic_store_explicit(&e->t0_ns, bp__rec_now(), memory_order_relaxed);
    atomic_store_explicit(&e->seq, id + 1, memory_order_release);
    return (int64_t)id;
}

void bp__rec_end(bp__rec *r, int64_t id)
{
    if (!r || id < 0)
        return;
    bp__rec_event *e = &r->ev[(uint64_t)id % r->capacity];
    if (atomic_load_explicit(&e->seq, memory_order_acquire) == (uint64_t)id + 1)
        atomic_store_explicit(&e->t1_ns, bp__rec_now(), memory_order_relaxed);
}

size_t bp__rec_copy(const bp__rec *r, bp__rec_event *out)
{
    uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
    uint64_t from = head > r->capacity ? head - r->capacity : 0;
    size_t n = 0;
    for (uint64_t id = from; id < head; id++) {
        const bp__rec_event *e = &r->ev[id % r->capacity];
        bp__rec_event *o = &out[n];
        uint64_t seq = atomic_load_explicit(&e->seq, memory_order_acquire);
        atomic_store_explicit(&o->t1_ns, atomic_load_explicit(&e->t1_ns, memory_order_relaxed),
                              memory_order_relaxed);
        atomic_store_explicit(&o->t0_ns, atomic_load_explicit(&e->t0_ns, memory_order_relaxed),
                              memory_order_relaxed);
        atomic_store_explicit(&o->step, atomic_load_explicit(&e->step, memory_order_relaxed),
                              memory_order_relaxed);
        atomic_store_explicit(&o->kind, atomic_load_explicit(&e->kind, memory_order_relaxed),
                              memory_order_relaxed);
        atomic_store_explicit(&o->arg, atomic_load_explicit(&e->arg, memory_order_relaxed),
                              memory_order_relaxed);
        memcpy(o->name, e->name, sizeof(o->name));
        o->name[BP__REC_NAME - 1] = 0;
        atomic_thread_fence(memory_order_acquire);
        /* Whole only if no writer took the slot while it was copied. */
        if (seq == id + 1 && atomic_load_explicit(&e->seq, memory_order_relaxed) == seq &&
            atomic_load_explicit(&o->kind, memory_order_relaxed) < BP__REC_KINDS) {
            atomic_store_explicit(&o->seq, seq, memory_order_relaxed);
            n++;
        }
    }
    return n;
}

/* ---- the trace file ---- */

static const struct {
    const char *name, *cat;
    int tid;
} kinds[BP__REC_KINDS] = {
    [BP__REC_DATA] = {"data", "data", 0},
    [BP__REC_FORWARD] = {"forward", "compute", 0},
    [BP__REC_DELTAS] = {"deltas", "compute", 0},
    [BP__REC_BACKWARD] = {"backward", "compute", 0},
    [BP__REC_BUCKET] = {"exchange bucket", "exchange", 0},
    [BP__REC_CROSS] = {"cross-node sum, bucket", "exchange", 1},
    [BP__REC_UPDATE] = {"update", "update", 0},
    [BP__REC_COLLECTIVE] = {"a collective", "collective", 0},
    [BP__REC_EVALUATION] = {"evaluation", "evaluation", 0},
    [BP__REC_CKPT_COPY] = {"checkpoint copy", "checkpoint", 0},
    [BP__REC_CKPT_WRITE] = {"checkpoint write", "checkpoint", 2},
    [BP__REC_WAIT] = {"waiting for the node's ranks", "exchange", 0},
};

static int64_t load64(const _Atomic int64_t *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

/* An event's name, as the trace shows it. */
static void event_name(const bp__rec_event *e, char *buf, size_t len)
{
    int kind = atomic_load_explicit(&e->kind, memory_order_relaxed);
    int arg = atomic_load_explicit(&e->arg, memory_order_relaxed);
    if (kind == BP__REC_COLLECTIVE && e->name[0])
        snprintf(buf, len, "%s", e->name);
    else if (kind == BP__REC_BUCKET || kind == BP__REC_CROSS)
        snprintf(buf, len, "%s %d", kinds[kind].name, arg);
    else
        snprintf(buf, len, "%s", kinds[kind].name);
}

/* The last step any view holds, and the first of the `steps` kept. */
static int64_t first_kept(const bp__rec_view *v, int n, long steps, int64_t *last)
{
    *last = INT64_MIN;
    for (int i = 0; i < n; i++)
        for (size_t j = 0; j < v[i].n; j++)
            if (load64(&v[i].ev[j].step) > *last)
                *last = load64(&v[i].ev[j].step);
    return *last == INT64_MIN ? 0 : *last - steps + 1;
}

static void write_event(FILE *f, const bp__rec_view *v, const bp__rec_event *e, int64_t base,
                        int *first)
{
    char name[BP__REC_NAME + 32];
    event_name(e, name, sizeof(name));
    int kind = atomic_load_explicit(&e->kind, memory_order_relaxed);
    long long step = (long long)load64(&e->step);
    int64_t t0 = load64(&e->t0_ns) + v->offset_ns, t1 = load64(&e->t1_ns);
    double ts = (double)(t0 - base) / 1e3;
    int done = t1 != 0, async = kind == BP__REC_BUCKET;
    fprintf(f, "%s\n{\"ph\":\"%s\",\"name\":", *first ? "" : ",", async ? "b" : done ? "X" : "B");
    *first = 0;
    bp__print_json_string(f, name);
    fprintf(f, ",\"cat\":\"%s\",\"pid\":%d,\"tid\":%d,\"ts\":%.3f", kinds[kind].cat, v->rank,
            kinds[kind].tid, ts);
    if (async)
        fprintf(f, ",\"id\":\"%d.%lld.%d\"", v->rank, step,
                atomic_load_explicit(&e->arg, memory_order_relaxed));
    if (done && !async)
        fprintf(f, ",\"dur\":%.3f", (double)(t1 + v->offset_ns - t0) / 1e3);
    fprintf(f, ",\"args\":{\"step\":%lld", step);
    if (kind == BP__REC_BUCKET || kind == BP__REC_CROSS || kind == BP__REC_UPDATE)
        fprintf(f, ",\"bucket\":%d", atomic_load_explicit(&e->arg, memory_order_relaxed));
    fprintf(f, "%s}}", done ? "" : ",\"unfinished\":true");
    if (async && done) {
        fputs(",\n{\"ph\":\"e\",\"name\":", f);
        bp__print_json_string(f, name);
        fprintf(f, ",\"cat\":\"exchange\",\"pid\":%d,\"tid\":0,\"ts\":%.3f,\"id\":\"%d.%lld.%d\"}",
                v->rank, (double)(t1 + v->offset_ns - base) / 1e3, v->rank, step,
                atomic_load_explicit(&e->arg, memory_order_relaxed));
    }
}

static void write_names(FILE *f, const bp__rec_view *v, int *first)
{
    /* tid 1 is the cross-node sums': on the exchange's thread, or the trainer's where
     * there is none (MPI without threads) */
    static const char *const threads[] = {"trainer", "cross-node sums", "checkpoint writer"};
    char name[128];
    snprintf(name, sizeof(name), "rank %d (host %s)", v->rank, v->host);
    fprintf(f, "%s\n{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":%d,\"args\":{\"name\":",
            *first ? "" : ",", v->rank);
    *first = 0;
    bp__print_json_string(f, name);
    fprintf(f,
            "}},\n{\"ph\":\"M\",\"name\":\"process_sort_index\",\"pid\":%d,"
            "\"args\":{\"sort_index\":%d}}",
            v->rank, v->rank);
    for (int t = 0; t < 3; t++)
        fprintf(f,
                ",\n{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":%d,\"tid\":%d,"
                "\"args\":{\"name\":\"%s\"}}",
                v->rank, t, threads[t]);
}

int bp__rec_write_json(FILE *f, const bp__rec_view *v, int n, const bp__rec_about *about)
{
    int64_t last, first = first_kept(v, n, about->steps, &last);
    int64_t base = about->now_ns, held = last; /* the first step held */
    for (int i = 0; i < n; i++)
        for (size_t j = 0; j < v[i].n; j++) {
            int64_t step = load64(&v[i].ev[j].step), t0 = load64(&v[i].ev[j].t0_ns);
            if (step < first)
                continue;
            held = step < held ? step : held;
            base = t0 + v[i].offset_ns < base ? t0 + v[i].offset_ns : base;
        }
    fprintf(f,
            "{\"displayTimeUnit\":\"ms\",\"otherData\":{\"backprop\":\"%s\",\"written\":\"%s\","
            "\"steps\":%ld,\"ranks\":%d,\"first_step\":%lld,\"last_step\":%lld,"
            "\"written_at_us\":%.3f},\n\"traceEvents\":[",
            about->version, about->written, about->steps, about->ranks,
            (long long)(last == INT64_MIN ? 0 : held), (long long)(last == INT64_MIN ? 0 : last),
            (double)(about->now_ns - base) / 1e3);
    int first_line = 1;
    for (int i = 0; i < n; i++)
        write_names(f, &v[i], &first_line);
    for (int i = 0; i < n; i++)
        for (size_t j = 0; j < v[i].n; j++)
            if (load64(&v[i].ev[j].step) >= first)
                write_event(f, &v[i], &v[i].ev[j], base, &first_line);
    fputs("\n]}\n", f);
    return ferror(f) ? -1 : 0;
}
