"""The OpenAI-compatible gateway: the hot path of ``/v1`` inference requests."""
