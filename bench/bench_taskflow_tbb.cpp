// bench_taskflow_tbb.cpp - the oneTBB flow graph baseline of bench_taskflow.c.
//
//   W8a chain of 100,000 empty continue_nodes; W8b 1 -> 100,000 -> 1; W8c 300x300
//   wavefront. 2 threads (global_control), best of 5. Build = creating the nodes and
//   edges; run = try_put into the source + wait_for_all; rerun = the same again.
//
// Output: RESULT shape=W8a impl=tbb tasks=N edges=E build_ns_per_task=B build_ns_per_item=I
//         run_ns_per_task=R rerun_ns_per_task=RR
// Usage: bench_taskflow_tbb [--quick] [W8a|W8b|W8c]
#include <oneapi/tbb/flow_graph.h>
#include <oneapi/tbb/global_control.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

using namespace oneapi::tbb;
using node_t = flow::continue_node<flow::continue_msg>;

static double now_ns()
{
    return (double)std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch()).count();
}

// the best of the repetitions: on a shared machine, interference only ever adds time
static double best(std::vector<double> v)
{
    return *std::min_element(v.begin(), v.end());
}

int main(int argc, char **argv)
{
    bool quick = false;
    const char *only = nullptr; // run one shape only (bench_taskflow interleaves them)
    for (int i = 1; i < argc; i++) {
        if (std::strcmp(argv[i], "--quick") == 0) quick = true;
        else only = argv[i];
    }
    int reps = quick ? 1 : 5;
    long chain_n = quick ? 10000 : 100000, fan_n = quick ? 10000 : 100000, wave_n = quick ? 100 : 300;
    global_control gc(global_control::max_allowed_parallelism, 2);
    const char *names[3] = {"W8a", "W8b", "W8c"};
    for (int s = 0; s < 3; s++) {
        if (only && std::strcmp(only, names[s]) != 0) continue;
        std::vector<double> b, r, rr;
        long tasks = s == 0 ? chain_n : s == 1 ? fan_n + 2 : wave_n * wave_n;
        long edges = s == 0 ? chain_n - 1 : s == 1 ? 2 * fan_n : 2 * wave_n * (wave_n - 1);
        for (int k = 0; k < reps; k++) {
            double t0 = now_ns();
            flow::graph g;
            std::vector<std::unique_ptr<node_t>> nodes;
            nodes.reserve((size_t)tasks);
            auto body = [](const flow::continue_msg &) {};
            if (s == 0) {
                for (long i = 0; i < chain_n; i++) {
                    nodes.emplace_back(new node_t(g, body));
                    if (i) flow::make_edge(*nodes[(size_t)i - 1], *nodes[(size_t)i]);
                }
            } else if (s == 1) {
                nodes.emplace_back(new node_t(g, body));
                for (long i = 0; i < fan_n; i++) {
                    nodes.emplace_back(new node_t(g, body));
                    flow::make_edge(*nodes[0], *nodes.back());
                }
                nodes.emplace_back(new node_t(g, body));
                for (long i = 1; i <= fan_n; i++) flow::make_edge(*nodes[(size_t)i], *nodes.back());
            } else {
                for (long i = 0; i < wave_n; i++)
                    for (long j = 0; j < wave_n; j++) {
                        nodes.emplace_back(new node_t(g, body));
                        if (i) flow::make_edge(*nodes[(size_t)((i - 1) * wave_n + j)], *nodes.back());
                        if (j) flow::make_edge(*nodes[(size_t)(i * wave_n + j - 1)], *nodes.back());
                    }
            }
            double t1 = now_ns();
            nodes[0]->try_put(flow::continue_msg());
            g.wait_for_all();
            double t2 = now_ns();
            b.push_back((t1 - t0) / (double)tasks);
            r.push_back((t2 - t1) / (double)tasks);
            t1 = now_ns(); // a rerun: continue_nodes reset after they fire
            nodes[0]->try_put(flow::continue_msg());
            g.wait_for_all();
            t2 = now_ns();
            rr.push_back((t2 - t1) / (double)tasks);
        }
        double bm = best(b);
        std::printf("RESULT shape=%s impl=tbb tasks=%ld edges=%ld build_ns_per_task=%.1f build_ns_per_item=%.1f "
                    "run_ns_per_task=%.1f rerun_ns_per_task=%.1f\n", names[s], tasks, edges, bm,
                    bm * (double)tasks / (double)(tasks + edges), best(r), best(rr));
    }
    return 0;
}
