"""Image-text consistency: the ITM match probability of the image with its accompanying text;
under the policy's (or the default) ``itm_threshold`` the text is not about the image."""

from __future__ import annotations

import time
from typing import Any

from moderation.kinds.itm import Itm, ms
from moderation.policy import Consistency

DEFAULT_CONSISTENCY = Consistency(itm_threshold=0.5, action="review")


class ConsistencyCheck:
    def __init__(self, rule: Consistency | None, itm: Itm) -> None:
        self.rule = rule or DEFAULT_CONSISTENCY
        self.itm = itm

    def check(self, tokens: Any, text: str, timing: dict[str, float]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        t0 = time.perf_counter()
        rule = self.rule
        prob = float(self.itm.probs(tokens, [text])[0])
        out = {"text": text, "itm": prob, "threshold": rule.itm_threshold, "consistent": prob >= rule.itm_threshold}
        timing["consistency"] = ms(t0)
        if out["consistent"]:
            return out, []
        return out, [{"check": "consistency", "score": prob, "threshold": rule.itm_threshold, "action": rule.action}]
