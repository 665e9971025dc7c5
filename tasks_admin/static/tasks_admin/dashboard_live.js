// Keeps the task dashboard current without reloading the page (no <meta http-equiv=refresh>):
// fetches the page again, swaps its figures in place, and tells screen readers politely what
// changed. A Pause/Resume button stops it (WCAG 2.2.2). tests/functional/test_accessibility.py
(function () {
  "use strict";
  const live = document.getElementById("dashboard-live");
  const status = document.querySelector("[data-refresh-status]");
  const toggle = document.querySelector("[data-refresh-toggle]");
  const announcer = document.querySelector("[data-refresh-announcer]");
  if (!live || !status || !toggle || !announcer) return;
  const seconds = Number(status.dataset.refreshSeconds) || 15;
  let paused = false;
  let timer = null;

  function stamp() {
    return new Date().toTimeString().slice(0, 8);
  }

  function metrics(root) {
    const values = new Map();
    for (const node of root.querySelectorAll("[data-metric]")) {
      values.set(node.dataset.metric, { label: node.dataset.label || node.dataset.metric, value: node.textContent.trim() });
    }
    return values;
  }

  function describe(before, after) {
    const changes = [];
    for (const [key, now] of after) {
      const then = before.get(key);
      if (then && then.value !== now.value) changes.push(now.label + ": " + now.value + " (was " + then.value + ")");
    }
    return changes;
  }

  async function refresh() {
    timer = null;
    if (paused) return;
    try {
      const response = await fetch(window.location.href, { headers: { Accept: "text/html" }, credentials: "same-origin" });
      if (response.ok && !paused) {
        const page = new DOMParser().parseFromString(await response.text(), "text/html");
        const fresh = page.getElementById("dashboard-live");
        if (fresh) {
          const before = metrics(live);
          // Keep the keyboard where it was: the link with the same address in the new figures.
          const focused = live.contains(document.activeElement) ? document.activeElement.getAttribute("href") : null;
          live.replaceChildren(...fresh.childNodes);
          if (focused) {
            const again = live.querySelector('a[href="' + CSS.escape(focused) + '"]');
            if (again) again.focus();
          }
          const changes = describe(before, metrics(live));
          if (changes.length) announcer.textContent = "Dashboard updated. " + changes.join("; ") + ".";
          status.textContent = "Figures as of " + stamp() + ", updated every " + seconds + " s.";
        }
      } else if (!response.ok) {
        status.textContent = "Could not update at " + stamp() + " (HTTP " + response.status + "); trying again.";
      }
    } catch (error) {
      status.textContent = "Could not update at " + stamp() + "; trying again.";
    }
    schedule();
  }

  function schedule() {
    if (!paused && timer === null) timer = setTimeout(refresh, seconds * 1000);
  }

  toggle.addEventListener("click", function () {
    paused = !paused;
    toggle.textContent = paused ? "Resume updates" : "Pause updates";
    if (paused) {
      clearTimeout(timer);
      timer = null;
      status.textContent = "Updates paused at " + stamp() + ".";
      announcer.textContent = "Dashboard updates paused.";
    } else {
      announcer.textContent = "Dashboard updates resumed.";
      refresh();
    }
  });

  status.textContent = "Figures as of " + stamp() + ", updated every " + seconds + " s.";
  toggle.hidden = false;
  schedule();
})();
