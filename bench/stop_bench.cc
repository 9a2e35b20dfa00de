// The second peer for propagation: the tree-cancel and callback-registration
// workloads with C++20's std::stop_source / std::stop_callback (libstdc++).
// A "context" here is a Node: a stop_source plus, for a child, a
// stop_callback on its parent's token that requests stop on the child: the
// standard way to chain stop sources. Names match ctx_bench's.
//
//   stop_bench [-bench REGEX] [-benchtime 200ms]   rows of the main table
//   stop_bench -scale [-scale-max N]               scaling-table columns
#include "harness.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <optional>
#include <stop_token>

// Route operator new/delete through malloc/free, which the shim counts.
void *operator new(std::size_t n)
{
    void *p = std::malloc(n ? n : 1);
    if (p == nullptr)
        throw std::bad_alloc();
    return p;
}
void *operator new[](std::size_t n) { return operator new(n); }
void operator delete(void *p) noexcept { std::free(p); }
void operator delete[](void *p) noexcept { std::free(p); }
void operator delete(void *p, std::size_t) noexcept { std::free(p); }
void operator delete[](void *p, std::size_t) noexcept { std::free(p); }

namespace {

struct Fwd {
    std::stop_source *child;
    void operator()() noexcept { child->request_stop(); }
};

struct Node {
    std::stop_source src;
    std::optional<std::stop_callback<Fwd>> link;
    Node() = default;
    explicit Node(const std::stop_source &parent)
    {
        link.emplace(parent.get_token(), Fwd{&src});
    }
};

void busy(long *px)
{
    long x = *px;
    for (int i = 0; i < 100; i++) {
        BENCH_OPAQUE(x);
        x /= x + 1;
    }
    *px = x;
}

// CommonParentCancel without the value lookup (stop_source carries none).
void common_body(bench_pb_t *pb)
{
    auto *shared = static_cast<std::stop_source *>(pb->arg);
    long x = 0;
    while (bench_pb_next(pb)) {
        Node *c = new Node(*shared);
        busy(&x);
        c->src.request_stop();
        delete c;
        busy(&x);
    }
    BENCH_KEEP(x);
}

void bm_common(bench_t *b)
{
    std::stop_source shared;
    bench_reset_timer(b);
    bench_run_parallel(b, common_body, &shared);
}

enum Root { BG, OPEN, CLOSED };
struct TreeArg {
    int depth;
    Root root;
};

void bm_tree(bench_t *b)
{
    auto *t = static_cast<TreeArg *>(b->arg);
    auto **chain = static_cast<Node **>(bench_xmalloc(sizeof(Node *) * (t->depth + 1)));
    for (long i = 0; i < b->n; i++) {
        if (t->root == BG) {
            chain[0] = new Node(); // a child of Background: nothing to link to
        } else {
            chain[0] = new Node();
            if (t->root == CLOSED)
                chain[0]->src.request_stop();
        }
        int last = t->root == BG ? t->depth - 1 : t->depth;
        for (int d = 1; d <= last; d++)
            chain[d] = new Node(chain[d - 1]->src);
        if (t->root == OPEN)
            chain[0]->src.request_stop();
        for (int d = last; d >= 0; d--)
            delete chain[d];
    }
    bench_xfree(chain);
}

void bm_check(bench_t *b)
{
    std::stop_source s;
    s.request_stop();
    std::stop_token tok = s.get_token();
    bench_reset_timer(b);
    int sink = 0;
    for (long i = 0; i < b->n; i++) {
        sink += tok.stop_requested();
        BENCH_OPAQUE(sink);
    }
    BENCH_KEEP(sink);
}

void done_body(bench_pb_t *pb)
{
    auto *tok = static_cast<std::stop_token *>(pb->arg);
    int sink = 0;
    while (bench_pb_next(pb)) {
        sink += tok->stop_requested();
        BENCH_OPAQUE(sink);
    }
    BENCH_KEEP(sink);
}

void bm_cancel_done(bench_t *b)
{
    std::stop_source s;
    std::stop_token tok = s.get_token();
    bench_run_parallel(b, done_body, &tok);
}

void bm_life_bg(bench_t *b)
{
    for (long i = 0; i < b->n; i++) {
        std::stop_source s;
        s.request_stop();
    }
}

void bm_life_child(bench_t *b)
{
    std::stop_source parent;
    bench_reset_timer(b);
    for (long i = 0; i < b->n; i++) {
        Node *c = new Node(parent);
        c->src.request_stop();
        delete c;
    }
}

struct Count {
    long *hits;
    void operator()() noexcept { ++*hits; }
};

void bm_after_stop(bench_t *b)
{
    std::stop_source s;
    long hits = 0;
    std::stop_token tok = s.get_token();
    bench_reset_timer(b);
    for (long i = 0; i < b->n; i++) {
        std::stop_callback<Count> cb(tok, Count{&hits});
        BENCH_KEEP(&cb);
    }
}

void bm_after_fire(bench_t *b)
{
    long hits = 0;
    for (long i = 0; i < b->n; i++) {
        std::stop_source s;
        std::stop_callback<Count> cb(s.get_token(), Count{&hits});
        s.request_stop();
    }
    if (hits != b->n)
        bench_fatal("callbacks ran %ld times for %ld ops", hits, b->n);
}

// ---- scaling columns -------------------------------------------------------

enum Shape { FLAT, KARY, CHAIN };
const char *const shape_name[] = {"flat: n children of the root", "8-ary balanced",
                                  "chain: depth n"};
struct ScaleTree {
    long n;
    Shape shape;
};

void tree_case(void *a)
{
    auto *t = static_cast<ScaleTree *>(a);
    long n = t->n;
    auto **node = static_cast<Node **>(bench_xmalloc(sizeof(Node *) * (n + 1)));
    int reps = (int)(100000 / n);
    reps = reps < 1 ? 1 : reps > 15 ? 15 : reps;
    double vc[15];
    for (int r = 0; r < reps; r++) {
        node[0] = new Node();
        for (long i = 1; i <= n; i++) {
            Node *parent = t->shape == FLAT ? node[0]
                           : t->shape == KARY ? node[(i - 1) / 8]
                                              : node[i - 1];
            node[i] = new Node(parent->src);
        }
        int64_t t1 = bench_now_ns();
        node[0]->src.request_stop();
        int64_t t2 = bench_now_ns();
        if (!node[n]->src.stop_requested())
            bench_fatal("a leaf is not stopped");
        for (long i = n; i >= 0; i--)
            delete node[i];
        vc[r] = (double)(t2 - t1) / (double)n;
    }
    char row[32], col[96];
    bench_n_label(n, row, sizeof row);
    std::snprintf(col, sizeof col, "C++ stop_source (%s)", shape_name[t->shape]);
    bench_scale(SEC_TREE, row, col, "%.1f", bench_median(vc, reps));
    bench_xfree(node);
}

void after_case(void *a)
{
    long k = *static_cast<long *>(a);
    char row[32];
    bench_n_label(k, row, sizeof row);
    long hits = 0;
    std::stop_source s;
    std::stop_token tok = s.get_token();
    using CB = std::stop_callback<Count>;
    auto **cbs = static_cast<CB **>(bench_xmalloc(sizeof(CB *) * (k + 1)));
    for (long i = 0; i < k; i++)
        cbs[i] = new CB(tok, Count{&hits});
    enum { OPS = 100000 };
    double v[7];
    for (int rep = 0; rep < 7; rep++) {
        int64_t t0 = bench_now_ns();
        for (int i = 0; i < OPS; i++) {
            CB cb(tok, Count{&hits});
            BENCH_KEEP(&cb);
        }
        v[rep] = (double)(bench_now_ns() - t0) / (double)OPS;
    }
    bench_scale(SEC_AFTER, row, "C++ stop_callback ctor+dtor, ns/op", "%.1f", bench_median(v, 7));
    if (k > 0) {
        int64_t t0 = bench_now_ns();
        s.request_stop();
        bench_scale(SEC_AFTER, row, "C++ request_stop running k callbacks, ns/callback", "%.1f",
                    (double)(bench_now_ns() - t0) / (double)k);
    }
    for (long i = 0; i < k; i++)
        delete cbs[i];
    bench_xfree(cbs);
}

enum BKind { B_SOURCE, B_CHILD, B_CALLBACK, B_N };
const char *const bkind_name[] = {"C++ std::stop_source (root)",
                                  "C++ linked child (stop_source + stop_callback)",
                                  "C++ std::stop_callback (heap, registered)"};

void bytes_case(void *a)
{
    BKind k = *static_cast<BKind *>(a);
    const long n = 100000;
    std::stop_source parent;
    auto **p = static_cast<void **>(bench_xmalloc(sizeof(void *) * n));
    long hits = 0;
    bench_live_begin();
    for (long i = 0; i < n; i++) {
        switch (k) {
        case B_SOURCE: p[i] = new std::stop_source(); break;
        case B_CHILD: p[i] = new Node(parent); break;
        default: p[i] = new std::stop_callback<Count>(parent.get_token(), Count{&hits}); break;
        }
    }
    struct bench_live l = bench_live_end();
    const char *row = bkind_name[k];
    bench_scale(SEC_BYTES, row, "requested B", "%.1f", (double)l.requested / n);
    bench_scale(SEC_BYTES, row, "usable B (net live)", "%.1f", (double)l.usable / n);
    bench_scale(SEC_BYTES, row, "malloc chunks", "%.2f", (double)l.chunks / n);
    bench_scale(SEC_BYTES, row, "footprint B (usable + 8 per chunk)", "%.1f",
                (double)(l.usable + 8 * l.chunks) / n);
    for (long i = 0; i < n; i++) {
        switch (k) {
        case B_SOURCE: delete static_cast<std::stop_source *>(p[i]); break;
        case B_CHILD: delete static_cast<Node *>(p[i]); break;
        default: delete static_cast<std::stop_callback<Count> *>(p[i]); break;
        }
    }
    bench_xfree(p);
}

void scale()
{
    char row[32], col[96];
    for (long n = 1000; n <= bench_scale_max; n *= 10) {
        for (int s = FLAT; s <= CHAIN; s++) {
            ScaleTree t = {n, (Shape)s};
            std::snprintf(col, sizeof col, "C++ stop_source (%s)", shape_name[s]);
            // request_stop runs callbacks inline, one frame chain per level:
            // a deep chain needs a big stack (1 GiB here).
            bench_fork(SEC_TREE, bench_n_label(n, row, sizeof row), col, tree_case, &t,
                       s == CHAIN ? 1024 : 0);
        }
    }
    for (int k = 0; k < B_N; k++)
        bench_fork(SEC_BYTES, bkind_name[k], "requested B", bytes_case, &k, 0);
    for (long k = 0; k <= 1000000 && k <= bench_scale_max; k = k ? k * 100 : 1000)
        bench_fork(SEC_AFTER, bench_n_label(k, row, sizeof row),
                   "C++ stop_callback ctor+dtor, ns/op", after_case, &k, 0);
}

} // namespace

