"""Schemathesis hooks for .ci/openapi: tus chunks (application/offset+octet-stream) are raw
bytes, which schemathesis cannot generate for a media type it does not know."""

from hypothesis import strategies as st

import schemathesis

schemathesis.openapi.media_type("application/offset+octet-stream", st.binary(max_size=256))
