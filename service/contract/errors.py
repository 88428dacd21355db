"""The two error bodies: RFC 9457 problem details, and the protocols' {"error", "code"}."""

from __future__ import annotations

from pydantic import (
    BaseModel,
    Field,
)


class Problem(BaseModel):
    """RFC 9457 problem details, with the service's stable `code`."""

    type: str
    title: str
    status: int = Field(ge=400, le=599)
    code: str
    detail: str = Field(description="What went wrong, in plain words.")


class ProtocolError(BaseModel):
    """The error of /v1 and /v2: TF Serving's and KServe's `error`, with our stable `code`."""

    error: str = Field(description="What went wrong, in plain words.")
    code: str
