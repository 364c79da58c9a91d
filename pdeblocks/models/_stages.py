"""Shared timm API for models laid out as stem (feature 0) → ``self.stages`` (features 1…) → head."""
from typing import List, Union

from timm.models._features import feature_take_indices


class StagePruningMixin:
    """``prune_intermediate_layers`` for a stem tap at index 0 followed by one tap per stage."""

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the stages after the last requested tap (and the head); returns the kept indices."""
        take_indices, max_index = feature_take_indices(len(self.stages) + 1, indices)
        prune_end = max_index < len(self.stages)
        self.stages = self.stages[:max_index]
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]['num_chs']
        if prune_head or prune_end:
            self.reset_classifier(0, '')
        return take_indices
