"""Thread pools of the numerical libraries, pinned where the result must not depend on them.

A multithreaded BLAS (OpenBLAS, MKL) or OpenMP loop splits its sums across its threads, so the last bits of
an SVD or of faiss's distance products change with the core count and with OPENBLAS_NUM_THREADS /
OMP_NUM_THREADS — enough to move rows between clusters (measured in embedding/tfidf.py and clustering.py).
The steps whose bits decide the selection run at one thread.
"""

from __future__ import annotations


def one_thread(user_api: str | None = None):
    """Every loaded BLAS (numpy's, scipy's, faiss's bundled OpenBLAS; MKL) and, with `user_api=None`, OpenMP
    at one thread for the duration of a `with` block: one summation order on every machine."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api=user_api)
