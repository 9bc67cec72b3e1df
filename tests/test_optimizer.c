#define _GNU_SOURCE /* usleep */
/* The optimizer interface (src/optimizer.h): nesterov against values worked by hand, every
 * backend's state through a checkpoint and back, and rank 0's background writer. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "backprop/backprop.h"
#include "backprop/checkpoint.h"
#include "optimizer.h"
#include "saver.h"
#include "test_dir.h"

/* A network of two inputs and one output: W (1x2) then b, 3 parameters. */
static void tiny_net(bp_net *net)
{
    int sizes[2] = {2, 1};
    assert_int_equal(bp_net_create(net, 2, sizes, BP_SIGMOID, BP_SIGMOID, BP_QUADRATIC), 0);
    assert_int_equal(net->nparams, 3);
}

static void tiny_config(bp_config *c, bp_optimizer kind)
{
    memset(c, 0, sizeof(*c));
    c->optimizer = kind;
    c->learning_rate = 0.5;
    c->lambda = 1;
    c->momentum = 0.5;
    c->batch_size = 4;
    c->epochs = 1;
    c->beta1 = 0.9;
    c->beta2 = 0.999;
    c->adam_epsilon = 1e-8;
    c->lbfgs_history = 3;
    c->lbfgs_tolerance = 1e-5;
}

/* The velocity the optimizer keeps, params-shaped. */
static const bp_real *velocity(bp__optimizer *o)
{
    bp_state_item items[BP__OPT_MAX_ITEMS];
    bp_optimizer_state st = bp__optimizer_state(o, items);
    assert_int_equal(st.nitems, 1);
    assert_string_equal(st.items[0].name, "v");
    assert_non_null(st.items[0].data);
    return st.items[0].data;
}

/* Nesterov on W = (1, -2), b = 0.5 with learning rate 0.5 over batches of m = 2 examples
 * (s = eta/m = 0.25), momentum mu = 0.5, lambda = 1 over n = 4 examples (w = eta lambda/n =
 * 0.125 on the weights, 0 on the bias). Per element u = s g + w p, v = mu v - u,
 * p = p + (mu v - u). By hand, every value a short binary fraction (exact in float):
 *
 * step 1, g = (2, 4, -2), v = 0:
 *   W0: u = 0.5 + 0.125 = 0.625;  v = -0.625;  p = 1 + (-0.3125 - 0.625) = 0.0625
 *   W1: u = 1 - 0.25 = 0.75;      v = -0.75;   p = -2 + (-0.375 - 0.75) = -3.125
 *   b:  u = -0.5;                 v = 0.5;     p = 0.5 + (0.25 + 0.5) = 1.25
 * step 2, g = (-4, 0, 2):
 *   W0: u = -1 + 0.0078125 = -0.9921875;  v = -0.3125 + 0.9921875 = 0.6796875;
 *       p = 0.0625 + (0.33984375 + 0.9921875) = 1.39453125
 *   W1: u = -0.390625;  v = -0.375 + 0.390625 = 0.015625;
 *       p = -3.125 + (0.0078125 + 0.390625) = -2.7265625
 *   b:  u = 0.5;  v = 0.25 - 0.5 = -0.25;  p = 1.25 + (-0.125 - 0.5) = 0.625
 * step 3, g = (0, 2, 4):
 *   W0: u = 0.125 * 1.39453125 = 0.17431640625;  v = 0.33984375 - u = 0.16552734375;
 *       p = 1.39453125 + (0.082763671875 - 0.17431640625) = 1.302978515625
 *   W1: u = 0.5 - 0.3408203125 = 0.1591796875;  v = 0.0078125 - u = -0.1513671875;
 *       p = -2.7265625 + (-0.07568359375 - 0.1591796875) = -2.96142578125
 *   b:  u = 1;  v = -0.125 - 1 = -1.125;  p = 0.625 + (-0.5625 - 1) = -0.9375
 * Step 2 is applied in two ranges, [0, 1) and [1, 3): the same bits as whole. */