int main(int argc, char **argv)
{
    if (bench_main_args(argc, argv)) {
        scale();
        return 0;
    }
    char name[128];
    bench_run("CommonParentCancel", bm_common, nullptr);
    static const int depths[] = {1, 10, 100, 1000};
    static TreeArg targs[12];
    for (int i = 0; i < 4; i++) {
        static const char *const rn[] = {"Background", "OpenCanceler", "ClosedCanceler"};
        for (int r = 0; r < 3; r++) {
            targs[i * 3 + r] = TreeArg{depths[i], (Root)r};
            std::snprintf(name, sizeof name, "CancelTree/depth=%d/Root=%s", depths[i], rn[r]);
            bench_run(name, bm_tree, &targs[i * 3 + r]);
        }
    }
    bench_run("CheckCanceled/Err", bm_check, nullptr);
    bench_run("CheckCanceled/Done", bm_check, nullptr);
    bench_run("ContextCancelDone", bm_cancel_done, nullptr);
    bench_run("Lifecycle/WithCancelBackground", bm_life_bg, nullptr);
    bench_run("Lifecycle/WithCancelChild", bm_life_child, nullptr);
    bench_run("Lifecycle/AfterFuncStop", bm_after_stop, nullptr);
    bench_run("Lifecycle/AfterFuncFire", bm_after_fire, nullptr);
    return 0;
}
