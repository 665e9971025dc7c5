// Keeps the order page current while its workflow runs, by polling the order's JSON status.
(function () {
  "use strict";
  const root = document.getElementById("order");
  if (!root) return;  // polled once even when finished: its last step records may be on their way
  // How often to look again: while the workflow moves, while staff are to act (on hold), and after
  // the order is final (a last message may still be on its way).
  const MOVING = 500, WAITING_FOR_STAFF = 15000, FINAL = 1000;

  // Screen readers hear what changed, once, when they are idle (aria-live="polite").
  const announcer = root.querySelector("[data-testid=order-announcer]");
  // What is said: the status, then every other line ("payment: refunded", each message) when new.
  function describe(order) {
    return [order.status_label, "payment: " + order.payment.label].concat(order.notifications.map(function (n) {
      return n.channel + " to " + n.to + ": " + n.status;
    }));
  }
  let told = null;

  function announce(order) {
    const now = describe(order);
    if (told !== null && announcer) {
      const news = [];
      if (now[0] !== told[0]) news.push("Order status: " + now[0] + ".");
      for (const line of now.slice(1)) if (!told.includes(line)) news.push(line.charAt(0).toUpperCase() + line.slice(1) + ".");
      if (news.length) announcer.textContent = news.join(" ");
    }
    told = now;
  }

  function render(order) {
    if (told === null) {  // what the page showed when it was loaded
      told = [root.querySelector("[data-testid=order-status]").textContent.trim(),
        "payment: " + root.querySelector("[data-testid=payment-status]").textContent.trim()].concat(
        Array.from(root.querySelectorAll("[data-testid=notifications] li:not(.muted)"), function (li) { return li.textContent.trim(); }));
    }
    announce(order);
    const status = root.querySelector("[data-testid=order-status]");
    status.textContent = order.status_label;
    status.className = "status status-" + order.status;
    const payment = root.querySelector("[data-testid=payment-status]");
    payment.textContent = order.payment.label;
    payment.className = "payment payment-" + order.payment.status;
    const offer = root.querySelector("[data-testid=cancel-offer]");
    if (offer && !order.cancellable) offer.remove();  // being cancelled, or shipped: no longer offered
    const reason = root.querySelector("[data-testid=failure-reason]");
    reason.textContent = order.failure_reason ? order.failure_reason.charAt(0).toUpperCase() + order.failure_reason.slice(1) : "";
    reason.hidden = !order.failure_reason;
    for (const step of order.steps) {
      const item = root.querySelector('[data-step="' + step.name + '"]');
      if (!item) continue;
      item.className = "step state-" + step.state.toLowerCase();
      item.querySelector(".step-state").textContent = step.state;
      item.querySelector(".step-meta").textContent = step.attempts ? "attempt " + step.attempts : "";
    }
    const list = root.querySelector("[data-testid=notifications]");
    list.replaceChildren(...order.notifications.map(function (n) {
      const li = document.createElement("li");
      li.textContent = n.channel + " to " + n.to + ": " + n.status;
      return li;
    }));
    if (!order.notifications.length) {
      const li = document.createElement("li");
      li.className = "muted";
      li.textContent = "None yet.";
      list.append(li);
    }
    return order.final;
  }

  // Steps are recorded in the worker's next batch, a moment after the order moves on.
  function settled(order) {
    const sent = order.notifications.every(function (n) { return n.status !== "pending"; });
    const recorded = order.steps.every(function (step) {
      return order.status === "confirmed" ? step.state === "SUCCESS" : !["STARTED", "RETRY"].includes(step.state);
    });
    return sent && recorded;
  }

  let delay = 500;
  async function poll() {
    try {
      const response = await fetch(root.dataset.statusUrl, { headers: { Accept: "application/json" } });
      if (response.ok) {
        const order = await response.json();
        const finished = render(order);
        if (finished && settled(order)) return;
        delay = finished ? FINAL : order.moving ? MOVING : WAITING_FOR_STAFF;
      }
    } catch (error) {
      delay = Math.min(delay * 2, 10000);  // back off while the server is unreachable
    }
    setTimeout(poll, delay);
  }
  setTimeout(poll, delay);
})();