static void test_nesterov_by_hand(void **state)
{
    (void)state;
    bp_net net;
    bp_config cfg;
    tiny_net(&net);
    tiny_config(&cfg, BP_OPT_NESTEROV);
    size_t W = bp_net_offset_W(&net, 0), b = bp_net_offset_b(&net, 0);
    net.params[W] = 1, net.params[W + 1] = -2, net.params[b] = 0.5;
    bp__optimizer *o;
    char err[256] = "";
    assert_int_equal(bp__optimizer_create(&o, &cfg, &net, err, sizeof(err)), 0);
    assert_int_equal(bp__optimizer_prepare(o, 4, 0, err, sizeof(err)), 0);
    assert_true(bp__optimizer_applies(o));
    static const double g[3][3] = {{2, 4, -2}, {-4, 0, 2}, {0, 2, 4}};
    static const double want_p[3][3] = {{0.0625, -3.125, 1.25},
                                        {1.39453125, -2.7265625, 0.625},
                                        {1.302978515625, -2.96142578125, -0.9375}};
    static const double want_v[3][3] = {
        {-0.625, -0.75, 0.5}, {0.6796875, 0.015625, -0.25}, {0.16552734375, -0.1513671875, -1.125}};
    for (int step = 0; step < 3; step++) {
        bp_real sum[3];
        sum[W] = (bp_real)g[step][0], sum[W + 1] = (bp_real)g[step][1],
        sum[b] = (bp_real)g[step][2];
        bp__optimizer_set_step(o, 0.5, step + 1);
        if (step == 1) {
            assert_int_equal(bp__optimizer_apply(o, &net, sum, 2, 0, 1), 0);
            assert_int_equal(bp__optimizer_apply(o, &net, sum, 2, 1, 3), 0);
        } else {
            assert_int_equal(bp__optimizer_apply(o, &net, sum, 2, 0, 3), 0);
        }
        assert_int_equal(bp__optimizer_evaluated(o, &net, sum, 1, 0), BP__OPT_GO_ON);
        const bp_real *v = velocity(o);
        const size_t at[3] = {W, W + 1, b};
        for (int i = 0; i < 3; i++) {
            assert_true(net.params[at[i]] == (bp_real)want_p[step][i]);
            assert_true(v[at[i]] == (bp_real)want_v[step][i]);
        }
    }
    /* A gradient that is not finite leaves a parameter that is not, and says so. */
    bp_real bad[3] = {NAN, 0, 0};
    assert_int_equal(bp__optimizer_apply(o, &net, bad, 2, 0, 3), 1);
    char msg[128];
    assert_int_equal(bp__optimizer_nonfinite(o, &net, msg, sizeof(msg)), 1);
    assert_string_equal(msg, "the velocities of 1 of layer 0's 2 weights are not finite");
    bp__optimizer_free(o);
    bp_net_free(&net);
}

/* Every item of o filled with values of its own (lbfgs's counters kept in range). */
static void fill_items(bp__optimizer *o, size_t nparams)
{
    bp_state_item items[BP__OPT_MAX_ITEMS];
    bp_optimizer_state st = bp__optimizer_state(o, items);
    for (size_t i = 0; i < st.nitems; i++) {
        const bp_state_item *it = &st.items[i];
        size_t count = it->count ? it->count : 1;
        if (!it->data)
            continue;
        if (it->kind == BP_STATE_PARAMS || it->kind == BP_STATE_VECTORS) {
            size_t n = it->kind == BP_STATE_PARAMS ? nparams : count * nparams;
            for (size_t k = 0; k < n; k++)
                ((bp_real *)it->data)[k] = (bp_real)((double)(i + 1) / 7.0 - (double)k / 3.0);
        } else if (it->kind == BP_STATE_REALS) {
            for (size_t k = 0; k < count; k++)
                ((double *)it->data)[k] = (double)i / 3.0 + (double)k;
        } else if (strcmp(it->name, "lbfgs/history") != 0) {
            *(int *)it->data = 1 + (int)(i % 2); /* pairs, newest, phase, evals, converged */
        }
    }
}

/* Each backend's state list goes through a checkpoint and back into a fresh optimizer of
 * the same kind, item by item bit for bit; into another kind it is refused. */
