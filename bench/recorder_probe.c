/* What one flight-recorder event costs (src/recorder.h): begin and end of 10^7 events on
 * a ring of the main job's size, against the clock reads alone. Not a test: the figures
 * go into docs/running.md ("Traces"). Usage: build/bench-recorder */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "recorder.h"

int main(void)
{
    size_t capacity = 100 * (16 + 5) + 64; /* trace_steps 100, one bucket */
    bp__rec *r = malloc(bp__rec_bytes(capacity));
    if (!r)
        return 1;
    bp__rec_init(r, capacity, 0, "probe");
    enum { N = 10000000 };
    int64_t t0 = bp__rec_now();
    for (int i = 0; i < N; i++)
        bp__rec_end(r, bp__rec_begin(r, BP__REC_FORWARD, 0, NULL));
    int64_t t1 = bp__rec_now();
    struct timespec ts;
    for (int i = 0; i < N; i++)
        clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t t2 = bp__rec_now();
    printf("an event (begin and end): %.1f ns; a clock read alone: %.1f ns\n",
           (double)(t1 - t0) / N, (double)(t2 - t1) / N);
    free(r);
    return 0;
}
