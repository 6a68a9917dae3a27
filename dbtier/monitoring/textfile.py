"""Write one source's metrics where the textfile collector reads them: whole, then renamed (no half file)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from dbtier import workdir
from dbtier.monitoring.metrics import Sample, render, textfile_name


def write_metrics(cluster: str, source: str, samples: Sequence[Sample], now: float | None = None) -> str:
    """Replace ``source``'s file in the cluster's metrics directory (atomically: the collector reads ``*.prom``
    only, and the temporary file is not one); return its path."""
    path = os.path.join(workdir.metrics_dir(cluster), textfile_name(cluster, source))
    workdir.write_private(path, render(samples, cluster, source, time.time() if now is None else now).encode(),
                          mode=0o644)
    return path
