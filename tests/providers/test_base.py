"""Values that cross the provider protocol: usage parsing and retry hints."""

from __future__ import annotations

import pytest

from gateway.providers.base import Usage, retry_after_seconds


@pytest.mark.parametrize(
    "headers,expected",
    [
        ({}, None),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after": "-4"}, 0.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "soon", "retry-after": "2"}, 2.0),
        ({"retry-after-ms": "100", "retry-after": "7"}, 0.1),
    ],
)
def test_retry_after_seconds(headers, expected):
    assert retry_after_seconds(headers) == expected


@pytest.mark.parametrize(
    "usage,expected",
    [
        ({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}, Usage(3, 4)),
        ({"prompt_tokens": 3, "total_tokens": 3}, Usage(3, 0)),  # embeddings
        ({"prompt_tokens": "3", "completion_tokens": None}, Usage(0, 0)),
        ({}, Usage(0, 0)),
        (None, None),
        ("12", None),
    ],
)
def test_usage_from_openai(usage, expected):
    assert Usage.from_openai(usage) == expected
