"""Encoders: the ``Encoder`` protocol and its adapters."""

from pagelens.encoders.base import Encoder, EncoderSpec

__all__ = ["Encoder", "EncoderSpec"]
