"""ViT-Tiny and ViT-Small from timm as tap encoders: ``vit-tiny`` (192 wide, 3 heads) and ``vit-small`` (384, 6).

Both are timm's ``VisionTransformer`` (12 pre-norm blocks, a class token, learnt position embeddings), regrouped
into one submodule per group of three blocks. The patch size follows the input size: 16 px patches at 224 px (the
ViT/DeiT/DINO setting, a 14x14 grid), 4 px patches at 32 px (an 8x8 grid, as the CIFAR ViTs of the SSL
literature use); ``patch_size`` overrides it.

Taps, in network order, after blocks 3, 6, 9 and 12 (the residual stream as the block leaves it; the final
LayerNorm is not applied to any tap, the probes' BatchNorm standardises each feature):

- ``blockN``: the patch tokens as a (B, C, h, w) map (token (i, j) of the grid at [:, :, i, j]), so the probes'
  spatial pooling applies to it exactly as to a convolutional map;
- ``blockN-cls``: the class token, a (B, C) vector (never pooled).

``forward`` is the final LayerNorm's class token, (B, C): timm's ``pre_logits`` and the representation DINO's
heads sit on.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from train.models.contract import select_taps
from train.models.registry import register_encoder

if TYPE_CHECKING:
    from timm.models.vision_transformer import VisionTransformer

TAPPED_BLOCKS = (3, 6, 9, 12)


class TokenEmbedding(nn.Module):
    """Image -> tokens: timm's patch embedding, the class token prepended, position embeddings added."""

    def __init__(self, vit: VisionTransformer) -> None:
        super().__init__()
        self.patch_embed = vit.patch_embed
        # other input sizes (DINO's local crops) are accepted: any multiple of the patch size
        self.patch_embed.strict_img_size = False
        self.cls_token = vit.cls_token
        self.pos_embed = vit.pos_embed

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.patch_embed(x)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        grid = (x.shape[-2] // self.patch_embed.patch_size[0], x.shape[-1] // self.patch_embed.patch_size[1])
        return torch.cat([cls, tokens], dim=1) + self.position_embedding(grid)

    def position_embedding(self, grid: tuple[int, int]) -> Tensor:
        """The learnt position embeddings for a ``grid`` of patches: as learnt at the design size, else the patch
        part resized bicubically (DINO's ``interpolate_pos_encoding``, for its smaller local crops)."""
        design = self.patch_embed.grid_size
        if tuple(grid) == tuple(design):
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        patch_map = patch_pos.reshape(1, design[0], design[1], -1).permute(0, 3, 1, 2)
        resized = torch.nn.functional.interpolate(patch_map, size=grid, mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, resized.flatten(2).transpose(1, 2)], dim=1)


class ClassToken(nn.Module):
    """The class token of a token sequence (parameter-free: the module of a ``blockN-cls`` tap)."""

    def forward(self, tokens: Tensor) -> Tensor:
        return tokens[:, 0]


class ViTEncoder(nn.Module):
    """A timm ViT with taps ``block3``, ``block3-cls``, ..., ``block12``, ``block12-cls`` (see the module doc).

    ``tap_module('block3')`` is the embedding and blocks 1-3, ``tap_module('blockN')`` the three blocks before
    tap N; a ``blockN-cls`` tap adds no parameters (its module is a parameter-free :class:`ClassToken`), except
    the last, whose module is the final LayerNorm that ``forward`` applies after it.
    """

    input_channels = 3

    def __init__(self, *, embed_dim: int, num_heads: int, input_size: int, patch_size: int | None) -> None:
        # imported here, not at module level: the registry imports every module of train/models whenever it is
        # read, and importing timm costs every probe and train command about a second
        from timm.models.vision_transformer import VisionTransformer

        super().__init__()
        patch_size = patch_size or (4 if input_size <= 64 else 16)
        if input_size % patch_size:
            raise ValueError(f"input_size {input_size} is not a multiple of patch_size {patch_size}")
        vit = VisionTransformer(img_size=input_size, patch_size=patch_size, embed_dim=embed_dim, depth=12,
                                num_heads=num_heads, num_classes=0)
        self.input_size = input_size
        self.patch_size = patch_size
        self.grid = input_size // patch_size
        self.embed_dim = embed_dim
        starts = (0, *TAPPED_BLOCKS[:-1])
        groups = [nn.Sequential(*vit.blocks[start:end]) for start, end in zip(starts, TAPPED_BLOCKS, strict=True)]
        groups[0] = nn.Sequential(TokenEmbedding(vit), *groups[0])
        self.groups = nn.ModuleList(groups)
        self.class_token = ClassToken()
        self.norm = vit.norm
        self.taps = tuple(name for n in TAPPED_BLOCKS for name in (f"block{n}", f"block{n}-cls"))

    def _patch_map(self, tokens: Tensor) -> Tensor:
        patches = tokens[:, 1:]
        return patches.transpose(1, 2).reshape(tokens.shape[0], self.embed_dim, self.grid, self.grid)

    def forward_taps(self, x: Tensor, names: Sequence[str] | None = None) -> dict[str, Tensor]:
        wanted = select_taps(self.taps, names)
        last = max((self.taps.index(n) for n in wanted), default=-1)
        out: dict[str, Tensor] = {}
        for index, group in enumerate(self.groups):
            if 2 * index > last:
                break
            x = group(x)
            block = TAPPED_BLOCKS[index]
            if f"block{block}" in wanted:
                out[f"block{block}"] = self._patch_map(x)
            if f"block{block}-cls" in wanted:
                out[f"block{block}-cls"] = self.class_token(x)
        return out

    def forward(self, x: Tensor) -> Tensor:
        for group in self.groups:
            x = group(x)
        return self.class_token(self.norm(x))

    def first_layer_weight(self) -> Tensor:
        """The patch embedding's filters, (C, 3, patch, patch)."""
        return self.groups[0][0].patch_embed.proj.weight

    def tap_module(self, name: str) -> nn.Module:
        select_taps(self.taps, [name])
        index = self.taps.index(name)
        if index % 2 == 0:
            return self.groups[index // 2]
        return self.norm if index == len(self.taps) - 1 else self.class_token

    def for_probing(self) -> ViTEncoder:
        """An eval-mode copy (LayerNorm has no running statistics to fold)."""
        return copy.deepcopy(self).eval()


@register_encoder("vit-tiny")
def vit_tiny(input_size: int = 224, patch_size: int | None = None) -> ViTEncoder:
    """ViT-Tiny (192 wide, 3 heads, 12 blocks); 16 px patches at 224 px, 4 px at 32 px (``input_size=32``)."""
    return ViTEncoder(embed_dim=192, num_heads=3, input_size=input_size, patch_size=patch_size)


@register_encoder("vit-small")
def vit_small(input_size: int = 224, patch_size: int | None = None) -> ViTEncoder:
    """ViT-Small (384 wide, 6 heads, 12 blocks); 16 px patches at 224 px, 4 px at 32 px (``input_size=32``)."""
    return ViTEncoder(embed_dim=384, num_heads=6, input_size=input_size, patch_size=patch_size)