static void test_state_round_trips(void **state)
{
    (void)state;
    static const bp_optimizer kinds[] = {BP_OPT_SGD, BP_OPT_ADAM, BP_OPT_LBFGS, BP_OPT_NESTEROV};
    bp_net net;
    tiny_net(&net);
    bp_train_state st = {.epoch = 1, .global_step = 1, .seed = 7, .ranks = 1};
    char path[128], err[512] = "";
    snprintf(path, sizeof(path), "%s/state.h5", dir);
    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        bp_config cfg;
        tiny_config(&cfg, kinds[k]);
        bp__optimizer *a, *b;
        assert_int_equal(bp__optimizer_create(&a, &cfg, &net, err, sizeof(err)), 0);
        assert_int_equal(bp__optimizer_create(&b, &cfg, &net, err, sizeof(err)), 0);
        assert_int_equal(bp__optimizer_prepare(a, 4, 0, err, sizeof(err)), 0);
        fill_items(a, net.nparams);
        bp_state_item ia[BP__OPT_MAX_ITEMS], ib[BP__OPT_MAX_ITEMS];
        bp_optimizer_state sa = bp__optimizer_state(a, ia);
        assert_string_equal(sa.name, bp_optimizer_names[kinds[k]]);
        assert_int_equal(bp_checkpoint_write(path, &net, &sa, &st, NULL, err, sizeof(err)), 0);
        bp_checkpoint ck;
        assert_int_equal(bp_checkpoint_read(path, &ck, err, sizeof(err)), 0);
        assert_string_equal(ck.optimizer, sa.name);
        assert_int_equal(bp__optimizer_load(b, &ck, path, err, sizeof(err)), 0);
        sa = bp__optimizer_state(a, ia);
        bp_optimizer_state sb = bp__optimizer_state(b, ib);
        assert_int_equal(sb.nitems, sa.nitems);
        for (size_t i = 0; i < sa.nitems; i++) {
            assert_string_equal(sb.items[i].name, sa.items[i].name);
            assert_int_equal(sb.items[i].count, sa.items[i].count);
            if (sa.items[i].data)
                assert_memory_equal(sb.items[i].data, sa.items[i].data,
                                    bp__state_item_bytes(&sa.items[i], net.nparams));
        }
        bp_config other;
        tiny_config(&other, kinds[(k + 1) % 4]);
        bp__optimizer *c;
        assert_int_equal(bp__optimizer_create(&c, &other, &net, err, sizeof(err)), 0);
        assert_int_equal(bp__optimizer_load(c, &ck, path, err, sizeof(err)), BP_EMISMATCH);
        assert_non_null(strstr(err, "was trained with optimizer = "));
        bp__optimizer_free(c);
        bp_checkpoint_free(&ck);
        bp__optimizer_free(a);
        bp__optimizer_free(b);
    }
    bp_net_free(&net);
}

/* sgd with momentum 0 keeps its velocity zeros: not written (the layout's dataset never
 * written), and read back as zeros. */
static void test_sgd_zero_velocity_not_written(void **state)
{
    (void)state;
    bp_net net;
    bp_config cfg;
    tiny_net(&net);
    tiny_config(&cfg, BP_OPT_SGD);
    cfg.momentum = 0;
    bp__optimizer *o;
    char err[256] = "", path[128];
    snprintf(path, sizeof(path), "%s/zero.h5", dir);
    assert_int_equal(bp__optimizer_create(&o, &cfg, &net, err, sizeof(err)), 0);
    assert_int_equal(bp__optimizer_prepare(o, 4, 0, err, sizeof(err)), 0);
    bp_state_item items[BP__OPT_MAX_ITEMS];
    bp_optimizer_state s = bp__optimizer_state(o, items);
    assert_null(s.items[0].data);
    bp_train_state st = {.ranks = 1};
    assert_int_equal(bp_checkpoint_write(path, &net, &s, &st, NULL, err, sizeof(err)), 0);
    bp_checkpoint ck;
    assert_int_equal(bp_checkpoint_read(path, &ck, err, sizeof(err)), 0);
    const bp_state_item *v = bp_checkpoint_item(&ck, "v");
    assert_non_null(v);
    for (size_t i = 0; i < net.nparams; i++)
        assert_true(((bp_real *)v->data)[i] == 0);
    bp_checkpoint_free(&ck);
    bp__optimizer_free(o);
    bp_net_free(&net);
}

