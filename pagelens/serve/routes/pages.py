"""``/pages/{doc}/{page}/...``: a page's image, and which parts of it matched a question."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from pagelens.serve.pages import page_hit
from pagelens.serve.state import ServedDep, authorised
from pagelens.wire import tagged

router = APIRouter(dependencies=[Depends(authorised)], tags=["pages"])


@router.get(
    "/pages/{doc}/{page}/image",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
    summary="The page, rendered again from its checked source file (PNG).",
)
def page_image(
    served: ServedDep, doc: str, page: int, dpi: Annotated[int, Query(ge=1)] = 100
) -> Response:
    served.limits.check_dpi(dpi)
    hit = page_hit(served.lens.index, doc, page)
    data = served.images.png(hit, dpi)
    return Response(data, media_type="image/png", headers={"Cache-Control": "no-cache"})


@router.get("/pages/{doc}/{page}/explain")
def explain(
    served: ServedDep,
    doc: str,
    page: int,
    q: Annotated[str, Query(description="The question.")],
    channel: Annotated[
        str | None, Query(description="dense (the index's encoder) or text.")
    ] = None,
) -> dict[str, Any]:
    """Which parts of the page matched which query tokens, and how well.

    A visual encoder gives a heatmap per query token over the page's patch grid
    (``kind="heatmap"``); a text encoder the page words each token matched, with
    their boxes as fractions of the page (``kind="boxes"``).
    """
    served.limits.check_queries([q])
    return tagged(served.lens.explain(doc, page, q, channel=channel).to_dict())
