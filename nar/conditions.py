"""What a model is conditioned on: a class id or a text prompt, as one idea.

A condition becomes the *prefix* of the sequence, `cls_token_num` condition tokens before the
grid tokens: one class embedding, or a text encoder's token features projected by the caption
embedder (LlamaGen / NAR t2i). Everything after the prefix (heads, masks, schedules, the
decoding engine) is the same for both.

Text features are left-padded, valid tokens last (as the official t2i code arranges T5
features), so the prefix's last position, which predicts the first grid token, is always a
real token. `mask` marks real tokens; padding is masked out of attention (every position may
still attend itself, so no attention row is empty).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch


@dataclass(frozen=True)
class ClassCondition:
    class_ids: torch.Tensor          # [B] int64

    @property
    def batch(self) -> int:
        return int(self.class_ids.shape[0])

    def to(self, device) -> "ClassCondition":
        return ClassCondition(self.class_ids.to(device))

    def index(self, rows) -> "ClassCondition":
        return ClassCondition(self.class_ids[rows])


@dataclass(frozen=True)
class TextCondition:
    features: torch.Tensor           # [B, L, caption_dim], zero at padding
    mask: torch.Tensor               # [B, L] bool, True at real tokens (left padding)
    prompts: Optional[tuple[str, ...]] = None   # the prompts, for captions and records

    def __post_init__(self):
        if self.features.ndim != 3 or self.mask.shape != self.features.shape[:2]:
            raise ValueError(f"text features must be [B, L, D] with a [B, L] mask, got "
                             f"{tuple(self.features.shape)} and {tuple(self.mask.shape)}")
        if self.mask.dtype != torch.bool:
            raise ValueError("the text mask must be bool")

    @property
    def batch(self) -> int:
        return int(self.features.shape[0])

    def to(self, device) -> "TextCondition":
        return TextCondition(self.features.to(device), self.mask.to(device), self.prompts)

    def index(self, rows) -> "TextCondition":
        prompts = None
        if self.prompts is not None:
            picked = torch.arange(len(self.prompts))[rows]
            prompts = tuple(self.prompts[i] for i in picked.reshape(-1).tolist())
        return TextCondition(self.features[rows], self.mask[rows], prompts)


Condition = Union[ClassCondition, TextCondition]


def as_condition(condition: Union[Condition, torch.Tensor]) -> Condition:
    """A condition as given, or a tensor of class ids as a ClassCondition."""
    if isinstance(condition, (ClassCondition, TextCondition)):
        return condition
    if isinstance(condition, torch.Tensor):
        return ClassCondition(condition)
    raise TypeError(f"a condition is class ids (a tensor), a ClassCondition or a TextCondition, "
                    f"not {type(condition).__name__}")


def condition_kind(condition: Condition) -> str:
    return "text" if isinstance(condition, TextCondition) else "class"


def concatenated(first: Condition, second: Condition) -> Condition:
    """Two conditions of one kind as one batch, first's rows first (CFG: prompt, then null)."""
    if isinstance(first, ClassCondition) and isinstance(second, ClassCondition):
        return ClassCondition(torch.cat([first.class_ids, second.class_ids]))
    if isinstance(first, TextCondition) and isinstance(second, TextCondition):
        prompts = first.prompts + second.prompts if first.prompts and second.prompts else None
        return TextCondition(torch.cat([first.features, second.features]),
                             torch.cat([first.mask, second.mask]), prompts)
    raise TypeError("cannot batch a class condition with a text condition")


def condition_labels(class_names: list[str], condition: Condition) -> list[str]:
    """What each row is conditioned on, for people: its class name, or its prompt."""
    if isinstance(condition, TextCondition):
        return list(condition.prompts) if condition.prompts else ["(text features)"] * condition.batch
    return [class_names[int(i)] for i in condition.class_ids.tolist()]
