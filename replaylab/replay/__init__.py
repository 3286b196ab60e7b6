"""Replay: the ring-buffer storage and the samplers that read it."""
