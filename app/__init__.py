"""Picsearch: reverse image search on CNN features and Milvus."""

__version__ = "0.1.0"
