"""Filter literals built for Milvus from user-supplied folders."""

from __future__ import annotations

import pytest

from app.core.errors import BadRequestError
from app.core.vectorstore import _prefix_filter, folder_prefix, image_id, valid_id


def test_prefix_filter_is_a_plain_prefix_pattern_every_milvus_version_reads_alike() -> None:
    """Found against a Milvus 2.3 server: `b\\_c` matched nothing there, so a reload with
    prune of a folder named like `my_photos` pruned nothing (Milvus Lite had hidden it)."""
    assert _prefix_filter("/a/b_c/") == 'path like "/a/b_c/%"'
    assert _prefix_filter('/q"uote/') == 'path like "/q\\"uote/%"'
    assert _prefix_filter("/été/100%/x/") == 'path like "/été/100%"'
    assert _prefix_filter("/back\\slash/") == 'path like "/back%"'
    assert _prefix_filter("/x/new\nline/") == 'path like "/x/new%"'


def test_folder_prefix_matches_below_the_folder_only() -> None:
    assert folder_prefix("/a/b") == folder_prefix("/a/b/") == "/a/b/"
    with pytest.raises(BadRequestError):
        folder_prefix("/bad\udc80")


def test_ids_are_stable_hex_of_fixed_length() -> None:
    ident = image_id("/photos/a.jpg")
    assert ident == image_id("/photos/a.jpg") != image_id("/photos/b.jpg")
    assert valid_id(ident) and not valid_id("../../etc/passwd") and not valid_id(ident.upper())
