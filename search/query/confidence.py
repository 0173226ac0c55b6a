"""An honest "no match": whether any re-ranked result clears the ITM probability threshold.

ITM's P(match) is the calibrated signal (ITC cosines are not comparable across queries), so the
verdict applies to re-ranked queries only: ``no_confident_match`` is true when no result's ITM
probability reaches ``QueryOptions.no_match_threshold`` (``BLIPSEARCH_NO_MATCH_THRESHOLD``),
and false for queries that were not re-ranked (there is nothing to judge them by).
"""

from __future__ import annotations

from collections.abc import Sequence

from blipsearch.limits import NO_MATCH_THRESHOLD
from search.results import Hit, QueryOptions


def no_confident_match(hits: Sequence[Hit], options: QueryOptions | None) -> bool:
    cut = options.no_match_threshold if options is not None else NO_MATCH_THRESHOLD
    return not any(h.itm_score is not None and h.itm_score >= cut for h in hits)
