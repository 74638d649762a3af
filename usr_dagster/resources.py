"""UsrResource: the USR root for assets and ops that write themselves."""
from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from usr_core import Dataset, discover_datasets

from .common import dagster_actor


class UsrResource(ConfigurableResource):
    """A USR root (a directory holding registry.yaml and dataset directories)."""

    root: str = Field(description="USR root directory (holds registry.yaml).")

    @property
    def root_path(self) -> Path:
        return Path(self.root)

    def dataset(self, name: str) -> Dataset:
        return Dataset(self.root_path, name)

    def datasets(self) -> list[str]:
        return discover_datasets(self.root_path)

    def actor(self, run_id: str | None, what: str = "dagster") -> dict:
        return dagster_actor(run_id, what)
