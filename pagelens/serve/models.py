"""Request and response records of the HTTP API (pydantic at the I/O edge).

Field names are the wire format's (:mod:`pagelens.wire`): the response records
describe, for the OpenAPI page, the objects :mod:`pagelens.wire` and the records'
``to_dict()`` make; a search's hits and documents carry ``image``, the URL of the
page's image, as well.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pagelens.search import CHANNELS, FUSIONS


class FilterBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    doc_paths: list[str] | None = Field(None, description="Only these documents (paths).")
    path_prefix: str | None = Field(None, description="Only documents under this folder.")


class SearchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queries: list[str] = Field(..., description="Questions, in words.", min_length=1)
    k: int = Field(10, ge=1, description="Hits per question.")
    channels: list[str] | None = Field(
        None, description=f"Any of {list(CHANNELS)}; none: every channel the index holds."
    )
    fusion: str = Field("dbsf", description=f"One of {list(FUSIONS)}.")
    weights: dict[str, float] | None = Field(None, description="RRF weight per channel.")
    filter: FilterBody | None = None


class DocumentSearchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(..., description="One question.")
    k: int = Field(10, ge=1, description="Documents to return.")
    per_document: int = Field(3, ge=1, description="Best pages kept per document.")
    channels: list[str] | None = None
    fusion: str = "dbsf"
    weights: dict[str, float] | None = None
    filter: FilterBody | None = None


class IndexBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    paths: list[str] = Field(..., description="Files or folders on the server's disk.")
    ocr: Literal["auto", "never", "always"] = Field(
        "auto", description="Where the index keeps page text: OCR pages without a text layer."
    )


class HitOut(BaseModel):
    doc_path: str = Field(..., description="The document's path as the index records it.")
    page_number: int
    score: float
    doc_sha256: str = Field(..., description="The document's id.")
    channels: list[str] = Field(..., description="The channels whose results held the page.")
    source: str | None = Field(None, description="The file it was indexed from.")
    snippet: str | None = Field(None, description="Page text around the question's word.")
    image: str = Field(..., description="URL of the page image.")


class QueryHits(BaseModel):
    query: str
    hits: list[HitOut]


class PageOut(BaseModel):
    page_number: int
    score: float
    channels: list[str]
    image: str = Field(..., description="URL of the page image.")


class DocumentOut(BaseModel):
    doc_path: str
    doc_sha256: str = Field(..., description="The document's id.")
    score: float = Field(..., description="Its best page's score.")
    source: str | None = None
    pages: list[PageOut]


class QueryDocuments(BaseModel):
    query: str
    documents: list[DocumentOut]


class SearchOut(BaseModel):
    schema_version: int
    channels: list[str]
    fusion: str
    k: int
    milliseconds: float
    results: list[QueryHits]


class DocumentSearchOut(BaseModel):
    schema_version: int
    channels: list[str]
    fusion: str
    k: int
    milliseconds: float
    results: list[QueryDocuments]
