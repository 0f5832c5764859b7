// Countersign's service worker: shows the Web Push notifications the server sends about
// approval requests, and opens the request's page when one is clicked. It caches nothing.
"use strict";

self.addEventListener("install", function () { self.skipWaiting(); });
self.addEventListener("activate", function (event) { event.waitUntil(self.clients.claim()); });

// Only this dashboard's own pages are opened.
function ownUrl(raw) {
  var fallback = new URL("/ui/queue", self.location.origin);
  if (!raw) { return fallback.href; }
  try {
    var url = new URL(raw, self.location.origin);
    return (url.origin === self.location.origin ? url : new URL(url.pathname, self.location.origin)).href;
  } catch (_) {
    return fallback.href;
  }
}

self.addEventListener("push", function (event) {
  var data = {};
  try { data = event.data ? event.data.json() : {}; } catch (_) { data = {}; }
  var options = {
    body: typeof data.body === "string" ? data.body : "",
    icon: "/ui/static/icon-192.png",
    badge: "/ui/static/icon-192.png",
    data: { url: ownUrl(data.url) }
  };
  if (data.tag) {
    // A later message about the same request replaces this one, and still alerts.
    options.tag = String(data.tag);
    options.renotify = true;
  }
  if (data.event === "requested" || data.event === "escalated") { options.requireInteraction = true; }
  var title = typeof data.title === "string" && data.title ? data.title : "Countersign";
  event.waitUntil(self.registration.showNotification(title, options));
});

self.addEventListener("notificationclick", function (event) {
  event.notification.close();
  var url = ownUrl(event.notification.data && event.notification.data.url);
  event.waitUntil(
    self.clients.matchAll({ type: "window", includeUncontrolled: true }).then(function (windows) {
      for (var i = 0; i < windows.length; i++) {
        if (windows[i].url === url && "focus" in windows[i]) { return windows[i].focus(); }
      }
      return self.clients.openWindow(url);
    })
  );
});
