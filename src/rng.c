/* xoshiro256** (Blackman and Vigna), seeded through splitmix64: a fast generator whose
 * whole state is four integers, so a checkpoint can carry it exactly. */
#include <math.h>

#include "internal.h"

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void bp_rng_seed(bp_rng *rng, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        rng->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t bp_rng_next(bp_rng *rng)
{
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double bp_rng_uniform(bp_rng *rng)
{
    return (double)(bp_rng_next(rng) >> 11) * 0x1.0p-53;
}

/* Box-Muller without a cached second value: the state stays four integers. */
double bp_rng_gaussian(bp_rng *rng)
{
    double u1 = 1.0 - bp_rng_uniform(rng); /* (0, 1]: log stays finite */
    double u2 = bp_rng_uniform(rng);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* Unbiased integer in [0, bound) by rejection (Lemire's multiply-shift would do too). */
static uint64_t below(bp_rng *rng, uint64_t bound)
{
    uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    uint64_t r;
    do
        r = bp_rng_next(rng);
    while (r >= limit);
    return r % bound;
}

void bp_epoch_permutation(uint64_t seed, long epoch, size_t n, size_t *perm)
{
    bp_rng rng;
    uint64_t x = seed ^ 0x5eed5eed5eed5eedULL;
    bp_rng_seed(&rng, splitmix64(&x) + (uint64_t)epoch * 0x9e3779b97f4a7c15ULL);
    for (size_t i = 0; i < n; i++)
        perm[i] = i;
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)below(&rng, i);
        size_t t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
}
