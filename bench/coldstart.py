#!/usr/bin/env python3
"""Cold start to first 200, for bench/run.sh (standard library only).

Starts the given command (chatfiles over an existing storage directory) RUNS times; each time
measures from just before the process is spawned until `GET /health` first answers 200, then
stops it with SIGTERM and waits for it to exit. Prints one line per start and, last,
`median_ms=<value>`.

Usage: coldstart.py RUNS HOST PORT LOG_FILE -- COMMAND...
"""

import http.client
import signal
import statistics
import subprocess
import sys
import time


def first_200(host, port, proc, deadline):
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"coldstart: the service exited with {proc.returncode} before answering")
        conn = http.client.HTTPConnection(host, port, timeout=5)
        try:
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return True
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.001)
    return False


def main():
    runs, host, port, log = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    command = sys.argv[sys.argv.index("--") + 1 :]
    times = []
    with open(log, "ab") as out:
        for i in range(runs):
            t0 = time.perf_counter()
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
            ok = first_200(host, port, proc, time.monotonic() + 30)
            elapsed = (time.perf_counter() - t0) * 1000
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                sys.exit("coldstart: the service did not stop within 30 s of SIGTERM")
            if not ok:
                sys.exit("coldstart: no 200 from /health within 30 s")
            times.append(elapsed)
            print(f"start {i + 1}: {elapsed:.1f} ms")
    print(f"median_ms={statistics.median(times):.1f}")


if __name__ == "__main__":
    main()
