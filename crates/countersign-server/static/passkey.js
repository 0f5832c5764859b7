// Passkey ceremonies: the server sends WebAuthn options as JSON with base64url binary
// fields; the browser wants ArrayBuffers, and the answer goes back as base64url again.
(function () {
  "use strict";

  function b64urlToBuf(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) { s += "="; }
    var bin = atob(s), bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { bytes[i] = bin.charCodeAt(i); }
    return bytes.buffer;
  }

  function bufToB64url(buf) {
    var bytes = new Uint8Array(buf), bin = "";
    for (var i = 0; i < bytes.length; i++) { bin += String.fromCharCode(bytes[i]); }
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function csrf() {
    var m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.content : "";
  }

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
      body: JSON.stringify(body)
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (j) {
        if (!r.ok) {
          var msg = (j.error && j.error.message) || ("the server answered " + r.status);
          throw new Error(msg);
        }
        return j;
      });
    });
  }

  function creationOptions(o) {
    var pk = o.publicKey;
    pk.challenge = b64urlToBuf(pk.challenge);
    pk.user.id = b64urlToBuf(pk.user.id);
    (pk.excludeCredentials || []).forEach(function (c) { c.id = b64urlToBuf(c.id); });
    return { publicKey: pk };
  }

  function requestOptions(o) {
    var pk = o.publicKey;
    pk.challenge = b64urlToBuf(pk.challenge);
    (pk.allowCredentials || []).forEach(function (c) { c.id = b64urlToBuf(c.id); });
    return { publicKey: pk };
  }

  function registration(cred) {
    return {
      id: cred.id,
      rawId: bufToB64url(cred.rawId),
      type: cred.type,
      extensions: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
      response: {
        attestationObject: bufToB64url(cred.response.attestationObject),
        clientDataJSON: bufToB64url(cred.response.clientDataJSON),
        transports: cred.response.getTransports ? cred.response.getTransports() : undefined
      }
    };
  }

  function assertion(cred) {
    return {
      id: cred.id,
      rawId: bufToB64url(cred.rawId),
      type: cred.type,
      extensions: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
      response: {
        authenticatorData: bufToB64url(cred.response.authenticatorData),
        clientDataJSON: bufToB64url(cred.response.clientDataJSON),
        signature: bufToB64url(cred.response.signature),
        userHandle: cred.response.userHandle ? bufToB64url(cred.response.userHandle) : null
      }
    };
  }

  function show(form, text, ok) {
    var out = form.querySelector("[data-passkey-status]");
    if (out) {
      out.textContent = text;
      out.className = ok ? "notice ok" : "notice error";
      out.hidden = false;
    }
  }

  // <form data-passkey="register|sign-in" data-begin=URL data-finish=URL data-next=URL>
  document.addEventListener("submit", function (e) {
    var form = e.target.closest("form[data-passkey]");
    if (!form) { return; }
    e.preventDefault();
    if (!window.PublicKeyCredential) {
      show(form, "This browser does not support passkeys. Ask an admin for a sign-in link.", false);
      return;
    }
    var fields = {};
    new FormData(form).forEach(function (v, k) { fields[k] = v; });
    var kind = form.dataset.passkey;
    var button = form.querySelector("button");
    if (button) { button.disabled = true; }
    show(form, "Waiting for your passkey…", true);
    post(form.dataset.begin, fields).then(function (challenge) {
      var ask = kind === "register"
        ? navigator.credentials.create(creationOptions(challenge.options)).then(registration)
        : navigator.credentials.get(requestOptions(challenge.options)).then(assertion);
      return ask.then(function (credential) {
        fields.ceremony = challenge.ceremony;
        fields.credential = credential;
        return post(form.dataset.finish, fields);
      });
    }).then(function (done) {
      show(form, "Done.", true);
      window.location.assign(done.next || form.dataset.next || "/ui");
    }).catch(function (err) {
      show(form, err.message || String(err), false);
      if (button) { button.disabled = false; }
    });
  });
})();
