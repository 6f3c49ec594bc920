"""The base class of the DETR-style grounding baselines (Moment-DETR, QD-DETR, TR-DETR, EaTR, UVCOM).

A grounding-only model exposes `encode_video`, `encode_music` and `detect`, but no `relevance`: it cannot rank
tracks, so the evaluation runs it in single-music mode (SmG) only. Per item it keeps the projected tokens; the whole
cross-modal computation depends on the (video, track) pair and runs in `detect`.
"""

from __future__ import annotations

from torch import Tensor, nn

from mgsv.models.baselines.common import (
    DetrBaselineConfig,
    GroundingOutput,
    InputProjection,
    RankedDetection,
    TokenEncoding,
    inverse_sigmoid,
    project_tokens,
)
from mgsv.models.contract import Capabilities
from mgsv.models.layers import MLP


class DetrGroundingModel(nn.Module):
    """Input projections, span / class heads, the training forward and the set-prediction losses.

    Subclasses add `detect(video, music) -> RankedDetection` for aligned pairs (video i in track i).
    """

    config_class: type = DetrBaselineConfig
    capabilities = Capabilities(grounds=True)

    def __init__(self, config: DetrBaselineConfig) -> None:
        super().__init__()
        self.config = config
        self.video_proj = InputProjection(config.video_dim, config.dim, config.input_dropout)
        self.music_proj = InputProjection(config.music_dim, config.dim, config.input_dropout)
        self.span_head = MLP(config.dim, config.dim, 2, 3)
        self.class_head = nn.Linear(config.dim, 2)  # index 0 = foreground

    # -- the model interface ----------------------------------------------------------------------------------

    def encode_video(self, frame_feats: Tensor, frame_mask: Tensor) -> TokenEncoding:
        """frame_feats [B, Lv, 512] + mask -> projected frame tokens (the moment-retrieval "query")."""
        return project_tokens(self.video_proj, frame_feats, frame_mask, "frame_feats", self.config.video_dim,
                              self.config.max_video_frames)

    def encode_music(self, segment_feats: Tensor, segment_mask: Tensor) -> TokenEncoding:
        """segment_feats [M, Lm, 768] + mask -> projected segment tokens (the moment-retrieval "clips")."""
        return project_tokens(self.music_proj, segment_feats, segment_mask, "segment_feats", self.config.music_dim,
                              self.config.max_segments)

    def forward(self, frame_feats: Tensor, frame_mask: Tensor, segment_feats: Tensor,
                segment_mask: Tensor) -> GroundingOutput:
        """Training pass over B aligned (video i, track i) pairs."""
        video = self.encode_video(frame_feats, frame_mask)
        music = self.encode_music(segment_feats, segment_mask)
        return GroundingOutput(self.detect(video, music))

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """`enhancement`: the input projections; `detection`: everything else."""
        projections = {id(p) for p in (*self.video_proj.parameters(), *self.music_proj.parameters())}
        return {
            "enhancement": [*self.video_proj.parameters(), *self.music_proj.parameters()],
            "detection": [p for p in self.parameters() if id(p) not in projections and p.requires_grad],
        }

    def omitted_parameters(self) -> dict[str, int]:
        """Official modules left out because only a loss we do not train uses them (see docs/baselines.md)."""
        return {}

    # -- helpers ----------------------------------------------------------------------------------------------

    def _heads(self, hidden: Tensor, references: Tensor | None = None) -> RankedDetection:
        """Class logits and spans of every layer; with anchors, the span head predicts an offset of them."""
        offsets = self.span_head(hidden)
        if references is not None:
            offsets = offsets + inverse_sigmoid(references).to(offsets.dtype)
        return RankedDetection(spans=offsets.sigmoid().float(), logits=self.class_head(hidden).float(),
                               hidden=hidden)
