/* The flight recorder's ring and trace file (src/recorder.c) and straggler detection
 * (src/straggler.c), without MPI. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>
#include <cmocka.h>

#include "recorder.h"
#include "straggler.h"

static bp__rec *ring_of(size_t capacity, int rank)
{
    bp__rec *r = malloc(bp__rec_bytes(capacity));
    assert_non_null(r);
    bp__rec_init(r, capacity, rank, "node-a");
    return r;
}

static int64_t field(const _Atomic int64_t *v)
{
    return atomic_load(v);
}

/* Events come back oldest first, whole, with their steps; the ring keeps the newest
 * `capacity`; an end for an event already overwritten changes nothing. */
static void ring_keeps_the_newest(void **state)
{
    (void)state;
    bp__rec *r = ring_of(8, 0);
    bp__rec_event out[8];
    int64_t first = -1;
    for (int i = 0; i < 5; i++) {
        bp__rec_set_step(r, 10 + i);
        int64_t id = bp__rec_begin(r, BP__REC_FORWARD, 0, NULL);
        if (i == 0)
            first = id;
        bp__rec_end(r, id);
    }
    assert_int_equal(bp__rec_copy(r, out), 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(field(&out[i].step), 10 + i);
        assert_true(field(&out[i].t1_ns) >= field(&out[i].t0_ns));
        assert_true(field(&out[i].t0_ns) > 0);
    }
    for (int i = 0; i < 12; i++) {
        bp__rec_set_step(r, 20 + i);
        bp__rec_begin(r, BP__REC_BUCKET, i, NULL); /* never ended */
    }
    bp__rec_end(r, first); /* overwritten long ago */
    assert_int_equal(bp__rec_copy(r, out), 8);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(field(&out[i].step), 24 + i);
        assert_int_equal(field(&out[i].t1_ns), 0);
        assert_int_equal(atomic_load(&out[i].arg), 4 + i);
    }
    assert_int_equal(bp__rec_begin(NULL, BP__REC_DATA, 0, NULL), -1);
    bp__rec_end(NULL, 3); /* the recorder off: nothing */
    free(r);
}

