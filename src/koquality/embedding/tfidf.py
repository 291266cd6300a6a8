"""TF-IDF over Kiwi morphemes → truncated SVD → L2-normalised: the offline stand-in for KoSimCSE.

Morphemes (form/tag) rather than whitespace words, because Korean glues particles and endings onto words:
`학교에`, `학교는` and `학교를` share the morpheme `학교/NNG`. The SVD is fitted on the texts being embedded
(transductive, like the k-means that follows; on a seeded sample of at most 200K rows for a large corpus),
seeded, so the same corpus gives the same vectors.

The SVD runs with BLAS/LAPACK limited to one thread (`_one_blas_thread`): a multithreaded OpenBLAS splits
its reductions (the dense products and LAPACK factorisations of the randomized SVD) across its threads,
so the vectors depended on the machine's core count and on OPENBLAS_NUM_THREADS / OMP_NUM_THREADS: 1 against
2 threads, up to 4e-4 apart on the 28K-row shared data (2e-2 on the demo corpus), enough to move 1,240 rows
to other clusters at L=5, K=20 and change the selection. One thread gives one summation order everywhere and
costs nothing measurable: fit + transform took 1.2-1.3 s pinned against 1.5-10 s at 2 threads on a busy
2-core machine, in an embed stage dominated by Kiwi. The TF-IDF matrix (sparse, single-threaded) and Kiwi's
morphemes are the same at any thread count.

The morphemes are Kiwi's best analysis (`..kiwi.morphemes_of`), the one the kiwi scorer scores: in a run
they come from the score stage's cache (`encode_batches(tokens=...)`, see ..morphemes), so Kiwi analyses
each instruction once.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from pydantic import Field

from ..backends import Backend, Settings

from ..kiwi import kiwi_settings, kiwi_version, morphemes_of
from ..threads import one_thread


def _identity(tokens):
    return tokens


class TfidfEncoder:
    def __init__(self, dims: int = 256, seed: int = 0, min_df: int | None = None, num_workers: int = -1,
                 svd_rows: int = 200_000):
        self.dims = dims
        self.seed = seed
        self.min_df = min_df
        self.num_workers = num_workers
        self.svd_rows = svd_rows

    def config(self) -> dict[str, Any]:
        return {"encoder": "tfidf", "dims": self.dims, "seed": self.seed, "min_df": self.min_df,
                "kiwipiepy": kiwi_version(), **kiwi_settings()}

    def tokenize(self, texts: Sequence[str]) -> Iterator[list[str]]:
        """Morphemes per text, streamed: the vectorizer counts them as they come, so 400K token lists
        are never all in memory at once."""
        return morphemes_of(texts, self.num_workers)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.empty((len(texts), self.dims), dtype=np.float32)
        start = 0
        for batch in self.encode_batches(texts):
            vectors[start:start + len(batch)] = batch
            start += len(batch)
        return vectors

    def encode_batches(self, texts: Sequence[str], batch_rows: int = 65536,
                       tokens: Iterable[list[str]] | None = None) -> Iterator[np.ndarray]:
        """Fit on all `texts`, then yield their vectors in order, `batch_rows` at a time: a caller writing
        them to disk never holds the whole matrix (2 GB at 2M rows × 256). `tokens`, when given, are the
        texts' morphemes already analysed (one list per text, in order, as `tokenize` would give them)."""
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        n = len(texts)
        if n == 0:
            return
        min_df = self.min_df if self.min_df is not None else (2 if n >= 1000 else 1)
        vectorizer = TfidfVectorizer(analyzer=_identity, min_df=min_df, sublinear_tf=True, dtype=np.float32)
        tfidf = vectorizer.fit_transform(self.tokenize(texts) if tokens is None else tokens)
        # SVD needs fewer components than features and rows; a tiny corpus gets a smaller space, zero-padded.
        components = min(self.dims, tfidf.shape[1] - 1, n - 1)
        svd = None
        if components >= 1:
            # Fit on at most `svd_rows` rows (seeded): the randomized SVD's work arrays grow with rows × dims,
            # ~2 GB at 2M rows; the components of a 200K-row sample span the same topics.
            fit_on = tfidf
            if n > self.svd_rows:
                fit_on = tfidf[np.sort(np.random.default_rng(self.seed).choice(n, self.svd_rows, replace=False))]
            with one_thread("blas"):
                svd = TruncatedSVD(n_components=components, random_state=self.seed).fit(fit_on)
        for start in range(0, n, batch_rows):
            batch = np.zeros((min(batch_rows, n - start), self.dims), dtype=np.float32)
            if svd is not None:
                with one_thread("blas"):  # sparse × dense today (no BLAS), but pinned in case that changes
                    batch[:, :components] = svd.transform(tfidf[start:start + batch_rows])
            norms = np.linalg.norm(batch, axis=1, keepdims=True)
            np.divide(batch, norms, out=batch, where=norms > 0)
            yield batch


class TfidfSettings(Settings):
    dims: int = Field(256, ge=1, description="tfidf: SVD dimensions")


def _key_parts() -> tuple:
    return ("kiwi", kiwi_settings())  # Kiwi's options and model files (issue 11 dropped the multi-word dictionary)


BACKENDS = (Backend("embed", "tfidf", "koquality.embedding.tfidf:TfidfEncoder", TfidfSettings, writes=("vector",),
                    help="offline: TF-IDF over Kiwi morphemes, truncated SVD", library="kiwipiepy",
                    modules=("kiwipiepy", "sklearn"), row_independent=False, key_parts=_key_parts,
                    context=("seed",)),)
