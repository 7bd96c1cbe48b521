"""The daemon runs BLAS on one thread (daemon/runtime.py ``one_blas_thread``): its models are small,
and extra BLAS threads only waited for each other on a busy machine. Checked in a fresh process,
as the daemon's own, since the limit is process-wide."""
from __future__ import annotations

import json
import subprocess
import sys

CHECK = """
import json, numpy
from threadpoolctl import threadpool_info
before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
from plantwatch.daemon.runtime import one_blas_thread
one_blas_thread()
after = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
print(json.dumps([before, after]))
"""


def test_the_daemon_runs_blas_on_one_thread():
    out = subprocess.run([sys.executable, "-c", CHECK], check=True, capture_output=True, text=True,
                         env={"OPENBLAS_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"}).stdout
    before, after = json.loads(out)
    assert before == [2], before  # numpy's BLAS was found and ran two threads
    assert after and set(after) == {1}, after  # numpy's and scipy's


def test_run_sets_it_before_the_daemon_starts():
    import inspect

    from plantwatch.daemon.runtime import DaemonHandle

    src = inspect.getsource(DaemonHandle.run)
    assert src.index("one_blas_thread()") < src.index("open_endpoints(")
