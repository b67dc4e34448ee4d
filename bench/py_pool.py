"""Python baselines for bench_procpool (W4a, W4b): prints 'name seconds' lines.

Usage: python3 py_pool.py N_MAP N_ROUNDTRIPS
"""
import sys
import time
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor


def square(x):
    return x * x


def inc(x):
    return x + 1


def main():
    n_map = int(sys.argv[1])
    n_rt = int(sys.argv[2])
    data = list(range(n_map))
    with mp.Pool(2) as pool:
        pool.map(square, range(1000))  # warm up
        t = time.perf_counter()
        out = pool.map(square, data, chunksize=10000)
        print("W4a_pool_chunk10000", time.perf_counter() - t)
        assert out[-1] == (n_map - 1) ** 2
        t = time.perf_counter()
        out = pool.map(square, data)
        print("W4a_pool_default", time.perf_counter() - t)
        t = time.perf_counter()
        for i in range(n_rt):
            assert pool.apply_async(inc, (i,)).get() == i + 1
        print("W4b_pool_apply_async", time.perf_counter() - t)
    with ProcessPoolExecutor(2) as ex:
        list(ex.map(square, range(1000), chunksize=100))  # warm up
        t = time.perf_counter()
        out = list(ex.map(square, data, chunksize=10000))
        print("W4a_executor_chunk10000", time.perf_counter() - t)
        t = time.perf_counter()
        for i in range(n_rt):
            assert ex.submit(inc, i).result() == i + 1
        print("W4b_executor_submit", time.perf_counter() - t)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
