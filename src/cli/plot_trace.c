/* plot's timeline: the last steps of a trace that train writes ([log] trace, a Chrome
 * trace-event JSON file), as boxes per rank for cmd_plot.c to draw.
 *
 * The file is untrusted input, read whole and parsed by cJSON (which bounds its nesting):
 * at most TRACE_MAX_BYTES of it, and an event that lacks a field the timeline needs (ph,
 * pid, ts; dur for "X"; id for "b" and "e") is skipped, not guessed. Pairs are matched
 * after a sort, not by searching, so that no file makes the matching quadratic. Only
 * numbers leave this file, with the process names (which cmd_plot.c sanitises). */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "backprop/files.h"
#include "cli.h"

/* Far above what train writes for its N steps (docs/usage.md), and what cJSON's tree of it
 * takes (about ten times the text) still fits a workstation's memory. */
#define TRACE_MAX_BYTES (256L << 20)
/* A pid is an MPI rank: the few million ranks of the largest machines fit. */
#define TRACE_MAX_PID (1 << 24)
/* Times (µs) beyond 30 years from the trace's start are not a run's: skipped, so that every
 * difference of two is finite. */
#define TRACE_MAX_US 1e15
/* Unfinished boxes drawn hatched, at most: gnuplot takes about 3 ms for each. */
#define TRACE_MAX_HATCHED 64

/* One event as the timeline needs it, in file order (seq). */
typedef struct {
    const cJSON *ev;
    double ts, end; /* µs; end is NAN until known */
    long step;      /* LONG_MIN without args.step */
    int pid, tid, seq;
    char ph;
    const char *id; /* "b"/"e": the pair's id as text */
    char idbuf[32];
} event;

static int fail_trace(char *err, size_t len, const char *path, const char *why)
{
    return bp_cli_fail(err, len, BP_EFORMAT, "%s: not a trace (%s)", path, why);
}

/* The whole file, NUL-terminated, into *text: 0, or the reason. */
static int read_all(const char *path, char **text, size_t *n, char *err, size_t len)
{
    char open_err[BP_PATH_MAX + 128];
    int fd = bp_input_open(path, open_err, sizeof(open_err));
    if (fd < 0)
        return bp_cli_fail(err, len, BP_EINVAL, "%s", open_err);
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size > TRACE_MAX_BYTES) {
        close(fd);
        return bp_cli_fail(err, len, BP_EFORMAT,
                           "%s: larger than a trace plot reads (%ld MB at most)", path,
                           TRACE_MAX_BYTES >> 20);
    }
    /* Read to the cap, not to st_size: a file that grows meanwhile is still bounded. */
    size_t cap = (size_t)st.st_size + 1, got = 0;
    char *buf = malloc(cap + 1);
    ssize_t r = 1;
    while (buf && r > 0 && got < cap) {
        r = read(fd, buf + got, cap - got);
        if (r < 0 && errno == EINTR)
            r = 1;
        else if (r > 0)
            got += (size_t)r;
    }
    int saved = errno;
    close(fd);
    if (!buf)
        return bp_cli_fail(err, len, BP_ENOMEM, "out of memory");
    if (r < 0) {
        free(buf);
        return bp_cli_fail(err, len, BP_EIO, "%s: read error: %s", path, strerror(saved));
    }
    if (got == cap) { /* it grew while read */
        free(buf);
        return bp_cli_fail(err, len, BP_EIO, "%s: changed while read", path);
    }
    buf[got] = 0;
    *text = buf;
    *n = got;
    return 0;
}

static double number_of(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNumber(v) && isfinite(v->valuedouble) ? v->valuedouble : NAN;
}

