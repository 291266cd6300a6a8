"""koquality: curate small, high-quality Korean instruction-tuning datasets (KoQuality, HCLT 2023).

Each stage is a plain function over Arrow tables (a `datasets.Dataset` works too, via `as_table`):

    ingest → score → embed → cluster → sample → export

`run(recipe, run_dir)` chains them over a run directory with caching and a manifest.
"""

__version__ = "0.1.0"

from .clustering import assign_len_groups, cluster, kmeans  # noqa: E402
from .embedding import embed, make_encoder  # noqa: E402
from .errors import KoqualityError  # noqa: E402
from .export import export, render  # noqa: E402
from .ingest import SourceSpec, ingest  # noqa: E402
from .pipeline import run  # noqa: E402
from .recipe import Recipe, load_recipe  # noqa: E402
from .sampling import sample  # noqa: E402
from .scoring import make_scorer, score  # noqa: E402
from .tables import as_table, read_table, write_table  # noqa: E402

__all__ = ["KoqualityError", "Recipe", "SourceSpec", "as_table", "assign_len_groups", "cluster", "embed", "export",
           "ingest", "kmeans", "load_recipe", "make_encoder", "make_scorer", "read_table", "render", "run",
           "sample", "score", "write_table"]
