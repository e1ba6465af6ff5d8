"""The captioning network in plain PyTorch (no Lightning): usable on its own."""

from captioner.model.attention import BahdanauAttention
from captioner.model.decoder import CaptionDecoder
from captioner.model.encoder import RegionEncoder
from captioner.model.sampling import sample_captions
from captioner.model.search import beam_search, greedy_decode

__all__ = ["BahdanauAttention", "CaptionDecoder", "RegionEncoder", "beam_search", "greedy_decode",
           "sample_captions"]