static int file_exists(const char *path)
{
    return access(path, F_OK) == 0;
}

/* The saver writes a copy in the background: after a wait the file is there and complete
 * (it reads back with the copy's weights, not the ones changed after the start); a write
 * that fails is reported by the next start and by a wait, with its reason, and the saver
 * writes again once it was told. */
static void test_saver(void **state)
{
    (void)state;
    bp_net net;
    bp_config cfg;
    tiny_net(&net);
    tiny_config(&cfg, BP_OPT_ADAM);
    snprintf(cfg.checkpoint_dir, sizeof(cfg.checkpoint_dir), "%s", dir);
    bp__optimizer *o;
    char err[512] = "";
    assert_int_equal(bp__optimizer_create(&o, &cfg, &net, err, sizeof(err)), 0);
    fill_items(o, net.nparams);
    for (size_t i = 0; i < net.nparams; i++)
        net.params[i] = (bp_real)i + 0.5f;
    bp__saver *s;
    assert_int_equal(bp__saver_create(&s, &cfg, &net, "[train]\n", err, sizeof(err)), 0);
    bp_train_state st = {.epoch = 1, .global_step = 1, .seed = 7, .ranks = 1};
    bp_state_item items[BP__OPT_MAX_ITEMS];
    bp_run_snapshot snap = {&net, bp__optimizer_state(o, items), &st, NULL};
    assert_int_equal(bp__saver_start(s, &snap, err, sizeof(err)), 0);
    net.params[0] = 99; /* the copy was taken: the file keeps 0.5 */
    assert_int_equal(bp__saver_wait(s, err, sizeof(err)), 0);
    char path[160];
    snprintf(path, sizeof(path), "%s/ckpt-1.h5", dir);
    assert_true(file_exists(path));
    bp_checkpoint ck;
    assert_int_equal(bp_checkpoint_read(path, &ck, err, sizeof(err)), 0);
    assert_true(ck.net.params[0] == 0.5f);
    assert_string_equal(ck.optimizer, "adam");
    assert_memory_equal(bp_checkpoint_item(&ck, "s")->data, items[1].data,
                        net.nparams * sizeof(bp_real));
    assert_string_equal(ck.config_text, "[train]\n");
    bp_checkpoint_free(&ck);
    long writes;
    double took;
    bp__saver_stats(s, &writes, &took);
    assert_int_equal(writes, 1);

    /* The directory goes away: the next write fails, and says so. */
    char moved[96];
    snprintf(moved, sizeof(moved), "%s.gone", dir);
    assert_int_equal(rename(dir, moved), 0);
    st.global_step = 2, st.epoch = 2;
    assert_int_equal(bp__saver_start(s, &snap, err, sizeof(err)), 0);
    for (int i = 0; i < 1000 && !bp__saver_failed(s); i++)
        usleep(10000);
    assert_true(bp__saver_failed(s));
    err[0] = 0;
    assert_true(bp__saver_start(s, &snap, err, sizeof(err)) < 0); /* starts nothing */
    assert_non_null(strstr(err, "ckpt-2.h5"));
    assert_int_equal(bp__saver_wait(s, err, sizeof(err)), 0); /* told once */
    assert_int_equal(rename(moved, dir), 0);
    assert_int_equal(bp__saver_start(s, &snap, err, sizeof(err)), 0);
    assert_int_equal(bp__saver_wait(s, err, sizeof(err)), 0);
    snprintf(path, sizeof(path), "%s/ckpt-2.h5", dir);
    assert_true(file_exists(path));
    bp__saver_free(s);
    bp__optimizer_free(o);
    bp_net_free(&net);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nesterov_by_hand),
        cmocka_unit_test(test_state_round_trips),
        cmocka_unit_test(test_sgd_zero_velocity_not_written),
        cmocka_unit_test(test_saver),
    };
    return cmocka_run_group_tests(tests, make_dir, remove_dir);
}
