"""A long flow's progress: a Prefect progress artifact (the run's page shows a bar) and a line per step in the
run's log, which the command line prints as it goes. Not a task: the flow calls it between its tasks."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import cast
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from dbtier.progress import done_line, next_index, percent, step_line


class Progress:
    """The steps a flow announced, and how far it got through them."""

    def __init__(self, flow: str, cluster: str, steps: Sequence[str]) -> None:
        self.flow, self.cluster, self.steps = flow, cluster, list(steps)
        self.started = time.monotonic()
        self.done = 0
        self.artifact = cast(UUID, create_progress_artifact(  # sync inside a flow: Prefect's sync_compatible
            0.0, key=f"{cluster}-{flow}-progress", description=f"{flow} of {cluster}: {len(self.steps)} steps"))

    def step(self, what: str | None = None) -> None:
        """The next step starts. ``what``: an announced step's name (the steps before it were skipped, as when
        a restore drill's copy did not come up), or the next step's name said in more detail."""
        index = next_index(self.steps, self.done, what)
        get_run_logger().info("%s", step_line(self.flow, self.cluster, index, len(self.steps),
                                              what or self.steps[index - 1]))
        self.done = index - 1
        self._update(self.done)
        self.done = index

    def finish(self) -> None:
        self.done = len(self.steps)
        get_run_logger().info("%s", done_line(self.flow, self.cluster, len(self.steps), time.monotonic() - self.started))
        self._update(self.done)

    def _update(self, done: int) -> None:
        update_progress_artifact(self.artifact, percent(done, len(self.steps)),
                                 description=f"{self.flow} of {self.cluster}: {done}/{len(self.steps)} steps")