static const char *string_of(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A whole number in [lo, hi], else -1. */
static long whole(double v, long lo, long hi)
{
    return isfinite(v) && v == floor(v) && v >= (double)lo && v <= (double)hi ? (long)v : -1;
}

/* An event of the timeline from ev, or 0 when it is not one (metadata, a field missing). */
static int parse_event(const cJSON *ev, int seq, event *e)
{
    const char *ph = string_of(ev, "ph");
    if (!cJSON_IsObject(ev) || !ph || strlen(ph) != 1 || !strchr("XBEbe", ph[0]))
        return 0;
    memset(e, 0, sizeof(*e));
    e->ev = ev, e->seq = seq, e->ph = ph[0], e->end = NAN;
    e->ts = number_of(ev, "ts");
    long pid = whole(number_of(ev, "pid"), 0, TRACE_MAX_PID);
    double tid = number_of(ev, "tid");
    e->tid = isnan(tid) ? 0 : (int)whole(tid, 0, 1000);
    if (!(fabs(e->ts) <= TRACE_MAX_US) || pid < 0 || e->tid < 0)
        return 0;
    e->pid = (int)pid;
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(ev, "args");
    double step = number_of(args, "step");
    e->step = isfinite(step) && fabs(step) < 1e15 && step == floor(step) ? (long)step : LONG_MIN;
    if (e->ph == 'X') {
        double dur = number_of(ev, "dur");
        if (!(dur >= 0 && dur <= TRACE_MAX_US))
            return 0;
        e->end = e->ts + dur;
    }
    if (e->ph == 'b' || e->ph == 'e') { /* Chrome takes a string or a number */
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(ev, "id");
        if (cJSON_IsString(id))
            e->id = id->valuestring;
        else if (cJSON_IsNumber(id) && isfinite(id->valuedouble))
            snprintf(e->idbuf, sizeof(e->idbuf), "%.17g", id->valuedouble), e->id = e->idbuf;
        else
            return 0;
    }
    return 1;
}

/* Pairs: "B"/"E" nest per (pid, tid); "b"/"e" pair per (pid, id). Sorted by that key, then
 * file order, a stack per key matches each end with the latest open begin. */
static int pair_order(const void *pa, const void *pb)
{
    const event *a = *(event *const *)pa, *b = *(event *const *)pb;
    int async_a = a->ph == 'b' || a->ph == 'e', async_b = b->ph == 'b' || b->ph == 'e';
    if (async_a != async_b)
        return async_a - async_b;
    if (a->pid != b->pid)
        return a->pid < b->pid ? -1 : 1;
    int c = async_a ? strcmp(a->id, b->id) : (a->tid > b->tid) - (a->tid < b->tid);
    return c ? c : (a->seq > b->seq) - (a->seq < b->seq);
}

static int same_key(const event *a, const event *b)
{
    int async = a->ph == 'b' || a->ph == 'e';
    return a->pid == b->pid && (async == (b->ph == 'b' || b->ph == 'e')) &&
           (async ? strcmp(a->id, b->id) == 0 : a->tid == b->tid);
}

/* Sets each begin's end (and its step on the end, which has none). */
static int match_pairs(event *evs, size_t n)
{
    size_t np = 0, depth = 0;
    event **p = malloc((n ? n : 1) * sizeof(*p)), **stack = malloc((n ? n : 1) * sizeof(*stack));
    if (!p || !stack) {
        free(p), free(stack);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if (evs[i].ph != 'X')
            p[np++] = &evs[i];
    qsort(p, np, sizeof(*p), pair_order);
    for (size_t i = 0; i < np; i++) {
        if (i > 0 && !same_key(p[i - 1], p[i]))
            depth = 0;
        if (p[i]->ph == 'B' || p[i]->ph == 'b')
            stack[depth++] = p[i];
        else if (depth > 0 && p[i]->ts >= stack[depth - 1]->ts)
            stack[--depth]->end = p[i]->ts;
    }
    free(p), free(stack);
    return 0;
}

static int kind_of(const cJSON *ev)
{
    static const char *const cats[] = {"data",       "compute",    "exchange",  "update",
                                       "collective", "checkpoint", "evaluation"};
    static const int kinds[] = {BP_TRACE_DATA,      BP_TRACE_COMPUTE,    BP_TRACE_EXCHANGE,
                                BP_TRACE_UPDATE,    BP_TRACE_COLLECTIVE, BP_TRACE_CHECKPOINT,
                                BP_TRACE_EVALUATION};
    const char *cat = string_of(ev, "cat"), *name = string_of(ev, "name");
    for (int i = 0; cat && i < (int)(sizeof(cats) / sizeof(cats[0])); i++)
        if (strcmp(cat, cats[i]) == 0) {
            if (kinds[i] == BP_TRACE_COMPUTE && name && strcmp(name, "forward") == 0)
                return BP_TRACE_FORWARD;
            if (kinds[i] == BP_TRACE_COMPUTE && name && strcmp(name, "backward") == 0)
                return BP_TRACE_BACKWARD;
            return kinds[i];
        }
    return BP_TRACE_OTHER;
}

static int int_order(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* The ranks (sorted, distinct) of the events and of the process_name metadata; the first
 * BP_TRACE_MAX_LANES get a lane and a name ("rank R" unless the file names it). */
static int find_ranks(const cJSON *list, const event *evs, size_t n, bp_cli_trace *t)
{
    size_t m = 0, total = (size_t)cJSON_GetArraySize(list) + n;
    int *pids = malloc((total ? total : 1) * sizeof(*pids));
    if (!pids)
        return -1;
    for (size_t i = 0; i < n; i++)
        pids[m++] = evs[i].pid;
    const cJSON *ev;
    cJSON_ArrayForEach(ev, list)
    {
        const char *ph = string_of(ev, "ph"), *name = string_of(ev, "name");
        long pid = whole(number_of(ev, "pid"), 0, TRACE_MAX_PID);
        if (ph && strcmp(ph, "M") == 0 && name && strcmp(name, "process_name") == 0 && pid >= 0)
            pids[m++] = (int)pid;
    }
    qsort(pids, m, sizeof(*pids), int_order);
    size_t u = 0;
    for (size_t i = 0; i < m; i++)
        if (u == 0 || pids[u - 1] != pids[i])
            pids[u++] = pids[i];
    t->all_ranks = (int)u;
    t->nranks = u < BP_TRACE_MAX_LANES ? (int)u : BP_TRACE_MAX_LANES;
    memcpy(t->ranks, pids, (size_t)t->nranks * sizeof(*pids));
    free(pids);
    for (int i = 0; i < t->nranks; i++)
        snprintf(t->names[i], sizeof(t->names[i]), "rank %d", t->ranks[i]);
    cJSON_ArrayForEach(ev, list)
    {
        const char *ph = string_of(ev, "ph"), *name = string_of(ev, "name");
        const char *label = string_of(cJSON_GetObjectItemCaseSensitive(ev, "args"), "name");
        long pid = whole(number_of(ev, "pid"), 0, TRACE_MAX_PID);
        int lane = bp_cli_trace_lane(t, (int)pid);
        if (ph && strcmp(ph, "M") == 0 && name && strcmp(name, "process_name") == 0 && lane >= 0 &&
            label)
            snprintf(t->names[lane], sizeof(t->names[lane]), "%s", label);
    }
    return 0;
}

int bp_cli_trace_lane(const bp_cli_trace *t, int pid)
{
    const int *at = bsearch(&pid, t->ranks, (size_t)t->nranks, sizeof(int), int_order);
    return at ? (int)(at - t->ranks) : -1;
}

/* The sub-lane of an event, or -1 for a thread the timeline does not draw. */
static int sublane_of(const event *e)
{
    if (e->ph == 'b' || e->ph == 'e')
        return BP_TRACE_BUCKETS;
    return e->tid == 0   ? BP_TRACE_TRAINER
           : e->tid == 1 ? BP_TRACE_EXCHANGE_THREAD
           : e->tid == 2 ? BP_TRACE_WRITER
                         : -1;
}

static int box_order(const void *pa, const void *pb)
{
    const bp_cli_trace_box *a = pa, *b = pb;
    if (a->rank != b->rank)
        return a->rank < b->rank ? -1 : 1;
    if (a->sublane != b->sublane)
        return a->sublane - b->sublane;
    return (a->start > b->start) - (a->start < b->start);
}

/* Whether an event is one of a step's own phases (rows, passes, exchange, update), not the
 * run's business around the steps (collectives, evaluation, checkpoints). */
static int step_phase(const event *e)
{
    int kind = kind_of(e->ev);
    return kind == BP_TRACE_DATA || kind == BP_TRACE_FORWARD || kind == BP_TRACE_BACKWARD ||
           kind == BP_TRACE_COMPUTE || kind == BP_TRACE_EXCHANGE || kind == BP_TRACE_UPDATE;
}

/* Where the window ends. Without unfinished events: at the end of the last step's phases,
 * so that the end of a run (its evaluation, checkpoint and agreements) does not squeeze the
 * steps into a corner. With them (the watchdog's trace): a tenth past the last moment an
 * event of the window was seen to begin or end, the unfinished ones drawn on to that edge,
 * and how long they went on after it (to the end of the trace, often the whole timeout)
 * told in *beyond_ms: at the trace's own scale the steps before the hang would be a
 * pixel. */
static double window_end(const event *evs, size_t n, double trace_end, long first, long last,
                         double t0, int *to_end, double *beyond_ms)
{
    double end = -INFINITY, seen = -INFINITY;
    *to_end = 0, *beyond_ms = 0;
    for (size_t i = 0; i < n; i++) {
        const event *e = &evs[i];
        if (e->step == LONG_MIN || e->step < first || e->ph == 'E' || e->ph == 'e')
            continue;
        if (isnan(e->end)) {
            *to_end = 1;
            seen = fmax(seen, fmin(e->ts, trace_end)); /* a begin past the end is not one */
        } else {
            seen = fmax(seen, e->end);
            if (e->step == last && step_phase(e))
                end = fmax(end, e->end);
        }
    }
    if (*to_end) { /* past the last begin always: every unfinished box has a width */
        end = seen + fmax((seen - t0) / 10, 1.0);
        *beyond_ms = fmax(trace_end - end, 0) / 1000.0;
    }
    return isfinite(end) ? end : trace_end;
}

/* The window: the last `steps` steps by args.step (those of them the trace has), from the
 * first event of the first of them to window_end. Boxes of the drawn ranks that reach into
 * it, clipped to it; the steps' first events on the top lane's rank. */
static int collect(const event *evs, size_t n, double trace_end, int steps, bp_cli_trace *t)
{
    long last = LONG_MIN;
    for (size_t i = 0; i < n; i++)
        if (evs[i].step != LONG_MIN && evs[i].step > last)
            last = evs[i].step;
    if (last == LONG_MIN)
        return 0; /* no step: an empty window */
    long first = last;
    double t0 = INFINITY;
    for (size_t i = 0; i < n; i++)
        if (evs[i].step != LONG_MIN && evs[i].step > last - steps) {
            first = evs[i].step < first ? evs[i].step : first;
            t0 = evs[i].ts < t0 ? evs[i].ts : t0;
        }
    t->first_step = first, t->last_step = last, t->has_window = 1;
    double t1 = window_end(evs, n, trace_end, first, last, t0, &t->to_end, &t->beyond_ms);
    t->span = (t1 - t0) / 1000.0;
    int hatched = 0; /* unfinished boxes drawn as such: gnuplot takes ms for each */
    t->boxes = malloc((n ? n : 1) * sizeof(*t->boxes));
    t->step_at = malloc((size_t)steps * sizeof(*t->step_at));
    if (!t->boxes || !t->step_at)
        return -1;
    for (int s = 0; s < steps; s++)
        t->step_at[s] = NAN;
    int top = t->nranks > 0 ? t->ranks[0] : -1;
    for (size_t i = 0; i < n; i++) {
        const event *e = &evs[i];
        if (e->pid == top && e->step >= first && e->ph != 'E' && e->ph != 'e') {
            double *at = &t->step_at[e->step - first], ms = (e->ts - t0) / 1000.0;
            *at = isnan(*at) || ms < *at ? ms : *at;
        }
        if (e->ph == 'E' || e->ph == 'e' || sublane_of(e) < 0 || bp_cli_trace_lane(t, e->pid) < 0)
            continue;
        int unfinished = isnan(e->end);
        double end = unfinished ? fmax(trace_end, t1) : e->end; /* to the edge */
        if (end < t0 || (end == t0 && e->ts < t0) || e->ts >= t1)
            continue;
        bp_cli_trace_box *b = &t->boxes[t->nboxes++];
        b->rank = e->pid, b->sublane = sublane_of(e), b->kind = kind_of(e->ev);
        b->start = ((e->ts > t0 ? e->ts : t0) - t0) / 1000.0;
        b->end = ((end < t1 ? end : t1) - t0) / 1000.0;
        const cJSON *flag = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(e->ev, "args"), "unfinished");
        /* A real trace has a few (each rank's waits); past TRACE_MAX_HATCHED the rest are
         * drawn as plain boxes, still to the edge. */
        b->unfinished = (unfinished || cJSON_IsTrue(flag)) && hatched < TRACE_MAX_HATCHED;
        hatched += b->unfinished;
    }
    qsort(t->boxes, t->nboxes, sizeof(*t->boxes), box_order);
    return 0;
}

int bp_cli_trace_read(const char *path, int steps, bp_cli_trace *t, char *err, size_t len)
{
    memset(t, 0, sizeof(*t));
    char *text = NULL;
    size_t n = 0;
    int rc = read_all(path, &text, &n, err, len);
    if (rc < 0)
        return rc;
    cJSON *root = n ? cJSON_ParseWithLength(text, n) : NULL;
    if (!root && n == 0)
        rc = fail_trace(err, len, path, "an empty file");
    else if (!root)
        rc = bp_cli_fail(err, len, BP_EFORMAT, "%s: not a trace (not JSON, at byte %ld)", path,
                         cJSON_GetErrorPtr() ? (long)(cJSON_GetErrorPtr() - text) : 0L);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "traceEvents");
    if (rc == 0 && !cJSON_IsArray(list))
        rc = fail_trace(err, len, path, "no traceEvents list");
    size_t count = rc == 0 ? (size_t)cJSON_GetArraySize(list) : 0, nev = 0;
    event *evs = rc == 0 ? malloc((count ? count : 1) * sizeof(*evs)) : NULL;
    if (rc == 0 && !evs)
        rc = bp_cli_fail(err, len, BP_ENOMEM, "out of memory");
    const cJSON *ev;
    double latest = -INFINITY;
    if (rc == 0)
        cJSON_ArrayForEach(ev, list)
        {
            if (!parse_event(ev, (int)nev, &evs[nev]))
                continue;
            latest =
                fmax(latest, fmax(evs[nev].ts, isnan(evs[nev].end) ? -INFINITY : evs[nev].end));
            nev++;
        }
    /* The end of the trace: when the file was written, else its latest moment. */
    double written =
        number_of(cJSON_GetObjectItemCaseSensitive(root, "otherData"), "written_at_us");
    double trace_end = fabs(written) <= TRACE_MAX_US ? fmax(written, latest) : latest;
    if (rc == 0 && (match_pairs(evs, nev) < 0 || find_ranks(list, evs, nev, t) < 0 ||
                    collect(evs, nev, trace_end, steps, t) < 0))
        rc = bp_cli_fail(err, len, BP_ENOMEM, "out of memory");
    t->steps = steps;
    free(evs);
    cJSON_Delete(root);
    free(text);
    if (rc < 0)
        bp_cli_trace_free(t);
    return rc;
}

void bp_cli_trace_free(bp_cli_trace *t)
{
    free(t->boxes);
    free(t->step_at);
    memset(t, 0, sizeof(*t));
}
