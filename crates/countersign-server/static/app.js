// Countersign dashboard: live updates over server-sent events, countdowns, and a few
// conveniences. Plain script, no build step; the pages work without it, only less live.
(function () {
  "use strict";

  function refresh(selector) {
    var el = document.querySelector(selector);
    if (el && window.htmx) { window.htmx.trigger(el, "refresh"); }
  }

  // One stream per page: the queue reloads its list, a request page reloads its panel.
  function listen() {
    var queue = document.getElementById("queue-filters");
    var panel = document.getElementById("decision");
    if (!queue && !panel) { return; }
    var source = new EventSource("/ui/events");
    var pending = null;
    source.addEventListener("request", function (e) {
      var data = {};
      try { data = JSON.parse(e.data); } catch (_) { return; }
      // A decided request never changes again; keep the outcome (and its notice) as shown.
      var shown = panel && panel.querySelector("[data-status]");
      var settled = shown && shown.dataset.status !== "pending";
      // While this page's own decision is on its way, its answer will show the outcome.
      var busy = panel && panel.dataset.busy === "1";
      if (panel && !settled && !busy && (data.kind === "resync" || data.id === panel.dataset.requestId)) {
        refresh("#decision");
      }
      if (queue) {
        // Several events in a burst cause one reload.
        clearTimeout(pending);
        pending = setTimeout(function () { refresh("#queue-filters"); }, 100);
      }
    });
    // The session ended elsewhere: reloading leads to the sign-in page.
    source.addEventListener("signed_out", function () {
      source.close();
      window.location.reload();
    });
    source.addEventListener("open", function () { document.body.dataset.live = "on"; });
    source.addEventListener("error", function () { document.body.dataset.live = "off"; });
  }

  function formatLeft(ms) {
    if (ms <= 0) { return "expired"; }
    var s = Math.floor(ms / 1000);
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    if (h > 0) { return h + " h " + m + " min left"; }
    if (m > 0) { return m + " min " + sec + " s left"; }
    return sec + " s left";
  }

  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-expires-at]").forEach(function (el) {
      var left = Date.parse(el.dataset.expiresAt) - now;
      el.textContent = formatLeft(left);
      if (left <= 0 && !el.dataset.done) {
        el.dataset.done = "1";
        if (el.closest("#decision")) { setTimeout(function () { refresh("#decision"); }, 1500); }
      }
    });
  }

  // Buttons that copy a one-time link or key to the clipboard.
  document.addEventListener("click", function (e) {
    var btn = e.target.closest("[data-copy]");
    if (!btn) { return; }
    var target = document.getElementById(btn.dataset.copy);
    if (target && navigator.clipboard) {
      navigator.clipboard.writeText(target.value || target.textContent);
      btn.textContent = "Copied";
    }
  });

  document.addEventListener("htmx:beforeRequest", function (e) {
    var panel = document.getElementById("decision");
    if (panel && e.target.closest && e.target.closest("#decision form")) { panel.dataset.busy = "1"; }
  });
  document.addEventListener("htmx:afterRequest", function (e) {
    var panel = document.getElementById("decision");
    var verb = e.detail && e.detail.requestConfig && e.detail.requestConfig.verb;
    if (panel && verb === "post") { delete panel.dataset.busy; }
  });

  // "Notify this device" on the account page: registers the service worker, subscribes to
  // Web Push with the server's key, and hands the subscription to the server.
  function keyBytes(b64url) {
    var s = b64url.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) { s += "="; }
    var bin = atob(s), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { out[i] = bin.charCodeAt(i); }
    return out;
  }

  function sameKey(sub, key) {
    var have = sub.options && sub.options.applicationServerKey;
    if (!have) { return false; }
    var a = new Uint8Array(have);
    if (a.length !== key.length) { return false; }
    for (var i = 0; i < a.length; i++) { if (a[i] !== key[i]) { return false; } }
    return true;
  }

  function pushDevice() {
    var box = document.querySelector("[data-push-device]");
    if (!box) { return; }
    var button = box.querySelector("[data-push-subscribe]");
    var status = box.querySelector("[data-push-status]");
    if (!("serviceWorker" in navigator) || !("PushManager" in window) || !("Notification" in window)) {
      status.textContent = "This browser cannot get push notifications (on iPhone and iPad, add the dashboard to the home screen first).";
      return;
    }
    status.textContent = Notification.permission === "denied"
      ? "Notifications are blocked for this site in the browser's settings."
      : "";
    button.hidden = false;
    button.addEventListener("click", function () {
      var key = keyBytes(box.dataset.key);
      button.disabled = true;
      status.textContent = "Asking the browser…";
      Notification.requestPermission().then(function (permission) {
        if (permission !== "granted") { throw new Error("notifications were not allowed"); }
        return navigator.serviceWorker.register(box.dataset.worker, { scope: box.dataset.scope });
      }).then(function () {
        return navigator.serviceWorker.ready;
      }).then(function (reg) {
        return reg.pushManager.getSubscription().then(function (old) {
          if (old && sameKey(old, key)) { return old; }
          var fresh = function () {
            return reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
          };
          return old ? old.unsubscribe().then(fresh) : fresh();
        });
      }).then(function (sub) {
        var meta = document.querySelector('meta[name="csrf-token"]');
        return fetch(box.dataset.endpoint, {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-CSRF-Token": meta ? meta.content : "" },
          body: JSON.stringify(sub.toJSON())
        });
      }).then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (j) {
          if (!r.ok) { throw new Error((j.error && j.error.message) || ("the server answered " + r.status)); }
          window.location.assign(j.next || window.location.href);
        });
      }).catch(function (e) {
        button.disabled = false;
        status.textContent = "This device was not subscribed: " + e.message;
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    pushDevice();
    listen();
    tick();
    setInterval(tick, 1000);
  });
})();
