"""``/documents``: the committed documents of the index, one with its pages, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from pagelens.serve.state import ServedDep, authorised, image_url
from pagelens.wire import snippet, tagged

router = APIRouter(dependencies=[Depends(authorised)], tags=["documents"])


@router.get("/documents")
def documents(
    served: ServedDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1)] = 50,
) -> dict[str, Any]:
    """List the committed documents, by path, a page of the listing at a time."""
    served.limits.check_page_size(limit)
    records = served.lens.documents()
    return tagged(
        {
            "total": len(records),
            "offset": offset,
            "limit": limit,
            "documents": [r.to_dict() for r in records[offset : offset + limit]],
        }
    )


@router.get("/documents/{doc}")
def document(served: ServedDep, doc: str) -> dict[str, Any]:
    """Show one document (its sha256, or its path where it has no ``/``) and its pages."""
    index = served.lens.index
    record = index.find_document(doc)
    pages = [
        {
            "page_number": int(p["page_number"]),
            "width_pt": p.get("width_pt"),
            "height_pt": p.get("height_pt"),
            "text_source": p.get("text_source"),
            "error": p.get("error"),
            "snippet": snippet(p.get("text")),
            "image": image_url(record.doc_sha256, int(p["page_number"])),
        }
        for p in index.document_pages(record)
    ]
    return tagged({**record.to_dict(), "pages": pages})


@router.delete("/documents/{doc}")
def delete_document(served: ServedDep, doc: str) -> dict[str, Any]:
    """Delete a document and its pages."""
    record = served.lens.index.find_document(doc)
    removed = served.lens.delete(record.doc_sha256)
    return tagged({"deleted": record.doc_path, "doc_sha256": record.doc_sha256, "pages": removed})
