"""koquality: curate small, high-quality Korean instruction-tuning datasets (KoQuality, HCLT 2023).

Each stage is a plain function over Arrow tables (a `datasets.Dataset` works too, via `as_table`):

    ingest → score → embed → cluster → sample → export → report (→ train → evaluate)

`run(recipe, run_dir)` chains them over a run directory with caching, shards and a manifest; `sweep` runs
the paper's (L, K, method, N) grid over one scored, embedded corpus.
"""

__version__ = "0.1.0"

from .clustering import assign_len_groups, cluster, kmeans  # noqa: E402
from .dedup import semantic_duplicates  # noqa: E402
from .embedding import embed, make_encoder  # noqa: E402
from .errors import KoqualityError  # noqa: E402
from .evaluate import evaluate, markdown_table  # noqa: E402
from .export import export, render  # noqa: E402
from .ingest import SourceSpec, ingest  # noqa: E402
from .pipeline import run  # noqa: E402
from .report import write_report  # noqa: E402
from .recipe import Recipe, load_recipe  # noqa: E402
from .sampling import sample  # noqa: E402
from .scoring import make_scorer, score, score_rows  # noqa: E402
from .sweep import sweep  # noqa: E402
from .tables import as_table, read_table, write_table  # noqa: E402
from .train import train, train_config  # noqa: E402

__all__ = ["KoqualityError", "Recipe", "SourceSpec", "as_table", "assign_len_groups", "cluster", "embed", "evaluate",
           "export", "ingest", "kmeans", "load_recipe", "make_encoder", "make_scorer", "markdown_table", "read_table",
           "render", "run", "sample", "score", "score_rows", "semantic_duplicates", "sweep", "train", "train_config", "write_report", "write_table"]
