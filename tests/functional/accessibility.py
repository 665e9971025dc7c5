"""The WCAG 2.2 AA audit the browser tests run on each page: axe-core (bundled by the pinned
axe-playwright-python) injected into the page Playwright shows, at a desktop and a phone width.

A page fails on any serious or critical violation of the rules tagged below. The only violations
let through are the exact rule + element pairs in STOCK_ADMIN_EXCEPTIONS, each from Django's own
admin markup that the project's templates and CSS cannot change (README, "Accessibility").
Used by tests/functional/test_accessibility.py.
"""

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from axe_playwright_python.sync_playwright import Axe

# WCAG 2.0, 2.1 and 2.2, levels A and AA: what the European Accessibility Act points to.
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
FAILING_IMPACTS = {"serious", "critical"}
WIDTHS = {"desktop": (1280, 800), "phone": (375, 812)}
# A folder to save a full-page screenshot of each page at each width in (README, "Accessibility").
SCREENSHOTS = os.environ.get("A11Y_SCREENSHOTS", "")

# (axe rule id, the element's CSS selector as axe reports it) -> why it stays. Keep it empty
# unless Django's stock admin markup is the cause and no template or CSS of ours can fix it.
STOCK_ADMIN_EXCEPTIONS: dict[tuple[str, str], str] = {}

_axe = Axe()
DANGLING_REFERENCES = """() => Array.from(document.querySelectorAll("[aria-describedby], [aria-labelledby]"))
  .flatMap(element => ["aria-describedby", "aria-labelledby"].flatMap(name =>
    (element.getAttribute(name) || "").split(/\\s+/).filter(id => id && !document.getElementById(id))
      .map(id => (element.id ? "#" + element.id : element.tagName.toLowerCase()) + " -> " + id)))"""


@dataclass
class Audit:
    """Every serious or critical violation found on the pages audited so far, by page and width."""

    found: list[str] = field(default_factory=list)
    pages: list[str] = field(default_factory=list)

    def page(self, page, name: str) -> None:
        """Audit what `page` shows now at each width (the layout changes, the markup does not)."""
        for width_name, (width, height) in WIDTHS.items():
            page.set_viewport_size({"width": width, "height": height})
            if SCREENSHOTS:
                slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
                page.screenshot(path=Path(SCREENSHOTS) / f"{slug}-{width}.png", full_page=True)
            self.found.extend(f"{name} @ {width_name} {width}px: {problem}" for problem in violations(page))
        self.pages.append(name)

    def report(self) -> str:
        return f"{len(self.found)} serious or critical WCAG 2.2 AA violations:\n" + "\n".join(self.found)


def violations(page) -> list[str]:
    """The page's serious and critical violations, one line per element, less the documented exceptions."""
    results = _axe.run(
        page, options={"runOnly": {"type": "tag", "values": WCAG_TAGS}, "resultTypes": ["violations"]}
    ).response
    # axe lets a dangling reference pass when another one resolves: a description that names
    # something missing (an error message not rendered with its id) is not read out.
    problems = [
        f"dangling ARIA reference at {ref}: no element has this id" for ref in page.evaluate(DANGLING_REFERENCES)
    ]
    for violation in results["violations"]:
        if violation["impact"] not in FAILING_IMPACTS:
            continue
        for node in violation["nodes"]:
            target = " ".join(str(part) for part in node["target"])
            if (violation["id"], target) in STOCK_ADMIN_EXCEPTIONS:
                continue
            problems.append(f"{violation['id']} ({violation['impact']}) at {target}: {node['failureSummary']!r}")
    return problems


@dataclass(frozen=True)
class Visit:
    """One page to audit: `go` brings the browser there (it may click through a flow: the
    visits of a list run in order in one browser), `name` says which page it is in a failure."""

    name: str
    go: Callable[..., None]


# The focused element's focus indicator, as the browser draws it: an outline or a box shadow.
FOCUS_STYLE = """() => {
  const element = document.activeElement, style = getComputedStyle(element);
  return {
    element: element.outerHTML.slice(0, 120),
    outline: style.outlineStyle !== "none" && parseFloat(style.outlineWidth) >= 2,
    shadow: style.boxShadow !== "none",
  };
}"""


def tab_to(page, target, limit: int = 60) -> None:
    """Press Tab, and only Tab, until `target` (a locator) has the focus; each element the focus
    passes on the way must show it visibly (WCAG 2.4.7): at least a 2 px outline, or a shadow."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        focus = page.evaluate(FOCUS_STYLE)
        assert focus["outline"] or focus["shadow"], f"no visible focus on {focus['element']}"
        if target.evaluate("element => element === document.activeElement"):
            return
    raise AssertionError(f"{target} never got the focus in {limit} presses of Tab")
