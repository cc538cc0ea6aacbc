"""Agent-wide asset registry: maps asset ids to dense indices and their schemas."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.schema import AssetSchema


@dataclass(frozen=True)
class AssetInfo:
    index: int  # agent-wide index
    asset_id: str
    schema: AssetSchema
    local: int  # index among the assets of the same class


class AssetRegistry:
    """Dense indices for assets, grouped by class, so per-class arrays can be indexed directly."""

    def __init__(self, assets: list[tuple[str, AssetSchema]]) -> None:
        self.infos: list[AssetInfo] = []
        self.by_id: dict[str, AssetInfo] = {}
        self.classes: dict[str, AssetSchema] = {}
        per_class: dict[str, int] = {}
        for asset_id, schema in assets:
            if asset_id in self.by_id:
                raise ValueError(f"asset {asset_id!r} configured twice")
            known = self.classes.setdefault(schema.asset_class, schema)
            if known != schema:
                raise ValueError(f"asset class {schema.asset_class!r} defined twice, differently")
            local = per_class.get(schema.asset_class, 0)
            per_class[schema.asset_class] = local + 1
            info = AssetInfo(len(self.infos), asset_id, schema, local)
            self.infos.append(info)
            self.by_id[asset_id] = info
        # class name -> agent-wide indices of its assets, in local order
        self.members: dict[str, np.ndarray] = {
            c: np.array([i.index for i in self.infos if i.schema.asset_class == c], np.int32)
            for c in self.classes
        }
        self.local_index = np.array([i.local for i in self.infos], np.int32)
        self.class_of = [i.schema.asset_class for i in self.infos]

    def __len__(self) -> int:
        return len(self.infos)

    def get(self, asset_id: str) -> AssetInfo | None:
        return self.by_id.get(asset_id)