/* A collective's name is copied, cut to fit. */
static void ring_copies_names(void **state)
{
    (void)state;
    bp__rec *r = ring_of(4, 0);
    char longer[200];
    memset(longer, 'x', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = 0;
    bp__rec_end(r, bp__rec_begin(r, BP__REC_COLLECTIVE, 0, "an agreement between ranks"));
    bp__rec_end(r, bp__rec_begin(r, BP__REC_COLLECTIVE, 0, longer));
    bp__rec_event out[4];
    assert_int_equal(bp__rec_copy(r, out), 2);
    assert_string_equal(out[0].name, "an agreement between ranks");
    assert_int_equal(strlen(out[1].name), BP__REC_NAME - 1);
    free(r);
}

static cJSON *event_where(cJSON *events, int pid, const char *ph, const char *name, long step)
{
    cJSON *e;
    cJSON_ArrayForEach(e, events)
    {
        cJSON *p = cJSON_GetObjectItem(e, "pid"), *h = cJSON_GetObjectItem(e, "ph");
        cJSON *n = cJSON_GetObjectItem(e, "name"), *a = cJSON_GetObjectItem(e, "args");
        cJSON *s = a ? cJSON_GetObjectItem(a, "step") : NULL;
        if (p && p->valueint == pid && h && strcmp(h->valuestring, ph) == 0 && n &&
            strcmp(n->valuestring, name) == 0 && (!s || step < 0 || s->valueint == step))
            return e;
    }
    return NULL;
}

/* The trace: valid JSON, the last `steps` steps of every rank, ranks as processes named
 * with their hosts, the bucket exchanges as async pairs, what never ended as unfinished,
 * another host's times moved by its offset. */
static void trace_is_chrome_json(void **state)
{
    (void)state;
    bp__rec *a = ring_of(64, 0), *b = ring_of(64, 1);
    snprintf(b->host, sizeof(b->host), "node \"b\"");
    for (int step = 1; step <= 5; step++) {
        bp__rec_set_step(a, step);
        bp__rec_set_step(b, step);
        bp__rec_end(a, bp__rec_begin(a, BP__REC_FORWARD, 0, NULL));
        bp__rec_end(b, bp__rec_begin(b, BP__REC_FORWARD, 0, NULL));
        int64_t x = bp__rec_begin(a, BP__REC_BUCKET, 1, NULL);
        int64_t y = bp__rec_begin(b, BP__REC_BUCKET, 1, NULL);
        if (step < 5) /* the last step's exchange never ends on rank 1 */
            bp__rec_end(b, y);
        bp__rec_end(a, x);
    }
    bp__rec_event ea[64], eb[64];
    bp__rec_view v[2] = {{0, a->host, ea, bp__rec_copy(a, ea), 0},
                         {1, b->host, eb, bp__rec_copy(b, eb), 1000000}};
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    bp__rec_about about = {"watchdog", "9.9.9", 3, 2, bp__rec_now() + 5000000};
    assert_int_equal(bp__rec_write_json(f, v, 2, &about), 0);
    fclose(f);
    cJSON *doc = cJSON_Parse(text);
    assert_non_null(doc);
    cJSON *other = cJSON_GetObjectItem(doc, "otherData");
    assert_string_equal(cJSON_GetObjectItem(other, "written")->valuestring, "watchdog");
    assert_int_equal(cJSON_GetObjectItem(other, "first_step")->valueint, 3);
    assert_int_equal(cJSON_GetObjectItem(other, "last_step")->valueint, 5);
    cJSON *events = cJSON_GetObjectItem(doc, "traceEvents");
    assert_non_null(events);
    cJSON *named = event_where(events, 1, "M", "process_name", -1);
    assert_non_null(named);
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(named, "args"), "name")->valuestring,
        "rank 1 (host node \"b\")");
    for (int pid = 0; pid < 2; pid++) {
        assert_null(event_where(events, pid, "X", "forward", 2)); /* before the last 3 */
        for (int step = 3; step <= 5; step++)
            assert_non_null(event_where(events, pid, "X", "forward", step));
    }
    /* rank 0's bucket 1: a b/e pair with one id, ending after it began */
    cJSON *beg = event_where(events, 0, "b", "exchange bucket 1", 5), *end = NULL, *e;
    assert_non_null(beg);
    const char *id = cJSON_GetObjectItem(beg, "id")->valuestring;
    cJSON_ArrayForEach(e, events)
    {
        cJSON *i = cJSON_GetObjectItem(e, "id");
        if (i && strcmp(cJSON_GetObjectItem(e, "ph")->valuestring, "e") == 0 &&
            strcmp(i->valuestring, id) == 0)
            end = e;
    }
    assert_non_null(end);
    assert_true(cJSON_GetObjectItem(end, "ts")->valuedouble >=
                cJSON_GetObjectItem(beg, "ts")->valuedouble);
    /* rank 1's last exchange: begun, unfinished, no end */
    cJSON *stuck = event_where(events, 1, "b", "exchange bucket 1", 5);
    assert_non_null(stuck);
    assert_true(
        cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(stuck, "args"), "unfinished")));
    int ends = 0;
    cJSON_ArrayForEach(e, events) ends +=
        strcmp(cJSON_GetObjectItem(e, "ph")->valuestring, "e") == 0;
    assert_int_equal(ends, 3 + 2); /* rank 0's three, rank 1's steps 3 and 4 */
    /* rank 1's clock runs 1 ms behind: its first forward comes about 1 ms after rank 0's */
    double t0 = cJSON_GetObjectItem(event_where(events, 0, "X", "forward", 3), "ts")->valuedouble;
    double t1 = cJSON_GetObjectItem(event_where(events, 1, "X", "forward", 3), "ts")->valuedouble;
    assert_true(t1 - t0 > 900 && t1 - t0 < 1100);
    cJSON_Delete(doc);
    free(text);
    free(a);
    free(b);
}

/* Steps of wall seconds with every rank's work in ms, until a window closes: whether the
 * slow set changed then. */
static int window(bp__straggler *s, const double *ms, int ranks, long *step)
{
    double work[8];
    for (int r = 0; r < ranks; r++)
        work[r] = ms[r] / 1e3;
    int changed = 0;
    for (int i = 0; i < BP__STRAGGLER_STEPS; i++)
        changed |= bp__straggler_add(s, work, BP__STRAGGLER_SECONDS / BP__STRAGGLER_STEPS, ++*step);
    return changed;
}

