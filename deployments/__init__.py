"""Reusable Ray Serve deployments: LLM engines, embedder, vision encoder, vector store."""
