"""The cluster spec stored as a Prefect block, so deployments can name a cluster instead of a file."""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from pydantic import Field

from dbtier.spec import ClusterSpec, build_spec


class ClusterSpecBlock(Block):
    """A dbtier cluster spec (the same fields as a YAML file under deployments/clusters/)."""

    _block_type_name = "dbtier Cluster Spec"
    _block_type_slug = "dbtier-cluster-spec"

    spec: dict[str, Any] = Field(default_factory=dict, description="Cluster spec fields, as in the YAML file.")

    def get_spec(self) -> ClusterSpec:
        """The validated spec, with ``DBTIER_*`` environment overrides applied."""
        return build_spec(self.spec)

    @classmethod
    def from_spec(cls, spec: ClusterSpec) -> ClusterSpecBlock:
        return cls(spec=spec.model_dump(mode="json", exclude_defaults=True))
