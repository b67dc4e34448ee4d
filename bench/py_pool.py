"""Python baselines for bench_procpool (W4a, W4b): prints 'name seconds' lines.

Usage: python3 py_pool.py N_MAP N_ROUNDTRIPS [REPS]

Each figure is the best of REPS runs (default 5 for the maps, 3 for the round
trips), the rule bench_procpool applies to the kit: the least disturbed run.
"""
import sys
import time
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor


def square(x):
    return x * x


def inc(x):
    return x + 1


def best(reps, fn):
    """the shortest of reps timed calls of fn"""
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    n_map = int(sys.argv[1])
    n_rt = int(sys.argv[2])
    reps = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    rt_reps = min(reps, 3)
    data = list(range(n_map))

    def round_trips(submit):
        for i in range(n_rt):
            assert submit(i) == i + 1

    with mp.Pool(2) as pool:
        pool.map(square, range(1000))  # warm up
        assert pool.map(square, data, chunksize=10000)[-1] == (n_map - 1) ** 2
        print("W4a_pool_chunk10000", best(reps, lambda: pool.map(square, data, chunksize=10000)))
        print("W4a_pool_default", best(reps, lambda: pool.map(square, data)))
        print("W4b_pool_apply_async",
              best(rt_reps, lambda: round_trips(lambda i: pool.apply_async(inc, (i,)).get())))
    with ProcessPoolExecutor(2) as ex:
        list(ex.map(square, range(1000), chunksize=100))  # warm up
        print("W4a_executor_chunk10000",
              best(reps, lambda: list(ex.map(square, data, chunksize=10000))))
        print("W4b_executor_submit",
              best(rt_reps, lambda: round_trips(lambda i: ex.submit(inc, i).result())))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