/* A rank slower than the factor times the others' median in two windows in a row joins
 * the slow set; two windows not slow, and it leaves. */
static void straggler_two_windows_in_a_row(void **state)
{
    (void)state;
    bp__straggler s;
    assert_int_equal(bp__straggler_init(&s, 3, 1.5), 0);
    long step = 0;
    const double even[3] = {1.0, 1.1, 0.9}, slow[3] = {1.0, 0.9, 2.0};
    for (int i = 0; i < 4; i++)
        assert_false(window(&s, even, 3, &step));
    assert_false(window(&s, slow, 3, &step)); /* one window: not yet */
    assert_false(window(&s, even, 3, &step));
    assert_false(window(&s, slow, 3, &step));
    assert_true(window(&s, slow, 3, &step)); /* two in a row */
    assert_int_equal(s.n_in, 1);
    assert_true(s.in[2] && !s.in[0] && !s.in[1]);
    assert_int_equal(s.from_step, step - BP__STRAGGLER_STEPS + 1);
    assert_int_equal(s.to_step, step);
    assert_float_equal(bp__straggler_others(&s, 2), 0.95e-3, 1e-12);
    assert_float_equal(s.worst_factor, 2.0 / 0.95, 1e-9);
    assert_int_equal(s.worst_rank, 2);
    assert_false(window(&s, slow, 3, &step)); /* still slow: no news */
    assert_false(window(&s, even, 3, &step)); /* one window even: still in */
    assert_true(window(&s, even, 3, &step));  /* two: out */
    assert_int_equal(s.n_in, 0);
    bp__straggler_free(&s);
}

/* Just under the factor, or over it by less than BP__STRAGGLER_MIN_MS a step: no rank is
 * slow. Two ranks: each is measured against the other. Off (factor 0) or one rank: never. */
static void straggler_margins(void **state)
{
    (void)state;
    bp__straggler s;
    long step = 0;
    assert_int_equal(bp__straggler_init(&s, 3, 1.5), 0);
    const double under[3] = {1.0, 1.0, 1.49}, tiny[3] = {0.01, 0.01, 0.05};
    for (int i = 0; i < 4; i++) {
        assert_false(window(&s, under, 3, &step));
        assert_false(window(&s, tiny, 3, &step));
    }
    assert_int_equal(s.n_in, 0);
    assert_false(s.warned_any);
    bp__straggler_free(&s);

    assert_int_equal(bp__straggler_init(&s, 2, 1.5), 0);
    const double pair[2] = {3.0, 1.0};
    assert_false(window(&s, pair, 2, &step));
    assert_true(window(&s, pair, 2, &step));
    assert_true(s.in[0] && !s.in[1]);
    bp__straggler_free(&s);

    const double far[3] = {1.0, 1.0, 9.0};
    assert_int_equal(bp__straggler_init(&s, 3, 0), 0);
    for (int i = 0; i < 3; i++)
        assert_false(window(&s, far, 3, &step));
    bp__straggler_free(&s);
    assert_int_equal(bp__straggler_init(&s, 1, 1.5), 0);
    assert_false(window(&s, far, 1, &step));
    bp__straggler_free(&s);
}

/* A window closes after BP__STRAGGLER_STEPS steps and BP__STRAGGLER_SECONDS, whichever
 * comes last: short steps make longer windows. */
static void straggler_window_lasts(void **state)
{
    (void)state;
    bp__straggler s;
    assert_int_equal(bp__straggler_init(&s, 2, 1.5), 0);
    double work[2] = {3e-3, 1e-3};
    long step = 0;
    double wall = BP__STRAGGLER_SECONDS / (4 * BP__STRAGGLER_STEPS);
    int changed = 0;
    long at = -1;
    for (int i = 0; i < 16 * BP__STRAGGLER_STEPS && at < 0; i++) {
        changed = bp__straggler_add(&s, work, wall, ++step);
        if (changed)
            at = step;
    }
    assert_int_equal(at, 8 * BP__STRAGGLER_STEPS); /* two windows of four times the steps */
    bp__straggler_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ring_keeps_the_newest), cmocka_unit_test(ring_copies_names),
        cmocka_unit_test(trace_is_chrome_json),  cmocka_unit_test(straggler_two_windows_in_a_row),
        cmocka_unit_test(straggler_margins),     cmocka_unit_test(straggler_window_lasts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
