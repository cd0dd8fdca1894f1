"""Face detection, alignment, embedding, quality and liveness."""
