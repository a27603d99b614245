"""A persistent Chroma store over local sentence embeddings."""
