"""The decision rule: how a measured error and its expanded uncertainty become a verdict.

ISO/IEC 17025:2017 §7.1.3 and §7.8.6 ask a laboratory that states conformity to a
specification to say which decision rule it applied and to apply it. ILAC-G8:09/2019 §4.2
describes three; all three are here, chosen in the station file or with ``--decision-rule``
(the guard band ``w = r·U`` with ``--guard-band r``):

=================  ==========  =================================================================
rule               ILAC-G8     statements (TL: the tolerance limit, |e|: the error, w = r·U)
=================  ==========  =================================================================
``simple``         §4.2.1      pass if |e| ≤ TL, else fail (w = 0: shared risk, up to 50 %)
``guard-band``     §4.2.2      pass if |e| ≤ TL − w, else fail
``non-binary``     §4.2.3      pass if |e| ≤ TL − w; conditional pass if |e| ≤ TL;
                               conditional fail if |e| ≤ TL + w; else fail
=================  ==========  =================================================================

The default is ``non-binary`` with ``r = 1`` (w = U): a point is *conditional* exactly when its
expanded-uncertainty interval straddles the limit. A value on a boundary takes the kinder
side (``≤``), as ILAC-G8's figures draw it. The decision is made on the values as the
certificate reports them (error rounded to the digit of U, U rounded up), so a reader reaches
the same verdict from the printed numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from micropen.host.errors import InvalidInput

from .measurements import Verdict

__all__ = ["GUARD_BAND_MAX", "DecisionRule", "RuleKind"]

GUARD_BAND_MAX = 3.0  # r beyond 3 (w = 3U) is no longer a risk choice, it is a broken budget
_SLACK = 1e-12  # float noise: a value printed on the limit is on the limit


class RuleKind(StrEnum):
    SIMPLE = "simple"
    GUARD_BAND = "guard-band"
    NON_BINARY = "non-binary"


_SECTIONS = {
    RuleKind.SIMPLE: "§4.2.1 binary statement, simple acceptance (w = 0)",
    RuleKind.GUARD_BAND: "§4.2.2 binary statement with guard band",
    RuleKind.NON_BINARY: "§4.2.3 non-binary statement with guard band",
}


@dataclass(frozen=True)
class DecisionRule:
    """One of ILAC-G8:09/2019's decision rules; ``guard_band`` is r in w = r·U."""

    kind: RuleKind = RuleKind.NON_BINARY
    guard_band: float = 1.0

    @classmethod
    def parse(cls, kind: str, guard_band: float | None = None) -> DecisionRule:
        """From the station file or the command line; InvalidInput naming the value."""
        try:
            rule_kind = RuleKind(kind)
        except ValueError:
            raise InvalidInput(
                f"decision rule {kind!r} is not one of {', '.join(k.value for k in RuleKind)}; "
                "see docs/calibration.md, 'Decision rule'"
            ) from None
        rule = cls(rule_kind, 1.0 if guard_band is None else float(guard_band))
        rule.check()
        return rule

    def check(self) -> None:
        r = self.guard_band
        if not math.isfinite(r) or not 0.0 <= r <= GUARD_BAND_MAX:
            raise InvalidInput(
                f"guard band factor {r} is outside 0–{GUARD_BAND_MAX:g} (w = r·U); "
                "give --guard-band in that range (1 is the usual w = U)"
            )

    @property
    def factor(self) -> float:
        """r as applied: the simple rule has no guard band."""
        return 0.0 if self.kind is RuleKind.SIMPLE else self.guard_band

    def judge(self, error: float, expanded: float, tolerance: float) -> Verdict:
        """The statement for one point: ``error`` and ``expanded`` (U) in the limit's units."""
        if not (math.isfinite(error) and math.isfinite(expanded)):
            return Verdict.FAIL
        size, w = abs(error), self.factor * expanded
        if size <= tolerance - w + _SLACK:
            return Verdict.PASS
        if self.kind is not RuleKind.NON_BINARY:
            return Verdict.FAIL
        if size <= tolerance + _SLACK:
            return Verdict.CONDITIONAL_PASS
        if size <= tolerance + w + _SLACK:
            return Verdict.CONDITIONAL_FAIL
        return Verdict.FAIL

    def title(self) -> str:
        band = "" if self.kind is RuleKind.SIMPLE else f", w = {self.guard_band:g}·U"
        return f"ILAC-G8:09/2019 {_SECTIONS[self.kind]}{band}"

    def statement(self) -> str:
        """The paragraph the certificate prints: what the verdict words mean here."""
        w = f"{self.guard_band:g}·U" if self.guard_band != 1 else "U"
        if self.kind is RuleKind.SIMPLE:
            body = (
                "A point passes when its measured error is within the tolerance limit and fails "
                "otherwise; the measurement uncertainty is reported but not used in the decision "
                "(shared risk: the probability of a false acceptance is up to 50 % for an error "
                "at the limit)."
            )
        elif self.kind is RuleKind.GUARD_BAND:
            body = (
                f"A point passes when its measured error is within the acceptance limit, the "
                f"tolerance limit reduced by the guard band w = {w}, and fails otherwise."
            )
        else:
            body = (
                f"Guard band w = {w}. Pass: the error is within the tolerance limit by at least "
                "w. Conditional pass: the error is within the tolerance limit but by less than "
                "w. Conditional fail: the error is beyond the tolerance limit, but by no more "
                "than w. Fail: the error is beyond the tolerance limit by more than w."
            )
        overall = (
            " The overall statement is the worst statement of the points it covers (fail, "
            "then conditional fail, then conditional pass, then pass). Decisions use the "
            "values as reported on this certificate."
        )
        return f"{self.title()}. {body}{overall}"

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.kind.value, "guard_band": self.guard_band}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecisionRule:
        return cls(RuleKind(data["rule"]), float(data["guard_band"]))
