"""Facades speaking the HTTP APIs of Milvus' reverse image search demo, over Picsearch.

Each module serves one demo server's routes, under its own prefix, with the response texts
and shapes the demo's clients read; every path rule and the API key still apply.
"""
